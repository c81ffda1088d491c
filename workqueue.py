"""Plumbing shared by publisher.py and consumer.py: settings, connecting, queues, the task format.

Read publisher.py and consumer.py first; this module holds what both of them need, once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

# The broker the official tutorials use; several URLs, comma-separated, are tried in turn (a cluster).
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
# The official tutorial two's queue name, so its scripts and ours can feed each other.
DEFAULT_QUEUE = "task_queue"
# Quorum is what tutorial two declares today; classic is the older tutorial's plain durable queue.
QUEUE_TYPES = ("quorum", "classic")
# Seconds to keep retrying an unreachable broker before giving up with one line.
DEFAULT_CONNECT_TIMEOUT = 15.0
# The least time, in seconds, that setting up (declaring queues, subscribing, confirms) may take.
MIN_SETUP_SECONDS = 5.0
# The likely cause, when a broker leaves a request unanswered for ever; every such error names it.
UNANSWERED_HINT = "(a quorum queue left without a leader by a crash?); giving up"
# First and longest pause between connection attempts, in seconds.
RETRY_DELAY_FIRST, RETRY_DELAY_MAX = 0.5, 5.0
# A task asking for more seconds of work than this is rejected as absurd, not run.
MAX_TASK_SECONDS = 3600.0
# Task ids are whole numbers within this bound (a signed 64-bit integer in other languages).
MAX_TASK_ID = 2**63 - 1
# Tasks that cannot or must not run are moved to this queue, with the reason, instead of being dropped.
DEAD_LETTER_SUFFIX = ".dead"
# Header that carries the reason a message was dead-lettered.
DEAD_REASON_HEADER = "x-dead-reason"
# Our tasks are JSON; anything else is read as the tutorial's text, where each "." is one second.
JSON_CONTENT_TYPE = "application/json"
# Characters of a text task's body shown in log lines.
LABEL_LENGTH = 40

# While a task runs, how often (seconds) a helper thread serves the worker's connection: heartbeats.
KEEPALIVE_INTERVAL = 0.25

# Every way an open connection or channel can go away under us; the worker reconnects on these.
CONNECTION_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)
# Every way an attempt to connect can fail that another attempt may cure: refused, reset, a name that
# does not resolve (yet: a restarting container), a TLS handshake with a plain port. pika's asynchronous
# adapter wraps these in its connector errors, its blocking adapter lets some of them through as OSError.
CONNECT_ERRORS = (pika.exceptions.AMQPConnectionError, AMQPConnectorException, OSError)
# A channel closed with one of these reply codes is a refusal that no reconnect can fix.
REFUSALS = {
    403: "check the user's permissions (rabbitmqctl set_permissions)",
    405: "another connection holds the queue exclusively",
    406: "the queue exists with other settings",
}

# Either kind of pika connection: blocking (the worker) or asynchronous (the publisher).
Connection = TypeVar("Connection")

# pika logs its own view of every dropped connection; our scripts say it once, in their own words.
logging.getLogger("pika").setLevel(logging.CRITICAL)


class Fatal(Exception):
    """An error the user must fix; the script prints it as one line and exits 1."""


class BadTask(ValueError):
    """A message that is not a task we can run; its text is the reason given in the dead-letter queue."""


class Task(NamedTuple):
    task_id: int | None  # None for a tutorial text task, which carries no id
    seconds: float
    label: str  # how log lines name the task
    fail_attempts: int = 0  # the demo's --flaky: the first this many attempts fail on purpose
    attempt: int = 1  # which attempt this is: 2 is the first retry after a failure


# ---------------------------------------------------------------- settings


def env(name: str, default: str) -> str:
    """A flag's default from the environment; argparse converts and checks it like a typed flag."""
    return os.environ.get(name, default)


