"""Plain settings objects: what the worker and the publisher need to know, with the tutorial's defaults.

cli.py builds them from flags and environment variables; a program of your own can build them directly:

    WorkerSettings(broker=Broker(urls=("amqp://guest:guest@localhost:5672/%2F",)), queue=Queue("jobs"))

The engines check them (check_worker, check_publisher) before they connect: a value that cannot work is a
SettingError that names the setting, never a broker's refusal or a traceback later.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from workqueue.errors import UsageError

# The broker the official tutorials use; several URLs, comma-separated, are tried in turn (a cluster).
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
# The official tutorial two's queue name, so its scripts and ours can feed each other.
DEFAULT_QUEUE = "task_queue"
# Quorum is what tutorial two declares today; classic is the older tutorial's plain durable queue.
QUEUE_TYPES = ("quorum", "classic")
# Since RabbitMQ 4.0 a quorum queue drops a message returned after this many deliveries, unless it has a
# dead-letter exchange (https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling): a worker
# parks a message before that, so --max-deliveries stays within it.
BROKER_DELIVERY_LIMIT = 20
# The longest wait before a retry, in seconds: a delay queue's message TTL, which RabbitMQ keeps in 32 bits of
# milliseconds (https://www.rabbitmq.com/docs/ttl): 4,294,967 s, 49.7 days.
MAX_RETRY_DELAY = (2**32 - 1) / 1000
# The most retries a task may have: one delay queue per distinct delay, and delays double up to their cap.
MAX_RETRIES = 1000
# A queue name is an AMQP short string, at most 255 bytes of UTF-8, and the worker's own queues add to it:
# "<queue>.retry.4294967.295s" at most, 19 bytes.
MAX_QUEUE_NAME_BYTES = 255 - len(".retry.4294967.295s")
# basic.qos's prefetch count is a 16-bit field (AMQP 0-9-1).
MAX_PREFETCH = 65535


class SettingError(UsageError):
    """A setting that cannot work; `setting` names it ("queue.name", "retry.delay"...): the command line says which
    flag that is."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class Broker(NamedTuple):
    """Where the broker is, and how long to wait for it (seconds)."""

    urls: tuple[str, ...] = (DEFAULT_URL,)  # tried in turn: the nodes of a cluster
    connect_timeout: float = 15.0  # retrying an unreachable broker; also the least set-up deadline (5 s)
    blocked_timeout: float = 60.0  # waiting while a resource alarm blocks publishing, before giving up


class Queue(NamedTuple):
    """The work queue: its name, and its type as declared (quorum, as tutorial two, or classic)."""

    name: str = DEFAULT_QUEUE
    type: str = "quorum"


class RetryPolicy(NamedTuple):
    """How a task whose work raised is tried again: `retries` times, after delay x 2^(k-1) seconds, capped."""

    retries: int = 3
    delay: float = 1.0  # seconds before the first retry
    max_delay: float = 60.0  # the longest wait before a retry, in seconds

    def delay_before(self, retry: int) -> float:
        """Seconds before the retry-th retry (1 is the first): `delay`, doubled for each retry before it, capped."""
        return min(self.delay * 2 ** min(retry - 1, 64), self.max_delay)

    def delays(self) -> list[float]:
        """Every distinct delay the retries use, shortest first: one delay queue each."""
        return sorted({self.delay_before(retry) for retry in range(1, self.retries + 1)})


class WorkerSettings(NamedTuple):
    """What a worker needs; see consumer.py --help for each."""

    broker: Broker = Broker()
    queue: Queue = Queue()
    name: str = ""  # shown on every log line; "" for a short name of its own (worker-3f2a)
    prefetch: int = 1  # unacked tasks the broker may hand this worker at once; 1 is fair dispatch
    idle_timeout: float = 6.0  # exit this many seconds after the last task (none yet: wait); 0 = never
    max_deliveries: int = 5  # a quorum-queue task delivered this often without an ack is parked
    retry: RetryPolicy = RetryPolicy()
    events: str | None = None  # a file to append a JSON line to per attempt


class PublisherSettings(NamedTuple):
    """What a publisher needs; see publisher.py --help for each."""

    broker: Broker = Broker()
    queue: Queue = Queue()
    events: str | None = None  # a file to append a JSON line to per confirmed task


class TaskPlan(NamedTuple):
    """The demo's tasks: how many, how long each (random in a range, or exact), and which fail on purpose."""

    count: int = 10
    min_seconds: float = 1.0
    max_seconds: float = 5.0
    seed: int | None = None  # the same durations every run
    durations: tuple[float, ...] | None = None  # exact durations; overrides count, min and max
    flaky: int = 0  # this many tasks, drawn at random, fail their first attempt on purpose

    @property
    def total(self) -> int:
        return len(self.durations) if self.durations is not None else self.count


# ---------------------------------------------------------------- the checks


def seconds(setting: str, value: float, most: float = math.inf) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= most:
        limit = "" if most == math.inf else f" and at most {most:g}"
        raise SettingError(setting, f"must be a number of seconds >= 0{limit}: {value!r}")


def whole(setting: str, value: int, least: int, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise SettingError(setting, f"must be a whole number from {least} to {most}: {value!r}")


def check_queue(queue: Queue) -> None:
    name = queue.name
    if not name:
        raise SettingError("queue.name", "empty: a queue needs a name (the broker would make one up for each "
                                         "declaration, and nothing would ever find it again)")
    if name.startswith("amq."):
        raise SettingError("queue.name", f"{name!r} starts with amq., which RabbitMQ keeps for itself")
    if len(name.encode()) > MAX_QUEUE_NAME_BYTES:
        raise SettingError("queue.name", f"too long: {len(name.encode())} bytes of UTF-8, at most "
                                         f"{MAX_QUEUE_NAME_BYTES} (AMQP's 255, less the '.retry.<delay>s' of the "
                                         "worker's own queues)")
    if queue.type not in QUEUE_TYPES:
        raise SettingError("queue.type", f"must be one of {', '.join(QUEUE_TYPES)}: {queue.type!r}")


def check_broker(broker: Broker) -> None:
    from workqueue.connection import check_urls  # connection imports pika: not for every reader of settings

    if not broker.urls:
        raise SettingError("broker.urls", "no URL given")
    for url in broker.urls:
        check_urls(url)
    seconds("broker.connect_timeout", broker.connect_timeout)
    seconds("broker.blocked_timeout", broker.blocked_timeout)


def check_retry(retry: RetryPolicy) -> None:
    whole("retry.retries", retry.retries, 0, MAX_RETRIES)
    why = f"a retry waits at most {MAX_RETRY_DELAY:.0f} s (49.7 days), the longest message TTL RabbitMQ keeps"
    for setting, value in (("retry.delay", retry.delay), ("retry.max_delay", retry.max_delay)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SettingError(setting, f"must be a number of seconds >= 0: {value!r}")
        if value > MAX_RETRY_DELAY:
            raise SettingError(setting, f"{value:g} s is too long: {why}")


def check_worker(settings: WorkerSettings) -> None:
    """Raise SettingError for the first of a worker's settings that cannot work."""
    check_broker(settings.broker)
    check_queue(settings.queue)
    check_retry(settings.retry)
    whole("prefetch", settings.prefetch, 1, MAX_PREFETCH)
    whole("max_deliveries", settings.max_deliveries, 1, BROKER_DELIVERY_LIMIT)
    seconds("idle_timeout", settings.idle_timeout)


def check_publisher(settings: PublisherSettings) -> None:
    """Raise SettingError for the first of a publisher's settings that cannot work."""
    check_broker(settings.broker)
    check_queue(settings.queue)
