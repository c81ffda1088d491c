"""The task format: what publisher.py sends and consumer.py reads, and the checks on what a sender may send.

A task is a persistent JSON message, {"task_id": 3, "seconds": 2.41}, with a message_id of its own; any other
field is the task's data, for a job of your own. A worker also runs the official tutorial's text tasks
("Hello..." is three seconds of work), and refuses, with a reason, anything else: the reason goes with the
message to <queue>.dead.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import NamedTuple

import pika

# A task asking for more seconds of work than this is refused as absurd, not run.
MAX_TASK_SECONDS = 3600.0
# Task ids are whole numbers within this bound (a signed 64-bit integer in other languages).
MAX_TASK_ID = 2**63 - 1
# The content type of our tasks; a message without it may be the tutorial's text.
JSON_CONTENT_TYPE = "application/json"
# Characters of a text task's body, or of a bad value, shown in log lines and reasons.
LABEL_LENGTH = 40
# The most first attempts a task may ask to fail on purpose (the demo's --flaky).
MAX_FAIL_ATTEMPTS = 1000
# The fields of the task format itself; any other field of a JSON task is its data (Task.data).
TASK_FIELDS = ("task_id", "seconds", "fail_attempts")


class BadTask(ValueError):
    """A message that is not a task we can run; its text is the reason given in the dead-letter queue."""


class Task(NamedTuple):
    """One unit of work, as do_work(task) gets it."""

    task_id: int | None  # None for a tutorial text task, which carries no id
    seconds: float  # how long the demo's work sleeps
    label: str  # how log lines name the task: "task 3", or the text's start
    fail_attempts: int = 0  # the demo's --flaky: the first this many attempts fail on purpose
    attempt: int = 1  # which attempt this is: 2 is the first retry after a failure
    message_id: str | None = None  # the same for every copy of a task: tells a repeat from a new task
    data: dict | None = None  # the task's other JSON fields, as sent: the data of a job of your own


def new_task(task_id: int, seconds: float, fail_attempts: int = 0, **data: object) -> Task:
    """A task to publish: its id, its seconds of work, how many first attempts fail on purpose, and any other
    fields of your own (JSON values: new_task(7, 0, image="a.png") reaches do_work as task.data["image"])."""
    return Task(task_id, seconds, f"task {task_id}", fail_attempts, data=data or None)


def run_prefix() -> str:
    """The start of one run's message ids: with the task id after it, unique across runs, kept by resends."""
    return uuid.uuid4().hex[:16]


def encode(task: Task, message_id: str) -> tuple[bytes, pika.BasicProperties]:
    """A task as published: (body, properties) of a persistent JSON message with an id and a timestamp.

    The message_id stays the same when a task is sent again, so a worker can tell a copy from a new task.
    """
    # The text json.dumps would give, formatted directly: the publisher makes one per task, and json.dumps
    # costs as much as the rest of the message. seconds is a finite float (settings check it).
    more = f', "fail_attempts": {task.fail_attempts}' if task.fail_attempts else ""
    if task.data:
        more += "".join(f", {json.dumps(name)}: {json.dumps(value)}" for name, value in task.data.items())
    body = f'{{"task_id": {task.task_id}, "seconds": {float(task.seconds)!r}{more}}}'
    properties = pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,  # written to disk: survives a broker restart
        content_type=JSON_CONTENT_TYPE,
        message_id=message_id,
        timestamp=int(time.time()),
    )
    return body.encode(), properties


def decode(body: bytes, content_type: str | None) -> Task:
    """Read a delivered message as a Task; raise BadTask saying why it cannot run.

    With the JSON content type the body must be a JSON task. Without it, a body that is a JSON object or
    array is read as one too, and anything else as the tutorial's text ("[urgent] Hello." is text).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTask("body is not UTF-8 text") from None
    if content_type == JSON_CONTENT_TYPE:
        return json_task(load_json(text))
    if text.lstrip().startswith(("{", "[")):
        try:
            return json_task(load_json(text))
        except BadTask as error:
            if not str(error).startswith("malformed JSON"):
                raise
    return text_task(text)


def load_json(text: str) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise BadTask("malformed JSON: nested too deeply") from None
    except ValueError as error:  # also a number of more than 4,300 digits
        raise BadTask(f"malformed JSON: {error}") from None


def json_task(fields: object) -> Task:
    # Checked with `type(...) is`: json.loads makes exact ints, floats and bools, and a bool is not a number here.
    if type(fields) is not dict:
        raise BadTask("JSON body is not an object with task_id and seconds")
    if "task_id" not in fields or "seconds" not in fields:
        missing = [name for name in ("task_id", "seconds") if name not in fields]
        raise BadTask(f"missing field(s): {', '.join(missing)}")
    task_id = fields["task_id"]
    if type(task_id) is not int:
        raise BadTask(f"task_id is not a whole number: {short(task_id)}")
    if not -MAX_TASK_ID <= task_id <= MAX_TASK_ID:
        raise BadTask(f"task_id is out of range: {short(task_id)}")
    fail_attempts = fields.get("fail_attempts", 0)
    if type(fail_attempts) is not int or not 0 <= fail_attempts <= MAX_FAIL_ATTEMPTS:
        raise BadTask(f"fail_attempts is not a whole number from 0 to {MAX_FAIL_ATTEMPTS}: {short(fail_attempts)}")
    data = {name: value for name, value in fields.items() if name not in TASK_FIELDS} if len(fields) > 2 else None
    return Task(task_id, checked_seconds(fields["seconds"]), f"task {task_id}", fail_attempts, data=data or None)


def text_task(text: str) -> Task:
    """The tutorial's convention: the body is any text and each '.' in it is one second of work."""
    if any(not char.isprintable() and char not in "\t\n\r" for char in text):
        raise BadTask("body is neither a JSON task nor printable text")
    label = text if len(text) <= LABEL_LENGTH else text[:LABEL_LENGTH - 3] + "..."
    return Task(None, checked_seconds(float(text.count("."))), repr(label))


def checked_seconds(seconds: object) -> float:
    if type(seconds) is float and 0 <= seconds <= MAX_TASK_SECONDS:  # the usual case; NaN fails the comparison
        return seconds
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise BadTask(f"seconds is not a number: {short(seconds)}")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise BadTask(f"seconds is not finite: {seconds!r}")
    if seconds < 0:
        raise BadTask(f"seconds is negative: {short(seconds)}")
    if seconds > MAX_TASK_SECONDS:  # compared as given: a 400-digit int does not fit a float
        raise BadTask(f"seconds is absurd: {short(seconds)} (more than {MAX_TASK_SECONDS:g})")
    return float(seconds)


def short(value: object) -> str:
    """A value as a reason shows it: whole if short, cut if a sender made it huge."""
    huge = isinstance(value, int) and value.bit_length() > 200
    text = f"a {value.bit_length()}-bit number" if huge else repr(value)
    return text if len(text) <= LABEL_LENGTH else text[:LABEL_LENGTH - 3] + "..."
