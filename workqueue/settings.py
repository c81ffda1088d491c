"""Plain settings objects: what the worker and the publisher need to know, with the tutorial's defaults.

cli.py builds them from flags and environment variables; a program of your own can build them directly:

    WorkerSettings(broker=Broker(urls=("amqp://guest:guest@localhost:5672/%2F",)), queue=Queue("jobs"))
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Broker:
    """Where the broker is, and how long to wait for it (seconds)."""

    urls: tuple[str, ...] = (DEFAULT_URL,)  # tried in turn: the nodes of a cluster
    connect_timeout: float = 15.0  # retrying an unreachable broker; also the least set-up deadline (5 s)
    blocked_timeout: float = 60.0  # waiting while a resource alarm blocks publishing, before giving up


@dataclass(frozen=True)
class Queue:
    """The work queue: its name, and its type as declared (quorum, as tutorial two, or classic)."""

    name: str = DEFAULT_QUEUE
    type: str = "quorum"


@dataclass(frozen=True)
class RetryPolicy:
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


def worker_name() -> str:
    """A short name of its own for a worker, shown on every log line."""
    return f"worker-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs; see consumer.py --help for each."""

    broker: Broker = Broker()
    queue: Queue = Queue()
    name: str = field(default_factory=worker_name)
    prefetch: int = 1  # unacked tasks the broker may hand this worker at once; 1 is fair dispatch
    idle_timeout: float = 6.0  # exit this many seconds after the last task (none yet: wait); 0 = never
    max_deliveries: int = 5  # a quorum-queue task delivered this often without an ack is parked
    retry: RetryPolicy = RetryPolicy()
    events: str | None = None  # a file to append a JSON line to per attempt


@dataclass(frozen=True)
class PublisherSettings:
    """What a publisher needs; see publisher.py --help for each."""

    broker: Broker = Broker()
    queue: Queue = Queue()
    events: str | None = None  # a file to append a JSON line to per confirmed task


@dataclass(frozen=True)
class TaskPlan:
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
