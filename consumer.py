#!/usr/bin/env python3
"""A worker: takes one task at a time from the work queue, does it, and acks it only when it is done."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
import uuid

import pika
import pika.exceptions

import events
import failures
import workqueue as wq

# How often, in seconds, an idle worker checks for a stop signal and its idle timeout.
POLL_SECONDS = 0.2
# A connection that ends sooner than this after it was made counts as a failed attempt: the next
# reconnect waits, longer each time, so that a broker that keeps refusing us is not hammered.
SHORT_LIVED_SECONDS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=wq.env("WORKER_NAME", f"worker-{uuid.uuid4().hex[:4]}"),
                        help="shown on every log line (env WORKER_NAME, default a short unique name)")
    parser.add_argument("--prefetch", type=wq.bounded_int(1), default=wq.env("WORKER_PREFETCH", "1"),
                        help="unacked tasks the broker may hand this worker at once; 1 is fair dispatch. Above 1, "
                             "a worker crash counts as a delivery of every task it held, run or not "
                             "(env WORKER_PREFETCH, default %(default)s)")
    parser.add_argument("--idle-timeout", type=wq.non_negative_float, default=wq.env("WORKER_IDLE_TIMEOUT", "6"),
                        help="exit after this many seconds with no task; 0 = never "
                             "(env WORKER_IDLE_TIMEOUT, default %(default)s)")
    parser.add_argument("--max-deliveries", type=wq.bounded_int(1, failures.BROKER_DELIVERY_LIMIT),
                        default=wq.env("WORKER_MAX_DELIVERIES", "5"),
                        help="a quorum-queue task delivered this many times without an ack (its worker died, "
                             "lost its connection, or outlasted the broker's consumer_timeout) is moved to "
                             "<queue>.dead, not run again. At most 20: RabbitMQ 4 itself drops a message after 20 "
                             "(env WORKER_MAX_DELIVERIES, default %(default)s)")
    failures.add_retry_flags(parser)
    parser.add_argument("--blocked-timeout", type=wq.non_negative_float, default=wq.env("BLOCKED_TIMEOUT", "60"),
                        help="seconds to wait while the broker blocks this worker's publishing (retries and "
                             "dead letters) in a memory or disk alarm, before reconnecting "
                             "(env BLOCKED_TIMEOUT, default %(default)s)")
    parser.add_argument("--events", type=wq.events_file, default=wq.env("WORKER_EVENTS", "") or None,
                        metavar="FILE", help="append a JSON line per task attempt to FILE (env WORKER_EVENTS)")
    wq.add_connection_flags(parser)
    return parser.parse_args(argv)


def do_work(task: wq.Task) -> None:
    """The work itself. The demo sleeps; a real job system does its job here.

    Any exception it raises fails this attempt only: the worker retries the task later and carries on.
    """
    time.sleep(task.seconds)
    if task.attempt <= task.fail_attempts:
        raise RuntimeError(f"failing on purpose: attempt {task.attempt} of the first {task.fail_attempts} "
                           "that this task asks to fail")


class SubscriptionLost(Exception):
    """The broker cancelled this worker's consumer, or closed its channel: subscribe again on a new connection."""


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.dead_queue = wq.dead_letter_queue(args.queue)
        self.done: list[int | str] = []
        self.busy_seconds = 0.0
        self.failed_attempts = 0
        self.retried = 0
        self.dead_lettered = 0
        self.events = events.Writer(args.events)
        # Set by the first SIGINT, SIGTERM or SIGHUP: finish the current task, ack it, then exit.
        self.stopping = False

    def run(self) -> None:
        """Consume until idle or stopped, reconnecting whenever the connection or the subscription is lost."""
        pause = wq.RETRY_DELAY_FIRST
        while not self.stopping:
            connection = wq.connect(self.args.url, self.args.connect_timeout, self.name,
                                    stop_requested=lambda: self.stopping, opener=self.open_connection)
            if connection is None:
                return
            connected = time.monotonic()
            try:
                self.consume(connection)
                return
            except wq.CONNECTION_ERRORS as error:
                wq.log(self.name, f"connection lost ({self.why_closed(error)}); reconnecting")
            except SubscriptionLost as error:
                wq.log(self.name, f"{error}; subscribing again")
            finally:
                if connection.is_open:
                    connection.close()
            if time.monotonic() - connected > SHORT_LIVED_SECONDS:
                pause = wq.RETRY_DELAY_FIRST
            elif not self.stopping:
                wq.log(self.name, f"the last connection lasted under {SHORT_LIVED_SECONDS:g} s: "
                                  f"waiting {pause:.1f} s before the next")
                time.sleep(pause)
                pause = min(pause * 2, wq.RETRY_DELAY_MAX)

    def open_connection(self, parameters: pika.ConnectionParameters) -> pika.BlockingConnection:
        # While the broker blocks publishing, moving a message waits; past this, pika drops the connection.
        parameters.blocked_connection_timeout = self.args.blocked_timeout or None
        return pika.BlockingConnection(parameters)

    def consume(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        with wq.deadline(wq.setup_seconds(self.args.connect_timeout), "the worker declared its queues and subscribed",
                         "consumer.py", lambda: wq.log(self.name, self.summary())):
            self.channel = channel = connection.channel()
            wq.declare_queue(channel, self.args.queue, self.args.queue_type)
            wq.declare_queue(channel, self.dead_queue, self.args.queue_type)
            failures.declare_retry_queues(channel, self.args)
            # Fair dispatch: no new task until this one is acked, so a busy worker is never handed more.
            channel.basic_qos(prefetch_count=self.args.prefetch)
            try:
                self.consumer_tag = channel.basic_consume(self.args.queue, self.on_message)
            except pika.exceptions.ChannelClosedByBroker as error:
                raise wq.refusal(error, f"consume from queue {self.args.queue!r}") or error from None
        self.mover = failures.Mover(connection, self.name)
        self.keeper = wq.ConnectionKeeper(connection)
        self.last_task = time.monotonic()
        self.leaving = False
        connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)
        wq.log(self.name, f"waiting for tasks on {self.args.queue!r}")
        try:
            channel.start_consuming()  # returns once no consumer is left on the channel
        finally:
            self.keeper.close()
        if not self.leaving:
            raise SubscriptionLost(f"the broker cancelled this worker's subscription to {self.args.queue!r} "
                                   "(the queue was deleted, or its node was lost)")

    def leave(self) -> None:
        self.leaving = True
        self.channel.stop_consuming()

    def on_message(self, _channel, method, properties, body: bytes) -> None:
        if self.stopping:
            # Not started, not acked: stopping hands it back to the queue for another worker.
            self.leave()
            return
        self.handle(method, properties, body)
        self.last_task = time.monotonic()

    def stop_if_idle_or_asked(self) -> None:
        """Runs every POLL_SECONDS between tasks, on this thread: the connection's own timer."""
        idle = time.monotonic() - self.last_task
        if self.stopping:
            self.leave()
        elif self.args.idle_timeout and idle >= self.args.idle_timeout:
            wq.log(self.name, f"no task for {idle:.1f} s: exiting")
            self.leave()
        else:
            self.connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)

    def handle(self, method, properties, body: bytes) -> None:
        headers = properties.headers if isinstance(properties.headers, dict) else {}
        # The count first: a message that crashes every worker, however it does it, is parked in the end.
        earlier = failures.earlier_deliveries(headers, self.args.queue_type)
        if earlier is not None and earlier >= self.args.max_deliveries:
            self.park(method, properties, body, f"delivered {earlier} times without an ack: its worker died, lost "
                      f"its connection or outlasted the broker's consumer_timeout (--max-deliveries "
                      f"{self.args.max_deliveries})", earlier)
            return
        try:
            task = wq.parse_task(body, properties.content_type)
        except wq.BadTask as error:
            self.park(method, properties, body, str(error), earlier)
            return
        except Exception as error:  # whatever else a sender found: the message is parked, the worker lives
            self.park(method, properties, body, f"unreadable: {type(error).__name__}: {str(error)[:200]}", earlier)
            return
        if failed_before := failures.failures_so_far(headers):
            task = task._replace(attempt=failed_before + 1)
        wq.log(self.name, f"started {task.label} ({task.seconds:g} s{self.which_try(task, method, earlier)})")
        if self.events.path:  # made only for a file: the line would cost time between delivery and work
            self.note(events.started(self.name, task.task_id, task.seconds, task.attempt, properties.message_id,
                                     task.label))
        started, clock = time.time(), time.monotonic()
        failure: BaseException | None = None
        try:
            with self.keeper.working():  # heartbeats go on while the task runs
                try:
                    do_work(task)
                except (Exception, SystemExit) as error:  # a task calling sys.exit() has failed too
                    failure = error
                finished = time.time()
            if time.monotonic() - clock > wq.KEEPALIVE_INTERVAL:
                self.connection.process_data_events(0)  # read what the broker said while the task ran
            if self.taken_back():
                raise SubscriptionLost(f"the broker took {task.label} back after {time.monotonic() - clock:.1f} s "
                                       "while it ran, as it does when a task outlasts its consumer_timeout: not "
                                       "acked, counted or recorded, it will be done again")
            if failure is not None:
                self.retry_or_park(task, method, properties, body, failure, (started, finished), earlier)
                return
            # Only now does the broker forget the task. An ack must go on the channel that delivered it.
            self.channel.basic_ack(method.delivery_tag)
        except wq.CONNECTION_ERRORS as error:
            # The delivery tag died with the channel: no ack can be sent on a new one, so the broker
            # will hand this task out again.
            if failure is None:
                wq.log(self.name, f"finished {task.label} but could not ack it ({self.why_closed(error)}): "
                                  "it will be redelivered")
                self.record("done", task, properties, (started, finished), acked=False)
            else:
                wq.log(self.name, f"could not send {task.label} for a retry ({self.why_closed(error)}): "
                                  "it will be redelivered")
            raise
        self.done.append(task.task_id if task.task_id is not None else task.label)
        self.busy_seconds += finished - started
        wq.log(self.name, f"done {task.label} in {finished - started:.2f} s")
        self.record("done", task, properties, (started, finished), acked=True)

    def which_try(self, task: wq.Task, method, earlier: int | None) -> str:
        """', attempt 2' after a failure, ', delivery 3' after crashes: what a log line says of a repeat."""
        if task.attempt == 1 and not earlier and not method.redelivered:
            return ""
        words = [f"attempt {task.attempt}"] if task.attempt > 1 else []
        if earlier:
            words.append(f"delivery {earlier + 1}")
        elif earlier is None and method.redelivered:
            words.append("redelivered")  # a classic queue does not count deliveries
        return "".join(f", {word}" for word in words)

    def taken_back(self) -> bool:
        """Whether the broker took the delivery back while the task ran, as its consumer_timeout does.

        RabbitMQ 3.x closes the channel; 4.x cancels the consumer and leaves the channel open, and an ack
        sent then settles nothing. pika marks a consumer the broker cancelled as soon as it reads the
        frame, but calls a cancel callback only after this delivery's callback has returned: too late to
        hold back the ack. So we read pika's mark, which is private to pika 1.4 (pinned in
        requirements.txt); test_task_outlasting_the_consumer_timeout_is_taken_back_not_claimed fails if
        it changes.
        """
        if not self.channel.is_open:
            return self.connection.is_open
        consumer = self.channel._consumer_infos.get(self.consumer_tag)
        return consumer is None or consumer.cancelled_by_broker

    def retry_or_park(self, task: wq.Task, method, properties, body: bytes, failure: BaseException,
                      times: tuple[float, float], earlier: int | None) -> None:
        """A failed attempt: copy the task to a delay queue for its next attempt, or park it when none is left."""
        error = f"{type(failure).__name__}: {failure}"
        self.failed_attempts += 1
        wq.log(self.name, f"FAILED {task.label} on attempt {task.attempt}: {error}")
        # Where it failed, as lines of this worker's log, not as a crash: do_work's frames, not ours.
        for line in traceback.format_tb(failure.__traceback__.tb_next):
            for part in line.rstrip().splitlines():
                wq.log(self.name, f"    {part}")
        if task.attempt > self.args.retries:
            self.park(method, properties, body, f"failed {task.attempt} times (--retries {self.args.retries}); "
                      f"last error: {error}", earlier,
                      {failures.FAILURES_HEADER: task.attempt, failures.LAST_ERROR_HEADER: error[:500]})
            outcome = "parked"
        else:
            delay = failures.retry_delay(self.args, task.attempt)
            self.mover.move(properties, body, failures.retry_queue(self.args.queue, delay),
                            {failures.FAILURES_HEADER: task.attempt, failures.LAST_ERROR_HEADER: error[:500]})
            self.channel.basic_ack(method.delivery_tag)
            self.retried += 1
            wq.log(self.name, f"{task.label} will be retried in {delay:g} s "
                              f"(retry {task.attempt} of {self.args.retries})")
            outcome = f"retry in {delay:g} s"
        self.record("failed", task, properties, times, acked=True, error=error, outcome=outcome)

    def park(self, method, properties, body: bytes, reason: str, earlier: int | None,
             headers: dict | None = None) -> None:
        """Move a message we will not run (again) to the dead-letter queue, with the reason, instead of dropping it."""
        self.mover.move(properties, body, self.dead_queue, {
            **(headers or {}), wq.DEAD_REASON_HEADER: reason, "x-original-queue": self.args.queue,
            **({failures.DELIVERIES_HEADER: earlier + 1} if earlier is not None else {})})
        self.channel.basic_ack(method.delivery_tag)
        self.dead_lettered += 1
        wq.log(self.name, f"moved a message to {self.dead_queue!r}: {reason}")

    def record(self, kind: str, task: wq.Task, properties, times: tuple[float, float], acked: bool,
               **more) -> None:
        """An events line: when the work started and ended, and whether the broker has forgotten the task."""
        if self.events.path:
            self.note(events.attempt(kind, self.name, task.task_id, task.seconds, *times, acked, task.attempt,
                                     properties.message_id, task.label, **more))

    def note(self, event: str) -> None:
        problem = self.events.write(event)
        if problem:
            wq.log(self.name, problem)

    def why_closed(self, error: BaseException) -> str:
        if isinstance(error, pika.exceptions.ConnectionBlockedTimeout):
            return (f"the broker blocked it for {self.args.blocked_timeout:g} s: a memory or disk alarm; "
                    "the message being moved stays on the queue")
        return wq.describe(error)

    def summary(self) -> str:
        ids = ", ".join(map(str, self.done)) or "none"
        return (f"summary: {len(self.done)} task(s) done, {self.busy_seconds:.2f} s busy, task ids: {ids}; "
                f"{self.failed_attempts} failed attempt(s), {self.retried} sent to retry; "
                f"{self.dead_lettered} moved to {self.dead_queue!r}")


def stop_on_signals(worker: Worker) -> None:
    """First SIGINT/SIGTERM/SIGHUP: warm stop (finish and ack the current task). Second: exit at once."""
    def on_signal(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        # os.write, not print: a signal may arrive while the main thread is inside print.
        if worker.stopping:
            os.write(1, f"[{worker.name}] {name} again: exiting now, the current task is not acked\n".encode())
            os._exit(128 + signum)
        worker.stopping = True
        os.write(1, f"[{worker.name}] {name}: finishing the current task, then exiting "
                    f"(send it again to exit at once)\n".encode())
    # SIGHUP: the terminal window the worker runs in was closed.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)


def main(argv: list[str] | None = None) -> int:
    wq.show_any_text()
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
