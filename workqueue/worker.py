"""The worker: the work-queue pattern's consuming side, as consumer.py runs it.

    Worker(WorkerSettings(...), work=do_work).run()

One named method per protocol step, in the order they happen:
- declare_queues: the durable work queue (and the queues failures go to), declared as tutorial two does;
- subscribe: basic_qos(prefetch_count=1), then basic_consume: the broker hands this worker one task at a
  time, and the next only once it has acked the last (fair dispatch);
- on_delivery: decide what to do with the delivery (failures.decide), then run_task: the work itself;
- ack: basic_ack, on the channel that delivered the task, only after the work: a worker that dies
  mid-task loses nothing, the broker hands the task to another.
run() owns the rest: reconnecting, heartbeats during long tasks, idle timeouts and warm stops.
Errors the user must fix are raised as WorkQueueError subclasses (errors.py); nothing here exits the process.
"""

from __future__ import annotations

import contextlib
import time
import traceback
import uuid
from collections.abc import Callable

import pika
import pika.exceptions

from workqueue import _pika, events
from workqueue.connection import CONNECTION_ERRORS, UNANSWERED, Backoff, connect, describe, setup_seconds
from workqueue.errors import Unanswered
from workqueue.failures import ORIGINAL_QUEUE_HEADER, Mover, Park, Retry, after_failure, decide
from workqueue.output import IdRuns, log
from workqueue.settings import WorkerSettings, check_worker
from workqueue.task import Task
from workqueue.topology import Topology, backstop_advice, queue_gone, refusal

# How often, in seconds, an idle worker checks for a stop request and its idle timeout.
POLL_SECONDS = 0.2
# A connection that ends sooner than this after it was made counts as a failed attempt: the next
# reconnect waits, longer each time, so that a broker that keeps refusing us is not hammered.
SHORT_LIVED_SECONDS = 5.0


class SubscriptionLost(Exception):
    """The broker cancelled this worker's consumer, or closed its channel: subscribe again on a new connection."""


class Books:
    """What a worker did, for its summary line: counts, and the task ids done as runs (bounded)."""

    def __init__(self) -> None:
        self.done = 0
        self.ids = IdRuns()
        self.busy_seconds = 0.0
        self.failed_attempts = 0
        self.retried = 0
        self.parked = 0

    def summary(self, dead_queue: str) -> str:
        return (f"summary: {self.done} task(s) done, {self.busy_seconds:.2f} s busy, task ids: {self.ids}; "
                f"{self.failed_attempts} failed attempt(s), {self.retried} sent to retry; "
                f"{self.parked} moved to {dead_queue!r}")


