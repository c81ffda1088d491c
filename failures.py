"""What becomes of a message a worker cannot finish: a retry later, through a delay queue, or <queue>.dead.

Read consumer.py first. A task whose work raises is not held by the worker while it waits for its retry:
it is copied to a delay queue, one per delay, whose message TTL sends it back to the work queue when the
delay is over (RabbitMQ's own dead-lettering, no plugin). So a waiting task is on the broker's disk, blocks
no other task, and survives the death of any worker. A message that must not run again goes to
<queue>.dead, with the reason. Either way the copy is confirmed by the broker before the original is
acked: a task may be done twice, never zero times.
"""

from __future__ import annotations

import argparse
import copy
import threading

import pika
import pika.exceptions

import workqueue as wq

# Header of a retried task: how many of its attempts raised so far.
FAILURES_HEADER = "x-task-failures"
# Header of a retried task: the error of its last attempt.
LAST_ERROR_HEADER = "x-last-error"
# Header of a parked message: how many times the broker had delivered it, this last delivery included.
DELIVERIES_HEADER = "x-deliveries"
# Header of a moved message that had a per-message TTL; the copy has none, so it cannot expire unseen.
ORIGINAL_EXPIRATION_HEADER = "x-original-expiration"
# Headers a quorum queue puts on a redelivery. RabbitMQ 3.x counts every return in x-delivery-count;
# 4.x counts there only crashes and rejects, and every return (a consumer timeout too) in x-acquired-count.
DELIVERY_COUNT_HEADERS = ("x-delivery-count", "x-acquired-count")
# Since RabbitMQ 4.0 a quorum queue drops a message returned after this many deliveries, unless it has a
# dead-letter exchange: --max-deliveries stays within it, so that the worker parks the message first.
BROKER_DELIVERY_LIMIT = 20
# After this many seconds waiting for the broker to confirm a copy, the worker says what it waits for.
SLOW_CONFIRM_SECONDS = 2.0


def add_retry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retries", type=wq.bounded_int(0), default=wq.env("WORKER_RETRIES", "3"),
                        help="a task whose work raises is tried again up to this many times, then moved to "
                             "<queue>.dead with its error (env WORKER_RETRIES, default %(default)s)")
    parser.add_argument("--retry-delay", type=wq.non_negative_float, default=wq.env("WORKER_RETRY_DELAY", "1"),
                        help="seconds before the first retry; each further retry waits twice as long "
                             "(env WORKER_RETRY_DELAY, default %(default)s)")
    parser.add_argument("--retry-max-delay", type=wq.non_negative_float,
                        default=wq.env("WORKER_RETRY_MAX_DELAY", "60"),
                        help="the longest wait before a retry, in seconds (env WORKER_RETRY_MAX_DELAY, "
                             "default %(default)s)")


def retry_delay(args: argparse.Namespace, retry: int) -> float:
    """Seconds before the retry-th retry: --retry-delay, doubled for each retry before it, capped."""
    return min(args.retry_delay * 2 ** min(retry - 1, 64), args.retry_max_delay)


def retry_queue(queue: str, delay: float) -> str:
    return f"{queue}.retry.{round(delay * 1000) / 1000:g}s"


def declare_retry_queues(channel, args: argparse.Namespace) -> None:
    """One delay queue per distinct delay: every message in it waits as long, so the first out is due first."""
    for delay in sorted({retry_delay(args, retry) for retry in range(1, args.retries + 1)}):
        arguments = {"x-message-ttl": round(delay * 1000),
                     # When the TTL is over, the broker moves the task back to the work queue.
                     "x-dead-letter-exchange": "", "x-dead-letter-routing-key": args.queue}
        if args.queue_type == "quorum":
            # Only a quorum queue moves a message at least once (kept until the work queue confirms it);
            # that strategy needs the queue to refuse publishes when full instead of dropping its head.
            arguments.update({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                              "x-overflow": "reject-publish"})
        queue = retry_queue(args.queue, delay)
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as error:
            raise wq.refusal(error, f"declare the retry queue {queue!r}") or error from None


def count_header(headers: dict, name: str) -> int:
    """A count from a header; 0 when absent or not a count (a sender may put anything in a header)."""
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def earlier_deliveries(headers: dict, queue_type: str) -> int | None:
    """How many times the broker delivered this message before; None where it does not count (classic)."""
    if queue_type != "quorum":
        return None
    return max(count_header(headers, name) for name in DELIVERY_COUNT_HEADERS)


def failures_so_far(headers: dict) -> int:
    return count_header(headers, FAILURES_HEADER)


class Mover:
    """Moves a delivered message to another queue, confirmed, before the caller acks the original."""

    def __init__(self, connection: pika.BlockingConnection, who: str) -> None:
        self.connection = connection
        self.who = who
        self.channel = None  # opened at the first message that needs it

    def move(self, properties: pika.BasicProperties, body: bytes, queue: str, headers: dict) -> None:
        """Publish a copy of the message to `queue` with these headers added, and wait for its confirm.

        Raises Fatal if the broker refuses the copy: acking the original then would lose the message.
        """
        copied = copy.copy(properties)
        copied.headers = {name: value for name, value in (properties.headers or {}).items()
                          if name not in DELIVERY_COUNT_HEADERS}  # the next queue counts afresh
        copied.headers.update(headers)
        copied.delivery_mode = pika.DeliveryMode.Persistent.value
        if properties.expiration is not None:
            copied.expiration = None
            copied.headers[ORIGINAL_EXPIRATION_HEADER] = properties.expiration
        if self.channel is None:
            # A channel of its own, with confirms, so that the broker has the copy before the original
            # is acked; the consuming channel stays a plain consumer.
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
        # Waiting for a confirm can take long (a resource alarm blocks publishing): say so, once.
        slow = threading.Timer(SLOW_CONFIRM_SECONDS, wq.log, (self.who, f"waiting for the broker to confirm the "
                               f"copy in {queue!r} (is publishing blocked by a resource alarm?)"))
        slow.daemon = True
        slow.start()
        try:
            self.publish(copied, body, queue, headers)
        finally:
            slow.cancel()

    def publish(self, properties: pika.BasicProperties, body: bytes, queue: str, ours: dict) -> None:
        try:
            self.channel.basic_publish("", queue, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise wq.Fatal(f"the broker could not route a message to {queue!r} (the queue is gone?); "
                           "it stays on the work queue") from None
        except pika.exceptions.NackError:
            raise wq.Fatal(f"the broker refused a message into {queue!r} (a length limit with "
                           "overflow reject-publish?); it stays on the work queue") from None
        except (TypeError, ValueError, OverflowError, UnicodeError) as error:
            # pika read the sender's headers but cannot write them again: keep the message, with ours only.
            properties.headers = {**ours, "x-unsendable-headers": f"{type(error).__name__}: {error}"[:200]}
            self.channel.basic_publish("", queue, body, properties, mandatory=True)
