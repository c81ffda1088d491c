"""What becomes of a delivery: run it, retry it later, or park it in <queue>.dead, and why.

Read consumer.py first. The decisions are plain functions of what a delivery carries (decide, after_failure);
the worker does what they say. A task whose work raises is not held by the worker while it waits for its
retry: it is copied to a delay queue (see topology.py), whose message TTL sends it back to the work queue
when the delay is over. So a waiting task is on the broker's disk, blocks no other task, and survives the
death of any worker. A message that must not run again goes to <queue>.dead, with the reason. Either way
the copy is confirmed by the broker before the original is acked: a task may be done twice, never zero times.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import pika
import pika.exceptions

from workqueue import _pika
from workqueue.errors import Refused
from workqueue.headers import copy_properties
from workqueue.output import log
from workqueue.settings import RetryPolicy
from workqueue.task import BadTask, Task, decode

# Header of a parked message: why it was parked.
DEAD_REASON_HEADER = "x-dead-reason"
# Header of a parked message: the queue it was taken from.
ORIGINAL_QUEUE_HEADER = "x-original-queue"
# Header of a retried task: how many of its attempts raised so far.
FAILURES_HEADER = "x-task-failures"
# Header of a retried task: the error of its last attempt.
LAST_ERROR_HEADER = "x-last-error"
# Header of a parked message: how many times the broker had delivered it, this last delivery included.
DELIVERIES_HEADER = "x-deliveries"
# Headers a quorum queue puts on a redelivery. RabbitMQ 3.x counts every return in x-delivery-count;
# 4.x counts there only crashes and rejects, and every return (a consumer timeout too) in x-acquired-count
# (https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling).
DELIVERY_COUNT_HEADERS = ("x-delivery-count", "x-acquired-count")
# An error's text kept in a header, at most this many characters.
ERROR_TEXT_LENGTH = 500
# After this many seconds waiting for the broker to confirm a copy, the worker says what it waits for.
SLOW_CONFIRM_SECONDS = 2.0


# ---------------------------------------------------------------- the decisions


class Run(NamedTuple):
    """Run the task; `earlier` deliveries were made before this one (None: a classic queue does not count)."""

    task: Task
    earlier: int | None


class Retry(NamedTuple):
    """Copy the task to the delay queue of `delay` seconds, with `headers` added, then ack the original."""

    delay: float
    headers: dict


class Park(NamedTuple):
    """Copy the message to <queue>.dead, with `headers` added (the reason among them), then ack the original."""

    reason: str
    headers: dict


def count_header(headers: dict, name: str) -> int:
    """A count from a header; 0 when absent or not a count (a sender may put anything in a header)."""
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def earlier_deliveries(headers: dict, queue_type: str) -> int | None:
    """How many times the broker delivered this message before; None where it does not count (classic)."""
    if queue_type != "quorum":
        return None
    return max(count_header(headers, name) for name in DELIVERY_COUNT_HEADERS)


def park(reason: str, earlier: int | None, **headers: object) -> Park:
    """A Park: the reason in x-dead-reason, and the deliveries so far when the queue counts them."""
    if earlier is not None:
        headers[DELIVERIES_HEADER] = earlier + 1
    return Park(reason, {DEAD_REASON_HEADER: reason, **headers})


def decide(body: bytes, headers: dict, content_type: str | None, queue_type: str, max_deliveries: int) -> Run | Park:
    """What to do with a delivery before any work: run its task, or park it, saying why.

    The delivery count first: a message that crashes every worker, however it does it, is parked in the end.
    """
    earlier = earlier_deliveries(headers, queue_type)
    if earlier is not None and earlier >= max_deliveries:
        return park(f"delivered {earlier} times without an ack: its worker died, lost its connection or outlasted "
                    f"the broker's consumer_timeout (--max-deliveries {max_deliveries})", earlier)
    try:
        task = decode(body, content_type)
    except BadTask as error:
        return park(str(error), earlier)
    except Exception as error:  # whatever else a sender found: the message is parked, the worker lives
        return park(f"unreadable: {type(error).__name__}: {str(error)[:200]}", earlier)
    failed_before = count_header(headers, FAILURES_HEADER)
    return Run(task._replace(attempt=failed_before + 1) if failed_before else task, earlier)


def after_failure(task: Task, error: str, policy: RetryPolicy, earlier: int | None) -> Retry | Park:
    """What to do with a task whose attempt raised `error`: retry it after a delay, or park it when none is left."""
    error = error[:ERROR_TEXT_LENGTH]
    headers = {FAILURES_HEADER: task.attempt, LAST_ERROR_HEADER: error}
    if task.attempt > policy.retries:
        return park(f"failed {task.attempt} times (--retries {policy.retries}); last error: {error}", earlier,
                    **headers)
    return Retry(policy.delay_before(task.attempt), headers)


# ---------------------------------------------------------------- the confirmed copy

# A content header frame's own bytes, besides the properties: type, channel and size (7), class, weight and body
# size (12), and the end octet (1).
HEADER_FRAME_BYTES = 20


class Mover:
    """Copies a delivered message to another queue, confirmed, before the caller acks the original.

    The copy keeps the message's body and every header as its sender wrote them (headers.copy_properties), less
    the broker's delivery counts (the next queue counts afresh) and its own TTL (kept as a header: a parked copy
    must not expire unseen), plus ours. It goes on a channel of its own in confirm mode, opened at the first
    copy; on `channel` instead, if given (a broker that allows one channel per connection: the consuming one,
    in confirm mode).
    """

    def __init__(self, connection: pika.BlockingConnection, who: str, frame_max: int, topology,
                 channel=None, deadline: float | None = 75.0) -> None:
        """`deadline`: the seconds a copy may wait for its confirm, alarms included (None: no end); past it the
        connection is ended (a frozen broker answers nothing) and the message stays on the work queue."""
        self.connection = connection
        self.deadline = deadline
        self.who = who
        self.frame_max = frame_max
        self.topology = topology
        self.channel = channel

    def move(self, properties: pika.BasicProperties, body: bytes, queue: str, headers: dict) -> None:
        """Publish a copy of the message to `queue` with these headers added, and wait for its confirm.

        A queue of ours that someone deleted is declared again. Raises Refused if the broker refuses the copy:
        acking the original then would lose the message.
        """
        limit = self.frame_max - HEADER_FRAME_BYTES
        try:
            raw, dropped = copy_properties(_pika.raw_properties(properties), drop=set(DELIVERY_COUNT_HEADERS),
                                           add=headers, limit=limit)
        except ValueError:  # bytes no basic properties are made of: what pika read of them, written its way
            properties.raw = b""
            raw, dropped = copy_properties(_pika.raw_properties(properties), drop=set(DELIVERY_COUNT_HEADERS),
                                           add=headers, limit=limit)
        if len(raw) > limit:
            raise Refused(f"a copy for {queue!r} cannot fit one frame of {self.frame_max} bytes, even without the "
                          "sender's headers; it stays on the work queue")
        if dropped:
            log(self.who, f"the copy in {queue!r} left out the sender's header(s) {', '.join(dropped)}: with ours "
                          f"they would not fit one frame of {self.frame_max} bytes (named in x-dropped-headers)")
        if self.channel is None:
            # A channel of its own, with confirms, so that the broker has the copy before the original is
            # acked; the consuming channel stays a plain consumer.
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
        # Waiting for a confirm can take long (a resource alarm blocks publishing): say so, once.
        slow = threading.Timer(SLOW_CONFIRM_SECONDS, log, (self.who, f"waiting for the broker to confirm the "
                               f"copy in {queue!r} (is publishing blocked by a resource alarm?)"))
        slow.daemon = True
        slow.start()
        try:
            with _pika.Deadline(self.connection, self.deadline) as deadline:  # seconds None: no deadline
                try:
                    self.publish(_pika.RawProperties(raw), body, queue)
                except pika.exceptions.AMQPConnectionError:
                    if deadline.expired:
                        log(self.who, f"the broker did not confirm the copy in {queue!r} within "
                                      f"{self.deadline:g} s: the message stays on the work queue")
                    raise
        finally:
            slow.cancel()

    def publish(self, properties: pika.BasicProperties, body: bytes, queue: str) -> None:
        try:
            try:
                self.channel.basic_publish("", queue, body, properties, mandatory=True)
            except pika.exceptions.UnroutableError:
                self.topology.declare_again(self.channel, queue)
                log(self.who, f"{queue!r} was gone: declared it again")
                self.channel.basic_publish("", queue, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise Refused(f"the broker could not route a message to {queue!r}, even declared again; "
                          "it stays on the work queue") from None
        except pika.exceptions.NackError:
            raise Refused(f"the broker refused a message into {queue!r} (a length limit with "
                          "overflow reject-publish?); it stays on the work queue") from None
