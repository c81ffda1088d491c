"""Every queue the scripts declare, in one place, and what the broker's refusals of them mean.

- the work queue: durable, as tutorial two declares it ({"x-queue-type": "quorum"}), and, when the scripts
  make it, with a backstop: the broker itself dead-letters to <queue>.dead a message delivered more than
  BROKER_DELIVERY_LIMIT times without an ack, whatever took it (https://www.rabbitmq.com/docs/quorum-queues
  #poison-message-handling). A queue that exists without it (made by the tutorial, or by this project's
  earlier release) is used as it is, and the worker says in one line how to add it by policy;
- <queue>.dead: where a message that must not run (again) is parked, with the reason;
- <queue>.retry.<delay>s: one per retry delay, whose message TTL sends a failed task back to the work queue
  when its delay is over (RabbitMQ's own dead-lettering, no plugin).
"""

from __future__ import annotations

import re
import time

import pika.exceptions

from workqueue.errors import QueueMismatch, Refused
from workqueue.settings import BROKER_DELIVERY_LIMIT, QUEUE_TYPES, Queue, RetryPolicy

# Tasks that cannot or must not run are moved to this queue, with the reason, instead of being dropped.
DEAD_LETTER_SUFFIX = ".dead"
# A channel closed with one of these reply codes is a refusal that no reconnect can fix.
REFUSALS = {
    403: "check the user's permissions (rabbitmqctl set_permissions)",
    405: "another connection holds the queue exclusively",
    406: "the queue exists with other settings",
}
# How long a queue whose consumers were cancelled is watched for its deletion, in seconds.
GONE_SECONDS = 0.5
# The arguments of the backstop: a queue that exists without them is used without it.
BACKSTOP_ARGUMENTS = ("x-delivery-limit", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                      "x-dead-letter-strategy", "x-overflow")


def dead_letter_queue(queue: str) -> str:
    return queue + DEAD_LETTER_SUFFIX


def retry_queue(queue: str, delay: float) -> str:
    """The delay queue for a retry after `delay` seconds: <queue>.retry.1s, <queue>.retry.0.25s..."""
    return f"{queue}.retry.{round(delay * 1000) / 1000:g}s"


def queue_arguments(queue_type: str) -> dict:
    """Tutorial two's arguments: {"x-queue-type": "quorum"}. A classic queue says so too: a vhost whose default
    queue type is quorum would make a queue declared with no type a quorum queue (RabbitMQ 3.10 and 4.x take
    {"x-queue-type": "classic"} as the same as no type, for a queue that exists)."""
    return {"x-queue-type": queue_type}


