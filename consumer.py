#!/usr/bin/env python3
"""A worker: takes one task at a time from the work queue, does it, and acks it only when it is done."""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import time
import uuid

import pika
import pika.exceptions

import workqueue as wq

# How often, in seconds, an idle worker checks for a stop signal and its idle timeout.
POLL_SECONDS = 0.2
# Header a quorum queue adds to a redelivery: how many times the message was delivered before.
DELIVERY_COUNT_HEADER = "x-delivery-count"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=wq.env("WORKER_NAME", f"worker-{uuid.uuid4().hex[:4]}"),
                        help="shown on every log line (env WORKER_NAME, default a short unique name)")
    parser.add_argument("--prefetch", type=wq.bounded_int(1), default=wq.env("WORKER_PREFETCH", "1"),
                        help="unacked tasks the broker may hand this worker at once; 1 is fair dispatch "
                             "(env WORKER_PREFETCH, default %(default)s)")
    parser.add_argument("--idle-timeout", type=wq.non_negative_float, default=wq.env("WORKER_IDLE_TIMEOUT", "6"),
                        help="exit after this many seconds with no task; 0 = never "
                             "(env WORKER_IDLE_TIMEOUT, default %(default)s)")
    parser.add_argument("--max-deliveries", type=wq.bounded_int(1), default=wq.env("WORKER_MAX_DELIVERIES", "5"),
                        help="a quorum-queue task delivered this many times before is dead-lettered, not run "
                             "again (env WORKER_MAX_DELIVERIES, default %(default)s)")
    parser.add_argument("--events", default=wq.env("WORKER_EVENTS", "") or None, metavar="FILE",
                        help="append a JSON line per finished task to FILE (env WORKER_EVENTS)")
    wq.add_connection_flags(parser)
    return parser.parse_args(argv)