def url_list(text: str) -> list[str]:
    """argparse type for --url: one or more comma-separated amqp:// or amqps:// URLs."""
    urls = [part.strip() for part in text.split(",") if part.strip()]
    if not urls:
        raise argparse.ArgumentTypeError("no URL given")
    for url in urls:
        if "@" in url.partition("://")[2] and "@" not in urlsplit(url).netloc:
            # urlsplit ends the host part at the first / # or ?, so such a character in a password
            # would leave part of the password in the host, the path or the fragment.
            raise argparse.ArgumentTypeError(
                f"the user name or password in {mask_url(url)!r} has a character that must be percent-encoded "
                "(/ # ? @ : as %2F %23 %3F %40 %3A)")
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise argparse.ArgumentTypeError(f"not an amqp:// or amqps:// URL with a host: {mask_url(url)!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
            pika.URLParameters(url)
        except Exception as error:  # pika raises ValueError, TypeError or KeyError on bad query options
            raise argparse.ArgumentTypeError(f"bad URL {mask_url(url)!r}: {type(error).__name__}: "
                                             f"{mask_text(str(error), url)}") from None
    return urls


def number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def seconds_value(text: str) -> float:
    """argparse type for a task duration: a finite number of seconds from 0 to MAX_TASK_SECONDS."""
    value = number(text, "a number of seconds")
    if not math.isfinite(value) or not 0 <= value <= MAX_TASK_SECONDS:
        raise argparse.ArgumentTypeError(f"seconds must be from 0 to {MAX_TASK_SECONDS:g}: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text, "a number")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text!r}")
    return value


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}: {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}: {text!r}")
        return value
    return convert


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both scripts share: where the broker is and which queue to use."""
    parser.add_argument("--url", type=url_list, default=env("AMQP_URL", DEFAULT_URL),
                        help="broker URL(s), comma-separated for a cluster; passwords are never printed "
                             f"(env AMQP_URL, default {mask_url(DEFAULT_URL)})".replace("%", "%%"))
    parser.add_argument("--queue", default=env("TASK_QUEUE", DEFAULT_QUEUE),
                        help="queue name (env TASK_QUEUE, default %(default)s)")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default=env("TASK_QUEUE_TYPE", "quorum"),
                        help="quorum as in the current tutorial, or classic (env TASK_QUEUE_TYPE, "
                             "default %(default)s)")
    parser.add_argument("--connect-timeout", type=non_negative_float,
                        default=env("CONNECT_TIMEOUT", str(DEFAULT_CONNECT_TIMEOUT)),
                        help="seconds to keep retrying an unreachable broker, and to wait for it to answer "
                             f"while setting up (at least {MIN_SETUP_SECONDS:g}) (env CONNECT_TIMEOUT, "
                             "default %(default)s)")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, fit for logs and errors, however badly it is written."""
    scheme, separator, rest = url.partition("://")
    user_info, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in user_info:
        return url
    return f"{scheme}://{user_info.partition(':')[0]}:***@{host}"


def mask_text(text: str, url: str) -> str:
    """Text (an error from a library) with the URL's password, or any part of it, taken out."""
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    for part in {password, *password.replace("#", "/").replace("?", "/").split("/")}:
        if len(part) >= 3:  # shorter pieces are no secret, and would be found in any word
            text = text.replace(part, "***")
    return text


def events_file(path: str) -> str:
    """argparse type for --events: a file we can append to, checked before anything is sent or taken."""
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is a folder, not a file")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write to {path!r}: {error.strerror}") from None
    return path