class Worker:
    """Takes tasks from the work queue one at a time and runs `work(task)` on each; acks each only after it.

    `work` may raise: that attempt fails, and the task is retried later (settings.retry), then parked.
    run() returns when the worker was idle for settings.idle_timeout seconds or stop() was called; it raises
    WorkQueueError (Unreachable, Refused, QueueMismatch, Unanswered) for what the user must fix.
    """

    def __init__(self, settings: WorkerSettings, work: Callable[[Task], None]) -> None:
        """Raises SettingError (errors.UsageError) if a setting cannot work."""
        check_worker(settings)
        self.settings = settings
        self.work = work
        self.name = settings.name or f"worker-{uuid.uuid4().hex[:4]}"
        self.topology = Topology(settings.queue, settings.retry)
        self.books = Books()
        self.events = events.Writer(settings.events)
        self.stopping = False  # set by stop(): finish the current task, ack it, then leave
        self.advised = False  # the line on a queue without a backstop: once
        # The idle clock: when the last delivery was handled. None until the first: a worker started before the
        # publisher waits for the work, however long it takes a person to start it.
        self.last_task: float | None = None
        self.queue_gone_at_cancel: bool | None = None  # what note_a_cancel found, during the task in hand

    def stop(self) -> None:
        """Finish the tasks in hand (one, with prefetch 1) and ack them, then leave: safe to call from a signal
        handler or a thread."""
        self.stopping = True

    def summary(self) -> str:
        return self.books.summary(self.topology.dead)

    # ---------------------------------------------------------------- connecting, again when lost

    def run(self) -> None:
        """Consume until idle or stopped, reconnecting whenever the connection or the subscription is lost."""
        backoff = Backoff()
        while not self.stopping:
            connection = connect(self.settings.broker.urls, self.settings.broker.connect_timeout, self.name,
                                 opener=self.open_connection, stop_requested=lambda: self.stopping)
            if connection is None:
                return
            connected = time.monotonic()
            try:
                self.consume(connection)
                return
            except CONNECTION_ERRORS as error:
                if self.leaving:
                    return  # on its way out anyway: what it had, it ran (unsubscribe says why it is gone)
                log(self.name, f"connection lost ({self.why_closed(error)}); reconnecting")
            except SubscriptionLost as error:
                log(self.name, f"{error}; subscribing again")
            finally:
                self.close(connection)
            if time.monotonic() - connected > SHORT_LIVED_SECONDS:
                backoff.reset()
            elif not self.stopping:
                pause = backoff.next()
                log(self.name, f"the last connection lasted under {SHORT_LIVED_SECONDS:g} s: "
                               f"waiting {pause:.1f} s before the next")
                time.sleep(pause)

    def close(self, connection: pika.BlockingConnection) -> None:
        """Close the connection, waiting for the broker's answer no longer than the set-up may take: a frozen
        broker answers nothing, and pika's close waits for each channel's answer, then the connection's."""
        if connection.is_open:
            with _pika.Deadline(connection, setup_seconds(self.settings.broker.connect_timeout)), \
                    contextlib.suppress(*CONNECTION_ERRORS):
                connection.close()

    def open_connection(self, parameters: pika.ConnectionParameters) -> pika.BlockingConnection:
        # While the broker blocks publishing, moving a message waits; past this, pika drops the connection.
        parameters.blocked_connection_timeout = self.settings.broker.blocked_timeout or None
        self.parameters = parameters
        return pika.BlockingConnection(parameters)

    def consume(self, connection: pika.BlockingConnection) -> None:
        """Set up on a new connection, then take tasks until idle, stopped, or the subscription is lost."""
        self.connection = connection
        seconds = setup_seconds(self.settings.broker.connect_timeout)
        with _pika.Deadline(connection, seconds) as deadline:
            try:
                self.set_up()
            except CONNECTION_ERRORS:
                if deadline.expired:
                    raise Unanswered(f"the broker did not answer within {seconds:g} s while the worker declared "
                                     f"its queues and subscribed {UNANSWERED}") from None
                raise
        self.keeper = _pika.ConnectionKeeper(connection, after_serving=self.note_a_cancel)
        if self.last_task is not None:
            self.last_task = time.monotonic()  # a new connection: the tasks back on the queue come to it first
        self.leaving = False
        connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)
        log(self.name, f"waiting for tasks on {self.settings.queue.name!r}")
        try:
            self.channel.start_consuming()  # returns once no consumer is left on the channel
        finally:
            self.keeper.close()
        if not self.leaving:
            raise SubscriptionLost(self.why_cancelled())

    def set_up(self) -> None:
        self.declare_queues()
        frame_max, channel_max = _pika.negotiated(self.connection, self.parameters)
        single = channel_max == 1  # the broker allows this worker one channel: copies go on the consuming one
        if single:
            self.channel.confirm_delivery()
        broker = self.settings.broker
        self.mover = Mover(self.connection, self.name, frame_max, self.topology, self.channel if single else None,
                           deadline=broker.blocked_timeout + setup_seconds(broker.connect_timeout)
                           if broker.blocked_timeout else None)
        self.subscribe()

    def declare_queues(self) -> None:
        """The durable work queue as tutorial two declares it, with a backstop, and <queue>.dead and the retry
        queues."""
        self.channel = self.topology.declare(self.connection)
        if self.topology.backstop == "none" and self.settings.queue.type == "quorum" and not self.advised:
            self.advised = True
            log(self.name, backstop_advice(self.settings.queue))

    def subscribe(self) -> None:
        # Fair dispatch: no new task until this one is acked, so a busy worker is never handed more.
        self.channel.basic_qos(prefetch_count=self.settings.prefetch)
        try:
            self.consumer_tag = self.channel.basic_consume(self.settings.queue.name, self.on_delivery)
        except pika.exceptions.ChannelClosedByBroker as error:
            raise refusal(error, f"consume from queue {self.settings.queue.name!r}") or error from None
        self.unsubscribed = False
        self.kept: list[tuple] = []  # deliveries in hand when the subscription was cancelled: run, not handed back

    # ---------------------------------------------------------------- leaving

    def unsubscribe(self) -> None:
        """Cancel the subscription: the broker hands this worker nothing more. What it had handed over by then is
        kept, to be run (see _pika.cancel_keeping_deliveries): a worker that leaves never hands a task back,
        which a quorum queue would count as a delivery, bringing the task closer to being parked."""
        if not self.unsubscribed:
            self.unsubscribed = self.leaving = True
            seconds = setup_seconds(self.settings.broker.connect_timeout)
            with _pika.Deadline(self.connection, seconds) as deadline:
                try:
                    self.kept += _pika.cancel_keeping_deliveries(self.channel, self.consumer_tag)
                except CONNECTION_ERRORS:
                    if deadline.expired:
                        log(self.name, f"the broker did not answer within {seconds:g} s while this worker "
                                       "unsubscribed: leaving without its answer")
                    raise

    def stop_if_idle_or_asked(self) -> None:
        """Runs every POLL_SECONDS between tasks, on this thread: the connection's own timer."""
        idle = 0.0 if self.last_task is None else time.monotonic() - self.last_task
        if self.stopping:
            self.unsubscribe()
        elif self.settings.idle_timeout and idle >= self.settings.idle_timeout:
            log(self.name, f"no task for {idle:.1f} s: exiting")
            self.unsubscribe()
        else:
            self.connection.call_later(POLL_SECONDS, self.stop_if_idle_or_asked)
            return
        self.run_kept()

    def run_kept(self) -> None:
        while self.kept:
            self.handle(*self.kept.pop(0))

    def why_cancelled(self) -> str:
        """What the broker's cancel of this worker's subscription most likely means."""
        queue = self.settings.queue.name
        if queue_gone(self.connection, queue):
            return f"the queue {queue!r} was deleted: the broker cancelled this worker's subscription"
        return f"the broker cancelled this worker's subscription to {queue!r} (its node was lost, or it was deleted)"

    # ---------------------------------------------------------------- a delivery

    def on_delivery(self, _channel, method, properties, body: bytes) -> None:
        self.handle(method, properties, body)
        self.run_kept()

    def handle(self, method, properties, body: bytes) -> None:
        self.last_task = time.monotonic()  # the idle clock runs from the first delivery, whatever becomes of it
        headers = properties.headers if isinstance(properties.headers, dict) else {}
        decision = decide(body, headers, properties.content_type, self.settings.queue.type,
                          self.settings.max_deliveries)
        if isinstance(decision, Park):
            self.park(method, properties, body, decision)
        else:
            task = decision.task._replace(message_id=properties.message_id)
            self.run_task(task, decision.earlier, method, properties, body)
        self.last_task = time.monotonic()

    def run_task(self, task: Task, earlier: int | None, method, properties, body: bytes) -> None:
        """Run the work, then ack the task, or send it to retry, or park it."""
        log(self.name, f"started {task.label} ({task.seconds:g} s{self.which_try(task, method, earlier)})")
        if self.events.path:  # made only for a file: the line would cost time between delivery and work
            self.note(events.started(self.name, task.task_id, task.seconds, task.attempt, properties.message_id,
                                     task.label))
        started, clock = time.time(), time.monotonic()
        failure: BaseException | None = None
        self.queue_gone_at_cancel: bool | None = None
        try:
            with self.keeper:  # heartbeats go on while the task runs
                try:
                    self.work(task)
                except (Exception, SystemExit) as error:  # a task calling sys.exit() has failed too
                    failure = error
                finished = time.time()
            if time.monotonic() - clock > _pika.KEEPALIVE_INTERVAL:
                self.connection.process_data_events(0)  # read what the broker said while the task ran
            if self.taken_back():
                raise SubscriptionLost(self.why_taken_back(task, properties, (started, finished), failure))
            if failure is not None:
                self.retry_or_park(task, earlier, method, properties, body, failure, (started, finished))
                return
            self.ack(method)
        except CONNECTION_ERRORS as error:
            # The delivery tag died with the channel: no ack can be sent on a new one, so the broker
            # will hand this task out again.
            if failure is None:
                log(self.name, f"finished {task.label} but could not ack it ({self.why_closed(error)}): "
                               "it will be redelivered")
                self.record("done", task, properties, (started, finished), acked=False)
            else:
                log(self.name, f"could not send {task.label} for a retry ({self.why_closed(error)}): "
                               "it will be redelivered")
            raise
        self.books.done += 1
        self.books.ids.add(task.task_id)
        self.books.busy_seconds += finished - started
        log(self.name, f"done {task.label} in {finished - started:.2f} s")
        self.record("done", task, properties, (started, finished), acked=True)

    def ack(self, method) -> None:
        # A worker on its way out cancels its subscription first: then the ack frees no room the broker would
        # fill with a task this worker will not run.
        if self.stopping:
            self.unsubscribe()
        # Only now does the broker forget the task. An ack must go on the channel that delivered it.
        self.channel.basic_ack(method.delivery_tag)

    def which_try(self, task: Task, method, earlier: int | None) -> str:
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
        """Whether the broker took the delivery back while the task ran: its queue was deleted, or the task
        outlasted its consumer_timeout. RabbitMQ 3.x closes the channel for a timeout; 4.x cancels the consumer
        and leaves the channel open, and an ack sent then settles nothing (see _pika.consumer_cancelled; if pika
        cannot tell, the ack goes out)."""
        if not self.channel.is_open:
            return self.connection.is_open
        return not self.unsubscribed and bool(_pika.consumer_cancelled(self.channel, self.consumer_tag))

    def note_a_cancel(self) -> None:
        """While a task runs, on the keeper's thread in its turn: when the broker's cancel comes, look at once
        whether the queue is gone, before another worker can declare it again."""
        if self.queue_gone_at_cancel is None and _pika.consumer_cancelled(self.channel, self.consumer_tag):
            self.queue_gone_at_cancel = queue_gone(self.connection, self.settings.queue.name)

    def why_taken_back(self, task: Task, properties, times: tuple[float, float], failure: BaseException | None) -> str:
        """Name what took the task back, and record the work done when it will not be done again."""
        queue = self.settings.queue.name
        gone = self.queue_gone_at_cancel
        if gone if gone is not None else queue_gone(self.connection, queue):
            if failure is not None:
                return f"the queue {queue!r} was deleted while {task.label} ran, and failed: the task went with it"
            self.record("done", task, properties, times, acked=False)
            return (f"the queue {queue!r} was deleted while {task.label} ran: the work done is recorded, but not "
                    "acked (the task went with its queue)")
        return (f"the broker took {task.label} back after {times[1] - times[0]:.1f} s while it ran, as it does when "
                "a task outlasts its consumer_timeout: not acked, counted or recorded, it will be done again")

    # ---------------------------------------------------------------- what failed

    def retry_or_park(self, task: Task, earlier: int | None, method, properties, body: bytes,
                      failure: BaseException, times: tuple[float, float]) -> None:
        """A failed attempt: copy the task to a delay queue for its next attempt, or park it when none is left."""
        error = f"{type(failure).__name__}: {failure}"
        self.books.failed_attempts += 1
        log(self.name, f"FAILED {task.label} on attempt {task.attempt}: {error}")
        # Where it failed, as lines of this worker's log, not as a crash: the work's frames, not ours.
        for line in traceback.format_tb(failure.__traceback__.tb_next):
            for part in line.rstrip().splitlines():
                log(self.name, f"    {part}")
        decision = after_failure(task, error, self.settings.retry, earlier)
        if isinstance(decision, Retry):
            self.mover.move(properties, body, self.topology.retry_queue(decision.delay), decision.headers)
            self.ack(method)
            self.books.retried += 1
            log(self.name, f"{task.label} will be retried in {decision.delay:g} s "
                           f"(retry {task.attempt} of {self.settings.retry.retries})")
            outcome = f"retry in {decision.delay:g} s"
        else:
            self.park(method, properties, body, decision, task)
            outcome = "parked"
        self.record("failed", task, properties, times, acked=True, error=error, outcome=outcome)

    def park(self, method, properties, body: bytes, decision: Park, task: Task | None = None) -> None:
        """Move a message we will not run (again) to the dead-letter queue, with the reason, instead of dropping it."""
        self.mover.move(properties, body, self.topology.dead,
                        {**decision.headers, ORIGINAL_QUEUE_HEADER: self.settings.queue.name})
        self.ack(method)
        self.books.parked += 1
        log(self.name, f"moved a message to {self.topology.dead!r}: {decision.reason}")
        if self.events.path:
            self.note(events.parked(self.name, task.task_id if task else None, properties.message_id,
                                    task.label if task else None, decision.reason))

    # ---------------------------------------------------------------- the books

    def record(self, kind: str, task: Task, properties, times: tuple[float, float], acked: bool, **more) -> None:
        """An events line: when the work started and ended, and whether the broker has forgotten the task."""
        if self.events.path:
            self.note(events.attempt(kind, self.name, task.task_id, task.seconds, *times, acked, task.attempt,
                                     properties.message_id, task.label, **more))

    def note(self, event: str) -> None:
        problem = self.events.write(event)
        if problem:
            log(self.name, problem)

    def why_closed(self, error: BaseException) -> str:
        if isinstance(error, pika.exceptions.ConnectionBlockedTimeout):
            return (f"the broker blocked it for {self.settings.broker.blocked_timeout:g} s: a memory or disk alarm; "
                    "the message being moved stays on the queue")
        return describe(error)