def do_work(task: wq.Task) -> None:
    """The work itself. The demo sleeps; a real job system does its job here."""
    time.sleep(task.seconds)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.dead_queue = wq.dead_letter_queue(args.queue)
        self.done: list[int | str] = []
        self.busy_seconds = 0.0
        self.dead_lettered = 0
        # Set by the first SIGINT or SIGTERM: finish the current task, ack it, then exit.
        self.stopping = False

    def run(self) -> None:
        """Consume until idle or stopped, reconnecting whenever the connection is lost."""
        while not self.stopping:
            connection = wq.connect(self.args.url, self.args.connect_timeout, self.name,
                                    stop_requested=lambda: self.stopping)
            if connection is None:
                return
            try:
                self.consume(connection)
                return
            except wq.CONNECTION_ERRORS as error:
                wq.log(self.name, f"connection lost ({self.why_closed(error)}); reconnecting")
            finally:
                if connection.is_open:
                    connection.close()

    def consume(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.channel = channel = connection.channel()
        wq.declare_queue(channel, self.args.queue, self.args.queue_type)
        wq.declare_queue(channel, self.dead_queue, self.args.queue_type)
        # Fair dispatch: no new task until this one is acked, so a busy worker is never handed more.
        channel.basic_qos(prefetch_count=self.args.prefetch)
        self.dead_letters = None  # opened at the first message that needs it
        self.keeper = wq.ConnectionKeeper(connection)
        self.last_task = time.monotonic()
        channel.basic_consume(self.args.queue, self.on_message)
        connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)
        wq.log(self.name, f"waiting for tasks on {self.args.queue!r}")
        try:
            channel.start_consuming()  # returns once stop_consuming() is called
        finally:
            self.keeper.close()

    def on_message(self, _channel, method, properties, body: bytes) -> None:
        if self.stopping:
            # Not started, not acked: stopping hands it back to the queue for another worker.
            self.channel.stop_consuming()
            return
        self.handle(method, properties, body)
        self.last_task = time.monotonic()

    def stop_if_idle_or_asked(self) -> None:
        """Runs every POLL_SECONDS between tasks, on this thread: the connection's own timer."""
        idle = time.monotonic() - self.last_task
        if self.stopping:
            self.channel.stop_consuming()
        elif self.args.idle_timeout and idle >= self.args.idle_timeout:
            wq.log(self.name, f"no task for {idle:.1f} s: exiting")
            self.channel.stop_consuming()
        else:
            self.connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)

    def handle(self, method, properties, body: bytes) -> None:
        try:
            task = wq.parse_task(body, properties.content_type)
        except wq.BadTask as error:
            self.dead_letter(method, properties, body, str(error))
            return
        earlier = (properties.headers or {}).get(DELIVERY_COUNT_HEADER, 0)
        if earlier >= self.args.max_deliveries:
            self.dead_letter(method, properties, body,
                             f"delivered {earlier} times without an ack (--max-deliveries {self.args.max_deliveries})")
            return
        again = f", delivery {earlier + 1}" if method.redelivered else ""
        wq.log(self.name, f"started {task.label} ({task.seconds:g} s{again})")
        started = time.time()
        try:
            with self.keeper.working():  # heartbeats go on while the task runs
                do_work(task)
            # Only now does the broker forget the task. An ack must go on the channel that delivered it.
            self.channel.basic_ack(method.delivery_tag)
        except wq.CONNECTION_ERRORS as error:
            # The delivery tag died with the channel: no ack can be sent on a new one, so the broker
            # will hand this task out again.
            wq.log(self.name, f"finished {task.label} but could not ack it ({self.why_closed(error)}): "
                              "it will be redelivered")
            self.record(task, properties, started, acked=False)
            raise
        self.record(task, properties, started, acked=True)

    def dead_letter(self, method, properties, body: bytes, reason: str) -> None:
        """Move a message we will not run to the dead-letter queue, with the reason, instead of dropping it."""
        kept = copy.copy(properties)
        kept.headers = {**(properties.headers or {}), wq.DEAD_REASON_HEADER: reason,
                        "x-original-queue": self.args.queue}
        kept.delivery_mode = pika.DeliveryMode.Persistent.value
        if self.dead_letters is None:
            # A channel of its own, with confirms, so that the broker has the copy before the original
            # is acked; the consuming channel stays a plain consumer.
            self.dead_letters = self.connection.channel()
            self.dead_letters.confirm_delivery()
        self.dead_letters.basic_publish(exchange="", routing_key=self.dead_queue, body=body, properties=kept,
                                        mandatory=True)
        self.channel.basic_ack(method.delivery_tag)
        self.dead_lettered += 1
        wq.log(self.name, f"moved a message to {self.dead_queue!r}: {reason}")

    def record(self, task: wq.Task, properties, started: float, acked: bool) -> None:
        finished = time.time()
        if acked:
            self.done.append(task.task_id if task.task_id is not None else task.label)
            self.busy_seconds += finished - started
            wq.log(self.name, f"done {task.label} in {finished - started:.2f} s")
        if self.args.events:
            wq.append_line(self.args.events, json.dumps({
                "event": "done", "worker": self.name, "task_id": task.task_id, "seconds": task.seconds,
                "started": started, "finished": finished, "acked": acked,
                "message_id": properties.message_id, "label": task.label,
            }))

    def why_closed(self, error: BaseException) -> str:
        if isinstance(error, pika.exceptions.ChannelWrongStateError) and self.connection.is_open:
            return ("the broker closed the channel while the task ran, as it does when a task outlasts its "
                    "consumer_timeout")
        return wq.describe(error)

    def summary(self) -> str:
        ids = ", ".join(map(str, self.done)) or "none"
        return (f"summary: {len(self.done)} task(s) done, {self.busy_seconds:.2f} s busy, task ids: {ids}; "
                f"{self.dead_lettered} moved to {self.dead_queue!r}")


def stop_on_signals(worker: Worker) -> None:
    """First SIGINT/SIGTERM: warm stop (finish and ack the current task). Second: exit at once."""
    def on_signal(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        # os.write, not print: a signal may arrive while the main thread is inside print.
        if worker.stopping:
            os.write(1, f"[{worker.name}] {name} again: exiting now, the current task is not acked\n".encode())
            os._exit(128 + signum)
        worker.stopping = True
        os.write(1, f"[{worker.name}] {name}: finishing the current task, then exiting "
                    f"(send it again to exit at once)\n".encode())
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker = Worker(args)
    stop_on_signals(worker)
    try:
        worker.run()
    except wq.Fatal as error:
        wq.log(worker.name, worker.summary())
        return wq.fail("consumer.py", error)
    wq.log(worker.name, worker.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
