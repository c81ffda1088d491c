"""The command line of publisher.py and consumer.py: flags and environment -> settings, errors -> an exit code.

Every flag has an environment variable; the flag wins. A bad value is argparse's usage error: one line,
exit 2. An error the engines raise (errors.py) is one line on stderr and its exit code. Only this module
prints errors or exits the process.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys

from workqueue import _pika
from workqueue.connection import MIN_SETUP_SECONDS, check_urls, mask_url
from workqueue.errors import UsageError, WorkQueueError
from workqueue.flags import bounded_int
from workqueue.output import show_any_text, write_now
from workqueue.settings import (
    BROKER_DELIVERY_LIMIT,
    DEFAULT_QUEUE,
    DEFAULT_URL,
    QUEUE_TYPES,
    Broker,
    PublisherSettings,
    Queue,
    RetryPolicy,
    SettingError,
    TaskPlan,
    WorkerSettings,
    check_publisher,
    check_worker,
)
from workqueue.task import MAX_TASK_SECONDS

# ---------------------------------------------------------------- value types, checked like flags


def env(name: str, default: str) -> str:
    """A flag's default from the environment; argparse converts and checks it like a typed flag."""
    return os.environ.get(name, default)


def url_list(text: str) -> tuple[str, ...]:
    """argparse type for --url: one or more comma-separated amqp:// or amqps:// URLs."""
    try:
        return check_urls(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def duration_list(text: str) -> tuple[float, ...]:
    parts = text.split(",")
    if not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text!r}")
    return tuple(seconds_value(part.strip()) for part in parts)


def events_file(path: str) -> str:
    """argparse type for --events: a file we can append to, checked before anything is sent or taken."""
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is a folder, not a file")
    try:
        # O_NONBLOCK: a FIFO that no process reads would block the open for ever; this way it says so (ENXIO).
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644))
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise argparse.ArgumentTypeError(f"{path!r} is a FIFO that no process reads") from None
        raise argparse.ArgumentTypeError(f"cannot write to {path!r}: {error.strerror}") from None
    return path


# ---------------------------------------------------------------- the flags


def add_broker_flags(parser: argparse.ArgumentParser, blocked_help: str) -> None:
    """The flags both scripts share: where the broker is, which queue, and how long to wait."""
    parser.add_argument("--url", type=url_list, default=env("AMQP_URL", DEFAULT_URL),
                        help="broker URL(s), comma-separated for a cluster; passwords are never printed "
                             f"(env AMQP_URL, default {mask_url(DEFAULT_URL)})".replace("%", "%%"))
    parser.add_argument("--queue", default=env("TASK_QUEUE", DEFAULT_QUEUE),
                        help="queue name (env TASK_QUEUE, default %(default)s)")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default=env("TASK_QUEUE_TYPE", "quorum"),
                        help="quorum as in the current tutorial, or classic (env TASK_QUEUE_TYPE, "
                             "default %(default)s)")
    parser.add_argument("--connect-timeout", type=non_negative_float, default=env("CONNECT_TIMEOUT", "15"),
                        help="seconds to keep retrying an unreachable broker, and to wait for it to answer "
                             f"while setting up (at least {MIN_SETUP_SECONDS:g}) (env CONNECT_TIMEOUT, "
                             "default %(default)s)")
    parser.add_argument("--blocked-timeout", type=non_negative_float, default=env("BLOCKED_TIMEOUT", "60"),
                        help=f"{blocked_help} (env BLOCKED_TIMEOUT, default %(default)s)")


def broker_and_queue(args: argparse.Namespace) -> tuple[Broker, Queue]:
    return Broker(args.url, args.connect_timeout, args.blocked_timeout), Queue(args.queue, args.queue_type)


