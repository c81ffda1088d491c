"""The --events file: one JSON line per event, written by the publisher and the workers, read by report.py.

Writer and reader side by side, so that they cannot drift apart:
- "published": the broker confirmed a task (publisher.py).
- "done": a worker finished a task; `acked` false if the ack could not be sent (it will be done again).
- "failed": a worker's attempt at a task raised; `outcome` says what became of it.
Times are Unix seconds; `started` and `finished` bound the work itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

# Fields a line must have to be used: what the publisher writes, and what a worker writes.
PUBLISHED_FIELDS = {"task_id", "seconds"}
WORKER_FIELDS = {"worker", "started", "finished"}


def append_line(path: str, line: str) -> None:
    """Append one whole line; O_APPEND keeps lines from several processes sharing a file intact."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def write(path: str | None, event: dict) -> str | None:
    """Append an event, if there is a file; the error, if it could not be written (a full disk)."""
    if path:
        try:
            append_line(path, json.dumps(event))
        except OSError as error:
            return f"could not write to the events file {path!r}: {error.strerror}"
    return None


def published(task_id: int, seconds: float, message_id: str) -> dict:
    return {"event": "published", "task_id": task_id, "seconds": seconds, "message_id": message_id,
            "published": time.time()}


def attempt(kind: str, worker: str, task_id: int | None, seconds: float, started: float, finished: float,
            acked: bool, attempt_number: int, message_id: str | None, label: str, **more) -> dict:
    """A worker's "done" or "failed" event; a failed one has the `error` and its `outcome` in `more`."""
    return {"event": kind, "worker": worker, "task_id": task_id, "seconds": seconds, "started": started,
            "finished": finished, "acked": acked, "attempt": attempt_number, "message_id": message_id,
            "label": label, **more}


class Events(NamedTuple):
    published: list[dict]  # tasks the publisher got confirmed
    done: list[dict]  # tasks workers finished (acked, or done but not acked)
    failed: list[dict]  # attempts whose work raised
    skipped: int  # lines that are not events: truncated, not JSON, or missing a field


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
    kind = event.setdefault("event", "done")
    if kind == "published":
        return event if event.keys() >= PUBLISHED_FIELDS and is_number(event["seconds"]) else None
    if kind in ("done", "failed") and event.keys() >= WORKER_FIELDS:
        return event if is_number(event["started"]) and is_number(event["finished"]) else None
    return None


def load(path: str) -> Events:
    """The events of one run's file, by kind; lines that are not whole events are counted and skipped."""
    loaded = Events([], [], [], 0)
    skipped = 0
    for event in read(path):
        if event is None:
            skipped += 1
        else:
            {"published": loaded.published, "done": loaded.done, "failed": loaded.failed}[event["event"]].append(event)
    return loaded._replace(skipped=skipped)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
