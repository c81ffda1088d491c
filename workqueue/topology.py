"""Every queue the scripts declare, in one place, and what the broker's refusals of them mean.

- the work queue: durable, declared exactly as tutorial two declares it, so its scripts and ours share it;
- <queue>.dead: where a message that must not run (again) is parked, with the reason;
- <queue>.retry.<delay>s: one per retry delay, whose message TTL sends a failed task back to the work queue
  when its delay is over (RabbitMQ's own dead-lettering, no plugin).
"""

from __future__ import annotations

import pika.exceptions

from workqueue.errors import QueueMismatch, Refused
from workqueue.settings import Queue, RetryPolicy

# Tasks that cannot or must not run are moved to this queue, with the reason, instead of being dropped.
DEAD_LETTER_SUFFIX = ".dead"
# A channel closed with one of these reply codes is a refusal that no reconnect can fix.
REFUSALS = {
    403: "check the user's permissions (rabbitmqctl set_permissions)",
    405: "another connection holds the queue exclusively",
    406: "the queue exists with other settings",
}


def dead_letter_queue(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX


def retry_queue(queue: str, delay: float) -> str:
    """The delay queue for a retry after `delay` seconds: <queue>.retry.1s, <queue>.retry.0.25s..."""
    return f"{queue}.retry.{round(delay * 1000) / 1000:g}s"


def queue_arguments(queue_type: str) -> dict | None:
    """The work queue's arguments: tutorial two's {"x-queue-type": "quorum"}, or none for a classic queue."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def retry_queue_arguments(queue: Queue, delay: float) -> dict:
    """A delay queue: every message in it waits as long, so the first out is always due first."""
    arguments = {"x-message-ttl": round(delay * 1000),
                 # When the TTL is over, the broker moves the task back to the work queue.
                 "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name}
    if queue.type == "quorum":
        # Only a quorum queue moves a message at least once (kept until the work queue confirms it);
        # that strategy needs the queue to refuse publishes when full instead of dropping its head.
        arguments.update({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"})
    return arguments


def refusal(error: BaseException, what: str) -> Refused | None:
    """The error to stop with if the broker refused `what` for good (permissions, a locked queue), else None."""
    if isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code in REFUSALS:
        return Refused(f"the broker refused to {what}: {error.reply_code} {error.reply_text} "
                       f"({REFUSALS[error.reply_code]})")
    return None


def mismatch(queue: Queue, broker_says: str) -> QueueMismatch:
    """The error for a work queue that exists with other arguments (406 PRECONDITION_FAILED)."""
    other = "classic" if queue.type == "quorum" else "quorum"
    return QueueMismatch(f"queue {queue.name!r} already exists with other settings ({broker_says}); "
                         f"delete it (rabbitmqctl delete_queue {queue.name}) or pass --queue-type {other}")


class Topology:
    """The queues a worker needs: the work queue, its dead-letter queue and one delay queue per retry delay."""

    def __init__(self, queue: Queue, retry: RetryPolicy) -> None:
        self.queue = queue
        self.retry = retry
        self.dead = dead_letter_queue(queue.name)

    def retry_queue(self, delay: float) -> str:
        return retry_queue(self.queue.name, delay)

    def declare(self, channel) -> None:
        """Declare every queue on a BlockingChannel; raise QueueMismatch or Refused if the broker refuses one."""
        declare_work_queue(channel, self.queue)
        declare_work_queue(channel, Queue(self.dead, self.queue.type))
        for delay in self.retry.delays():
            name = self.retry_queue(delay)
            try:
                channel.queue_declare(name, durable=True, arguments=retry_queue_arguments(self.queue, delay))
            except pika.exceptions.ChannelClosedByBroker as error:
                raise refusal(error, f"declare the retry queue {name!r}") or error from None


def declare_work_queue(channel, queue: Queue) -> None:
    """Declare a durable queue as tutorial two does, on a BlockingChannel; explain the fix if it exists otherwise."""
    try:
        channel.queue_declare(queue=queue.name, durable=True, arguments=queue_arguments(queue.type))
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 406:
            raise mismatch(queue, error.reply_text) from None
        raise refusal(error, f"declare queue {queue.name!r}") or error from None