def show_any_text() -> None:
    """Have stdout escape what its encoding cannot show, instead of raising.

    Log lines carry a sender's text (a task's label, a bad value, a queue or worker name): on an ascii or
    latin-1 terminal, one character outside it would raise UnicodeEncodeError and end the program.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def log(who: str, text: str) -> None:
    # One write per line, also under PYTHONUNBUFFERED (where print writes the text and its newline apart):
    # a worker's lines are on its critical path, between a task's delivery and its ack.
    sys.stdout.write(f"[{who}] {text}\n")
    sys.stdout.flush()


def fail(program: str, error: Exception) -> int:
    print(f"{program}: error: {error}", file=sys.stderr, flush=True)
    return 1


# ---------------------------------------------------------------- connecting


def connect(urls: list[str], timeout: float, who: str, stop_requested: Callable[[], bool] = lambda: False,
            opener: Callable[[pika.ConnectionParameters], Connection] = pika.BlockingConnection) -> Connection | None:
    """Connect to the first broker that answers, retrying for up to `timeout` seconds.

    Refused credentials or vhost access are not retried: no number of attempts will fix them.
    Returns None only if stop_requested() turns true while retrying. `opener` makes the connection:
    pika.BlockingConnection, or open_async for pika's asynchronous adapter.
    """
    deadline = time.monotonic() + timeout
    delay = RETRY_DELAY_FIRST
    for attempt in range(1, 1_000_000):
        for url in urls:
            parameters = pika.URLParameters(url)
            parameters.client_properties = {"connection_name": who}
            try:
                return opener(parameters)
            except pika.exceptions.ProbableAuthenticationError:
                raise Fatal(f"the broker at {mask_url(url)} refused the user name or password "
                            "(check --url / AMQP_URL)") from None
            except pika.exceptions.ProbableAccessDeniedError:
                raise Fatal(f"the broker at {mask_url(url)} denied access to the virtual host "
                            "(check the vhost in --url / AMQP_URL and the user's permissions)") from None
            except CONNECT_ERRORS as error:
                reason = describe(error)
        where = ", ".join(mask_url(url) for url in urls)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Fatal(f"cannot reach RabbitMQ at {where} after {timeout:g} s ({reason}); "
                        "start a broker (./run_demo.sh starts one) or fix --url / AMQP_URL")
        if stop_requested():
            return None
        pause = min(delay, remaining)
        log(who, f"broker unreachable at {where} ({reason}); attempt {attempt}, retrying in {pause:.1f} s")
        time.sleep(pause)
        delay = min(delay * 2, RETRY_DELAY_MAX)
    raise AssertionError("unreachable")


def setup_seconds(connect_timeout: float) -> float:
    return max(connect_timeout, MIN_SETUP_SECONDS)


@contextlib.contextmanager
def deadline(seconds: float, what: str, program: str, last_words: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Run the block; past `seconds`, say what the broker did not answer, and exit 1.

    pika's BlockingConnection waits for each reply without limit, and a broker can leave a request
    unanswered for ever (a quorum queue left without a leader by a crash). Only for steps where nothing
    is held: exiting from the watchdog's thread loses nothing.
    """
    def expire() -> None:
        last_words()
        print(f"{program}: error: the broker did not answer within {seconds:g} s while {what} {UNANSWERED_HINT}",
              file=sys.stderr, flush=True)
        os._exit(1)
    watchdog = threading.Timer(seconds, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def open_async(parameters: pika.ConnectionParameters, blocked_timeout: float | None = None) -> pika.SelectConnection:
    """Open a connection on pika's asynchronous adapter, waiting until it is open; raise if it fails.

    With blocked_timeout, pika closes the connection (ConnectionBlockedTimeout) once the broker has
    blocked it that long.
    """
    if blocked_timeout:
        parameters.blocked_connection_timeout = blocked_timeout
    failure: list[BaseException] = []
    connection = pika.SelectConnection(
        parameters,
        on_open_callback=lambda opened: opened.ioloop.stop(),
        on_open_error_callback=lambda failed, error: (failure.append(error), failed.ioloop.stop()))
    connection.ioloop.start()
    if failure:
        raise failure[0]
    return connection


def describe(error: BaseException) -> str:
    """A short, password-free description of a pika error, naming its root cause."""
    # pika wraps the socket's error in connector and workflow errors.
    while True:
        inner = (getattr(error, "exception", None) or (getattr(error, "exceptions", None) or [None])[-1]
                 or (error.args[0] if error.args else None))
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ConnectionKeeper:
    """Keeps a worker's connection alive (heartbeats) while its thread is busy with a task.

    Work done on the thread that uses a BlockingConnection blocks pika's I/O: heartbeats stop and the
    broker drops the connection in the middle of a long task. So while a task runs, a helper thread
    serves the connection every KEEPALIVE_INTERVAL seconds. BlockingConnection is not thread-safe, so
    the two threads take turns: the worker's thread gives up its turn only for the work itself.
    A task shorter than the interval costs no thread switch at all.
    """

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.turn = threading.Lock()
        self.turn.acquire()  # the worker's turn, except while a task runs
        self.busy_since: float | None = None
        self.error: pika.exceptions.AMQPError | None = None
        self.closed = False
        threading.Thread(target=self._serve, name="connection-keeper", daemon=True).start()

    def working(self) -> ConnectionKeeper:
        """`with keeper.working(): task()` serves the connection from the helper while the task runs,
        and raises on the worker's thread if the connection was lost meanwhile."""
        return self

    def __enter__(self) -> None:
        self.busy_since = time.monotonic()
        self.turn.release()

    def __exit__(self, *exc_info) -> None:
        self.turn.acquire()
        self.busy_since = None
        if self.error and exc_info[0] is None:
            raise self.error

    def close(self) -> None:
        self.closed = True

    def _serve(self) -> None:
        while not self.closed:
            time.sleep(KEEPALIVE_INTERVAL)
            busy_since = self.busy_since
            if busy_since is None or self.error or time.monotonic() - busy_since < KEEPALIVE_INTERVAL:
                continue
            if not self.turn.acquire(blocking=False):
                continue  # the task has just finished and its thread has the connection back
            try:
                if self.connection.is_open:
                    self.connection.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError as error:
                self.error = error  # the worker's thread raises it once the task is done
            finally:
                self.turn.release()


# ---------------------------------------------------------------- queues


def refusal(error: BaseException, what: str) -> Fatal | None:
    """The error to exit with if the broker refused `what` for good (permissions, a locked queue)."""
    if isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code in REFUSALS:
        return Fatal(f"the broker refused to {what}: {error.reply_code} {error.reply_text} "
                     f"({REFUSALS[error.reply_code]})")
    return None


def queue_arguments(queue_type: str) -> dict | None:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def declare_queue(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, queue_type: str) -> None:
    """Declare a durable queue exactly as tutorial two does; explain the fix if it exists otherwise."""
    try:
        channel.queue_declare(queue=queue, durable=True, arguments=queue_arguments(queue_type))
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 406:
            raise queue_mismatch(queue, queue_type, error.reply_text) from None
        raise refusal(error, f"declare queue {queue!r}") or error from None


def queue_mismatch(queue: str, queue_type: str, broker_says: str) -> Fatal:
    """The error for a queue that exists with other arguments (406 PRECONDITION_FAILED)."""
    other = "classic" if queue_type == "quorum" else "quorum"
    return Fatal(f"queue {queue!r} already exists with other settings ({broker_says}); "
                 f"delete it (rabbitmqctl delete_queue {queue}) or pass --queue-type {other}")


def dead_letter_queue(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX


# ---------------------------------------------------------------- the task format


def task_message(task_id: int, seconds: float, message_id: str,
                 fail_attempts: int = 0) -> tuple[bytes, pika.BasicProperties]:
    """A task as published: a persistent JSON message with an id of its own and a timestamp.

    The message_id stays the same when a task is sent again, so a worker can tell a copy from a new task.
    """
    # The text json.dumps would give, formatted directly: the publisher makes one per task, and json.dumps
    # costs as much as the rest of the message. seconds is a finite float (seconds_value, the task format).
    more = f', "fail_attempts": {fail_attempts}' if fail_attempts else ""
    body = f'{{"task_id": {task_id}, "seconds": {float(seconds)!r}{more}}}'
    properties = pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,  # written to disk: survives a broker restart
        content_type=JSON_CONTENT_TYPE,
        message_id=message_id,
        timestamp=int(time.time()),
    )
    return body.encode(), properties


def run_prefix() -> str:
    """The start of this run's message ids: with the task id after it, unique across runs and resends."""
    return uuid.uuid4().hex[:16]


def parse_task(body: bytes, content_type: str | None) -> Task:
    """Read a delivered message as a Task, or raise BadTask saying why it cannot run.

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
    return parse_text_task(text)


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
    if type(fail_attempts) is not int or not 0 <= fail_attempts <= 1000:
        raise BadTask(f"fail_attempts is not a whole number from 0 to 1000: {short(fail_attempts)}")
    return Task(task_id, checked_seconds(fields["seconds"]), f"task {task_id}", fail_attempts)


def parse_text_task(text: str) -> Task:
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