def worker_parser(prog: str = "consumer.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="A worker: takes one task at a time from the work queue, does it, "
                                        "and acks it only when it is done.")
    parser.add_argument("--name", default=env("WORKER_NAME", ""),
                        help="shown on every log line (env WORKER_NAME, default a short unique name)")
    parser.add_argument("--prefetch", type=bounded_int(1), default=env("WORKER_PREFETCH", "1"),
                        help="unacked tasks the broker may hand this worker at once; 1 is fair dispatch. Above 1, "
                             "a worker crash counts as a delivery of every task it held, run or not "
                             "(env WORKER_PREFETCH, default %(default)s)")
    parser.add_argument("--idle-timeout", type=non_negative_float, default=env("WORKER_IDLE_TIMEOUT", "6"),
                        help="exit after this many seconds with no task, counted from the end of the last one: "
                             "the queue has run dry (a worker waits for its first task however long it takes); "
                             "0 = never (env WORKER_IDLE_TIMEOUT, default %(default)s)")
    parser.add_argument("--max-deliveries", type=bounded_int(1, BROKER_DELIVERY_LIMIT),
                        default=env("WORKER_MAX_DELIVERIES", "5"),
                        help="a quorum-queue task delivered this many times without an ack (its worker died, "
                             "lost its connection, or outlasted the broker's consumer_timeout) is moved to "
                             "<queue>.dead, not run again. At most 20: RabbitMQ 4 itself drops a message after 20 "
                             "(env WORKER_MAX_DELIVERIES, default %(default)s)")
    parser.add_argument("--retries", type=bounded_int(0), default=env("WORKER_RETRIES", "3"),
                        help="a task whose work raises is tried again up to this many times, then moved to "
                             "<queue>.dead with its error (env WORKER_RETRIES, default %(default)s)")
    parser.add_argument("--retry-delay", type=non_negative_float, default=env("WORKER_RETRY_DELAY", "1"),
                        help="seconds before the first retry; each further retry waits twice as long "
                             "(env WORKER_RETRY_DELAY, default %(default)s)")
    parser.add_argument("--retry-max-delay", type=non_negative_float, default=env("WORKER_RETRY_MAX_DELAY", "60"),
                        help="the longest wait before a retry, in seconds (env WORKER_RETRY_MAX_DELAY, "
                             "default %(default)s)")
    parser.add_argument("--events", type=events_file, default=env("WORKER_EVENTS", "") or None, metavar="FILE",
                        help="append a JSON line per task attempt to FILE (env WORKER_EVENTS)")
    add_broker_flags(parser, "seconds to wait while the broker blocks this worker's publishing (retries and "
                             "dead letters) in a memory or disk alarm, before reconnecting")
    return parser


def publisher_parser(prog: str = "publisher.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Put tasks on the durable work queue: persistent messages, each one "
                                         "confirmed by the broker.")
    parser.add_argument("--count", type=bounded_int(0), default=env("TASK_COUNT", "10"),
                        help="how many tasks (env TASK_COUNT, default %(default)s)")
    parser.add_argument("--min-seconds", type=seconds_value, default=env("TASK_MIN_SECONDS", "1"),
                        help="shortest random duration (env TASK_MIN_SECONDS, default %(default)s)")
    parser.add_argument("--max-seconds", type=seconds_value, default=env("TASK_MAX_SECONDS", "5"),
                        help="longest random duration (env TASK_MAX_SECONDS, default %(default)s)")
    parser.add_argument("--seed", type=int, default=env("TASK_SEED", "") or None,
                        help="random seed, for the same durations every run (env TASK_SEED)")
    parser.add_argument("--durations", type=duration_list, default=env("TASK_DURATIONS", "") or None,
                        help="exact durations, e.g. 3,1,4.5; overrides --count and the min/max "
                             "(env TASK_DURATIONS)")
    parser.add_argument("--flaky", type=bounded_int(0), default=env("TASK_FLAKY", "0"),
                        help="this many of the tasks, drawn at random, fail their first attempt on purpose, to "
                             "show retries (env TASK_FLAKY, default %(default)s)")
    parser.add_argument("--events", type=events_file, default=env("TASK_EVENTS", "") or None, metavar="FILE",
                        help="append a JSON line per confirmed task to FILE, for report.py (env TASK_EVENTS)")
    add_broker_flags(parser, "seconds to wait while the broker blocks publishing (a memory or disk alarm) "
                             "before giving up")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    show_any_text()
    args = parser.parse_args(argv)
    if note := _pika.fallback_note():
        print(f"{parser.prog}: {note}", file=sys.stderr, flush=True)
    return args


