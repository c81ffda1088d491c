"""The --events file: one JSON line per event, written by the publisher and the workers, read by report.py.

Writer and reader side by side, so that they cannot drift apart:
- "published": the broker confirmed a task (publisher.py).
- "started": a worker began an attempt at a task.
- "done": a worker finished a task; `acked` false if the ack could not be sent (it will be done again).
- "failed": a worker's attempt at a task raised; `outcome` says what became of it.
- "parked": a worker moved a message to <queue>.dead, with the `reason`: it will not be run (again).
- "killed", "broker_down": what the demo did on purpose, to show that nothing is lost.
Times are Unix seconds; `started` and `finished` bound the work itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

# Fields a line must have to be used, by kind of event.
REQUIRED = {
    "published": {"task_id", "seconds"},
    "started": {"worker", "started"},
    "done": {"worker", "started", "finished"},
    "failed": {"worker", "started", "finished"},
    "parked": {"worker", "at", "reason"},
    "killed": {"worker", "started", "at"},
    "broker_down": {"down", "up"},
}
# Of those, the ones that hold a number.
NUMBERS = {"seconds", "started", "finished", "at", "down", "up"}
# For the events that are not written per task (the demo's): flat dicts, so no circular check.
ENCODER = json.JSONEncoder(check_circular=False)


class Writer:
    """Appends events to a file, kept open: one write per event, whole lines however many processes share it
    (O_APPEND). A file that cannot be written (a full disk) costs an error message, never the run."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd: int | None = None

    def write(self, event: str | dict) -> str | None:
        """Append the event (a line made below, or a dict), if there is a file; the error, if it could not be
        written."""
        if not self.path:
            return None
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            line = event if isinstance(event, str) else ENCODER.encode(event)
            os.write(self.fd, (line + "\n").encode())
        except OSError as error:
            return f"could not write to the events file {self.path!r}: {error.strerror}"
        return None


# The per-task events below are JSON lines formatted by hand: a worker writes two per task, one of them
# between the delivery and the work, where json.dumps would cost a tenth of a zero-second task's round trip.
# Numbers are finite (the task format checks seconds; times come from the clock); text goes through
# json's own string escaping. tests/test_settings_and_format.py checks each line against json.dumps.


def text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def task_number(task_id: int | None) -> str:
    return "null" if task_id is None else str(task_id)


def published(task_id: int, seconds: float, message_id: str) -> str:
    return (f'{{"event": "published", "task_id": {task_id}, "seconds": {seconds!r}, "message_id": {text(message_id)}, '
            f'"published": {time.time()!r}}}')


def attempt(kind: str, worker: str, task_id: int | None, seconds: float, started: float, finished: float,
            acked: bool, attempt_number: int, message_id: str | None, label: str, **more: str) -> str:
    """A worker's "done" or "failed" event; a failed one has the `error` and its `outcome` in `more`."""
    extra = "".join(f", {text(name)}: {text(value)}" for name, value in more.items()) if more else ""
    return (f'{{"event": {text(kind)}, "worker": {text(worker)}, "task_id": {task_number(task_id)}, '
            f'"seconds": {seconds!r}, "started": {started!r}, "finished": {finished!r}, '
            f'"acked": {"true" if acked else "false"}, "attempt": {attempt_number}, "message_id": {text(message_id)}, '
            f'"label": {text(label)}{extra}}}')


def parked(worker: str, task_id: int | None, message_id: str | None, label: str | None, reason: str) -> str:
    """A message a worker parked in <queue>.dead; task_id and label are None for one that is no task."""
    return ENCODER.encode({"event": "parked", "worker": worker, "task_id": task_id, "message_id": message_id,
                           "label": label, "reason": reason, "at": time.time()})


def started(worker: str, task_id: int | None, seconds: float, attempt_number: int, message_id: str | None,
            label: str) -> str:
    return (f'{{"event": "started", "worker": {text(worker)}, "task_id": {task_number(task_id)}, '
            f'"seconds": {seconds!r}, "started": {time.time()!r}, "attempt": {attempt_number}, '
            f'"message_id": {text(message_id)}, "label": {text(label)}}}')


class Events(NamedTuple):
    published: list[dict]  # tasks the publisher got confirmed
    done: list[dict]  # tasks workers finished (acked, or done but not acked)
    failed: list[dict]  # attempts whose work raised
    skipped: int  # lines that are not events: truncated, not JSON, or missing a field
    started: Sequence[dict] = ()  # attempts begun
    incidents: Sequence[dict] = ()  # workers killed and broker restarts, by the demo
    parked: Sequence[dict] = ()  # messages moved to <queue>.dead


def read(path: str) -> Iterator[dict | None]:
    """Each line of the file as an event, in the order written; None for a line that is not a whole event."""
    with open(path, errors="replace") as lines:
        for line in lines:
            if line.strip():
                yield checked(line)


def checked(line: str) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a line cut short, or not JSON at all
    if not isinstance(event, dict):
        return None
    required = REQUIRED.get(event.setdefault("event", "done"))
    if required is None or not event.keys() >= required:
        return None
    return event if all(is_number(event[field]) for field in required & NUMBERS) else None


def load(path: str) -> Events:
    """The events of one run's file, by kind; lines that are not whole events are counted and skipped."""
    loaded = Events([], [], [], 0, [], [], [])
    by_kind = {"published": loaded.published, "done": loaded.done, "failed": loaded.failed,
               "started": loaded.started, "killed": loaded.incidents, "broker_down": loaded.incidents,
               "parked": loaded.parked}
    skipped = 0
    for event in read(path):
        if event is None:
            skipped += 1
        else:
            by_kind[event["event"]].append(event)
    return loaded._replace(skipped=skipped)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
