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
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii

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
        self.cut = False  # the last line was cut short (a disk that filled up mid-line)

    def write(self, event: str | dict) -> str | None:
        """Append the event (a line made below, or a dict), if there is a file; the error, if it could not be
        written whole."""
        if not self.path:
            return None
        line = event if isinstance(event, str) else ENCODER.encode(event)
        # A line cut short is ended first: it is one bad line for the reader, and this one stays whole.
        data = ("\n" if self.cut else "").encode() + (line + "\n").encode()
        written = 0
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            while written < len(data):  # a short write: the rest, or the error that cut it
                written += os.write(self.fd, data[written:])
        except OSError as error:
            self.cut = self.cut or written > 0
            return f"could not write to the events file {self.path!r}: {error.strerror}"
        self.cut = False
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


# Times are Unix seconds: a time outside these bounds (a clock gone wrong, a sender's 1e308) is not an event's.
EARLIEST, LATEST = 0.0, 1e11
# A task's seconds of work, at most (the task format's bound).
MOST_SECONDS = 3600.0
# Per kind of event: the fields it must have that hold a time, and that hold a duration. Every event also needs
# its other REQUIRED fields.
TIMES = {kind: tuple(sorted(fields & NUMBERS - {"seconds"})) for kind, fields in REQUIRED.items()}
DURATIONS = {kind: ("seconds",) if "seconds" in fields else () for kind, fields in REQUIRED.items()}
OTHERS = {kind: tuple(sorted(fields - NUMBERS)) for kind, fields in REQUIRED.items()}


def not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a number")


# json.loads, but NaN and Infinity are refused: no event's number is either.
DECODE = json.JSONDecoder(parse_constant=not_a_number).decode


def read(path: str) -> Iterator[dict | None]:
    """Each line of the file as an event, in the order written; None for a line that is not a whole event."""
    with open(path, errors="replace") as lines:
        for line in lines:
            if line.strip():
                yield checked(line)


def checked(line: str) -> dict | None:
    """The event a line holds, if it is a whole one: JSON, an object, a known kind ("done" if it says none),
    every field its kind needs, its times finite and within EARLIEST-LATEST, its seconds from 0 to MOST_SECONDS,
    and nothing finished before it started. Else None."""
    try:
        event = DECODE(line)
    except (ValueError, RecursionError):
        return None  # a line cut short, not JSON at all, or NaN / Infinity for a number
    if type(event) is not dict:
        return None
    kind = event.setdefault("event", "done")
    times = TIMES.get(kind)
    if times is None:
        return None
    for field in times:
        value = event.get(field)
        if type(value) not in (int, float) or not EARLIEST <= value <= LATEST:
            return None
    for field in DURATIONS[kind]:
        value = event.get(field)
        if type(value) not in (int, float) or not 0 <= value <= MOST_SECONDS:
            return None
    for field in OTHERS[kind]:
        if field not in event:
            return None
    # Nothing ends before it began: an attempt, a worker killed, the broker down.
    for began, ended in (("started", "finished"), ("started", "at"), ("down", "up")):
        if ended in event and began in event and event[ended] < event[began]:
            return None
    return event


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