# The flag of each setting, for a SettingError's one line.
FLAGS = {"queue.name": "--queue", "queue.type": "--queue-type", "broker.urls": "--url",
         "broker.connect_timeout": "--connect-timeout", "broker.blocked_timeout": "--blocked-timeout",
         "retry.retries": "--retries", "retry.delay": "--retry-delay", "retry.max_delay": "--retry-max-delay",
         "prefetch": "--prefetch", "max_deliveries": "--max-deliveries", "idle_timeout": "--idle-timeout"}


def checked(parser: argparse.ArgumentParser, check, settings):
    """The settings, if check(settings) finds nothing wrong; else argparse's usage error, naming the flag."""
    try:
        check(settings)
    except SettingError as error:
        parser.error(f"argument {FLAGS.get(error.setting, error.setting)}: {error.problem}")
    return settings


def worker_settings(argv: list[str] | None = None, prog: str = "consumer.py") -> WorkerSettings:
    """consumer.py's flags and environment variables as WorkerSettings; a bad value exits 2 with one line."""
    parser = worker_parser(prog)
    args = parse(parser, argv)
    broker, queue = broker_and_queue(args)
    return checked(parser, check_worker, WorkerSettings(
        broker, queue, args.name, args.prefetch, args.idle_timeout, args.max_deliveries,
        RetryPolicy(args.retries, args.retry_delay, args.retry_max_delay), args.events))


def publisher_settings(argv: list[str] | None = None,
                       prog: str = "publisher.py") -> tuple[PublisherSettings, TaskPlan]:
    """publisher.py's flags and environment variables: where to publish, and which tasks."""
    parser = publisher_parser(prog)
    args = parse(parser, argv)
    if args.min_seconds > args.max_seconds:
        parser.error(f"--min-seconds {args.min_seconds:g} is more than --max-seconds {args.max_seconds:g}")
    broker, queue = broker_and_queue(args)
    plan = TaskPlan(args.count, args.min_seconds, args.max_seconds, args.seed, args.durations, args.flaky)
    return checked(parser, check_publisher, PublisherSettings(broker, queue, args.events)), plan


# ---------------------------------------------------------------- errors and signals


class CommandLine:
    """`with CommandLine("consumer.py") as command:` around the engine's work; then `return command.exit_code()`.

    An error the engine raised for the user to fix ends the block; exit_code() then prints it as one line
    on stderr (after whatever the script says in between, such as a summary) and gives its exit code.
    """

    def __init__(self, program: str) -> None:
        self.program = program
        self.error: WorkQueueError | None = None

    def __enter__(self) -> CommandLine:
        return self

    def __exit__(self, _kind, error, _traceback) -> bool:
        if isinstance(error, WorkQueueError):
            self.error = error
            return True
        return False

    def exit_code(self, failed: bool = False) -> int:
        """The error's code, having printed it; else 1 if `failed`, else 0."""
        if self.error is not None:
            with contextlib.suppress(OSError):  # stderr gone with its terminal: the exit code still says it
                print(f"{self.program}: error: {self.error}", file=sys.stderr, flush=True)
            return self.error.exit_code
        return 1 if failed else 0


# SIGHUP: the terminal window the process runs in was closed.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_warmly_on_signals(worker) -> None:
    """First SIGINT, SIGTERM or SIGHUP: worker.stop() (finish and ack the current task). Second: exit at once."""
    def on_signal(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        # write_now, not print: a signal may arrive while the main thread is inside print.
        if worker.stopping:
            write_now(f"[{worker.name}] {name} again: exiting now, the current task is not acked\n")
            os._exit(128 + signum)
        worker.stop()
        write_now(f"[{worker.name}] {name}: finishing the current task, then exiting (send it again to exit at once)\n")
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


def interrupt_on_signals(publisher) -> None:
    """SIGINT or SIGTERM: publisher.interrupt(name), each time (the second one ends the wait for confirms)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: publisher.interrupt(signal.Signals(number).name))