def work_queue_arguments(queue: Queue, backstop: bool = True) -> dict | None:
    """The work queue's arguments: the tutorial's, and for a quorum queue the backstop (unless not `backstop`).

    The broker dead-letters at least once (kept until <queue>.dead has it), which needs the queue to refuse
    publishes when full rather than drop its oldest message; nothing here sets a length limit.
    """
    arguments = queue_arguments(queue.type)
    if queue.type == "quorum" and backstop:
        arguments.update({"x-delivery-limit": BROKER_DELIVERY_LIMIT, "x-dead-letter-exchange": "",
                          "x-dead-letter-routing-key": dead_letter_queue(queue.name),
                          "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    return arguments


def lacks_backstop(error: BaseException) -> bool:
    """Whether a refused declaration (406) only says the queue exists without the backstop's arguments."""
    return (isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code == 406
            and any(f"inequivalent arg '{name}'" in error.reply_text for name in BACKSTOP_ARGUMENTS))


def backstop_advice(queue: Queue) -> str:
    """The line that says how to give an existing queue the backstop, without making it again."""
    return (f"queue {queue.name!r} has no delivery limit of its own (it was declared without one, by the tutorial "
            f"or an earlier release): a message no worker can settle comes back for ever on RabbitMQ 3, and is "
            f"dropped after {BROKER_DELIVERY_LIMIT} deliveries on RabbitMQ 4. To have the broker park it in "
            f"{dead_letter_queue(queue.name)!r} instead: rabbitmqctl set_policy {queue.name}-backstop "
            f"'^{re.escape(queue.name)}$' '{{\"delivery-limit\": {BROKER_DELIVERY_LIMIT}, \"dead-letter-exchange\": "
            f"\"\", \"dead-letter-routing-key\": \"{dead_letter_queue(queue.name)}\"}}' --apply-to queues "
            "(a queue takes one policy: merge these keys into any it has)")


def retry_queue_arguments(queue: Queue, delay: float) -> dict:
    """A delay queue: every message in it waits as long, so the first out is always due first."""
    arguments = {"x-message-ttl": round(delay * 1000), "x-queue-type": queue.type,
                 # When the TTL is over, the broker moves the task back to the work queue.
                 "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name}
    if queue.type == "quorum":
        # Only a quorum queue moves a message at least once (kept until the work queue confirms it);
        # that strategy needs the queue to refuse publishes when full instead of dropping its head.
        arguments.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    return arguments


def refusal(error: BaseException, what: str) -> Refused | None:
    """The error to stop with if the broker refused `what` for good (permissions, a locked queue), else None."""
    if isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code in REFUSALS:
        return Refused(f"the broker refused to {what}: {error.reply_code} {error.reply_text} "
                       f"({REFUSALS[error.reply_code]})")
    return None


def mismatch(queue: Queue, broker_says: str, what: str = "queue") -> QueueMismatch:
    """The error for a queue that exists with other arguments (406 PRECONDITION_FAILED): it names the argument
    that differs, and suggests --queue-type only when the type is what differs and --queue-type can give it."""
    found = re.search(r"inequivalent arg '([^']+)'", broker_says)
    argument = found.group(1) if found else "arguments"
    current = re.search(r"current is (?:the value )?'([^']+)'", broker_says)
    existing_type = current.group(1) if current else "classic"  # "current is none": a classic queue
    remake = (f"delete it to have it made again (rabbitmqctl delete_queue {queue.name}: its messages go with it) "
              "or use another --queue")
    if what != "queue":
        remake = (f"it was made by workers with other settings: run workers of one kind, or delete it once it is "
                  f"empty (rabbitmqctl delete_queue {queue.name})")
    elif argument == "x-queue-type" and existing_type in QUEUE_TYPES:
        remake = f"pass --queue-type {existing_type}, or {remake}"
    elif argument == "x-queue-type":
        remake = f"it is a {existing_type} queue, which these scripts do not use: {remake}"
    return QueueMismatch(f"{what} {queue.name!r} already exists with another {argument} ({broker_says}); {remake}")


# The ways a work queue can be declared, tried in turn while the broker refuses only the backstop's arguments:
# with ours; as the tutorial (a queue made without one); passively (a queue with a delivery limit or dead-letter
# settings of its own, used as it is).
DECLARATIONS = ("ours", "none", "its own")


def declaration_arguments(queue: Queue, how: str) -> dict:
    """queue_declare's keyword arguments for one of DECLARATIONS."""
    if how == "its own":
        return {"passive": True}
    return {"durable": True, "arguments": work_queue_arguments(queue, backstop=how == "ours")}


class Topology:
    """The queues a worker needs: the work queue, its dead-letter queue and one delay queue per retry delay.

    declare() needs a BlockingConnection: a refused declaration closes its channel, and the next try needs a
    new one. `backstop` says which of DECLARATIONS the work queue took (known once declared).
    """

    def __init__(self, queue: Queue, retry: RetryPolicy) -> None:
        self.queue = queue
        self.retry = retry
        self.dead = dead_letter_queue(queue.name)
        self.backstop = "none"

    def retry_queue(self, delay: float) -> str:
        return retry_queue(self.queue.name, delay)

    def declare(self, connection) -> pika.adapters.blocking_connection.BlockingChannel:
        """Declare every queue; return an open channel. Raises QueueMismatch or Refused if the broker refuses one."""
        ways = DECLARATIONS if self.queue.type == "quorum" else ("none",)
        for how in ways:
            channel = connection.channel()  # a refused declaration closes its channel
            try:
                channel.queue_declare(self.queue.name, **declaration_arguments(self.queue, how))
            except pika.exceptions.ChannelClosedByBroker as error:
                if how == ways[-1] or not lacks_backstop(error):
                    raise explain(self.queue, error) from None
                continue
            self.backstop = how
            break
        declare_work_queue(channel, Queue(self.dead, self.queue.type), backstop=False)
        for delay in self.retry.delays():
            self.declare_retry_queue(channel, delay)
        return channel

    def declare_retry_queue(self, channel, delay: float) -> None:
        name = self.retry_queue(delay)
        try:
            channel.queue_declare(name, durable=True, arguments=retry_queue_arguments(self.queue, delay))
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 406:
                raise mismatch(Queue(name, self.queue.type), error.reply_text, "retry queue") from None
            raise refusal(error, f"declare the retry queue {name!r}") or error from None

    def declare_again(self, channel, name: str) -> None:
        """Declare one of the worker's own queues again, by name (someone deleted it)."""
        if name == self.dead:
            declare_work_queue(channel, Queue(self.dead, self.queue.type), backstop=False)
        else:
            for delay in self.retry.delays():
                if self.retry_queue(delay) == name:
                    self.declare_retry_queue(channel, delay)


def explain(queue: Queue, error: BaseException) -> BaseException:
    """What a refused declaration of `queue` means for the user: a mismatch (406), a refusal, or the error itself."""
    if isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code == 406:
        return mismatch(queue, error.reply_text)
    return refusal(error, f"declare queue {queue.name!r}") or error


def declare_work_queue(channel, queue: Queue, backstop: bool = True) -> None:
    """Declare a durable queue on a BlockingChannel, as the tutorial does (and with the backstop, if `backstop`);
    explain the fix if it exists otherwise."""
    try:
        channel.queue_declare(queue=queue.name, durable=True, arguments=work_queue_arguments(queue, backstop))
    except pika.exceptions.ChannelClosedByBroker as error:
        raise explain(queue, error) from None


def queue_exists(connection, name: str) -> bool | None:
    """Whether the queue exists (a passive declaration on a channel of its own); None if that cannot be told."""
    try:
        channel = connection.channel()
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        return False if error.reply_code == 404 else None
    except pika.exceptions.AMQPError:
        return None
    channel.close()
    return True


def queue_gone(connection, name: str, within: float = GONE_SECONDS) -> bool:
    """Whether the queue was deleted: RabbitMQ 4 cancels a deleted queue's consumers a moment before the queue is
    gone from its books, so a queue still there is asked after again for `within` seconds."""
    deadline = time.monotonic() + within
    while (exists := queue_exists(connection, name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return exists is False
