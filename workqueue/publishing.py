"""The publisher: the work-queue pattern's sending side, as publisher.py runs it.

    publisher = Publisher(PublisherSettings(...))
    publisher.publish(tasks, total)   # then publisher.outcome says what became of each task

One named method per protocol step, in the order they happen on a connection (pika's asynchronous adapter):
- declare_queue: the durable work queue, declared as tutorial two declares it;
- on_queue_declareok: turn on publisher confirms: the broker then confirms each message it has safely taken;
- publish_more: persistent messages (delivery_mode 2), up to CONFIRM_WINDOW of them awaiting their confirm;
- on_confirm: a confirm (often for many tasks at once) settles them, and lets more go.
Waiting for each confirm in turn would cost a round trip per task; the window keeps the broker busy.
publish() owns the rest: reconnecting (tasks not yet confirmed go again), signals and deadlines. It raises
WorkQueueError subclasses for what the user must fix; it never exits the process.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

import pika
import pika.exceptions
import pika.spec

from workqueue import _pika, events
from workqueue.connection import UNANSWERED, Backoff, connect, describe, open_async, setup_seconds
from workqueue.errors import Unanswered, WorkQueueError
from workqueue.output import IdRuns, log, write
from workqueue.settings import PublisherSettings, Queue, check_publisher
from workqueue.task import Task, encode, run_prefix
from workqueue.topology import (
    DECLARATIONS,
    dead_letter_queue,
    declaration_arguments,
    lacks_backstop,
    mismatch,
    refusal,
    work_queue_arguments,
)

WHO = "publisher"
# Tasks sent but not yet confirmed, at most: enough to keep the broker busy, bounded in memory.
CONFIRM_WINDOW = 1000
# Tasks never sent that are named, at most, when a run ends early; the rest are not even made, but counted.
NAMED_UNSENT = 100_000
# Up to this many tasks, one line per task; beyond, a progress line on a terminal.
PER_TASK_LINES = 100
# Reconnections to another node, or the same one back, before giving up on the remaining tasks.
MAX_RECONNECTS = 10
# How often the progress line is redrawn, in seconds.
PROGRESS_INTERVAL = 0.2
# After SIGINT or SIGTERM, how long to wait for the confirms of tasks already sent before leaving, in seconds.
INTERRUPT_GRACE_SECONDS = 5.0
# How long, in seconds, to wait for the broker's answer to a close before leaving without it.
CLOSE_SECONDS = 2.0
# How often, in seconds, the publishing loop looks whether a signal asked it to stop, or the broker went silent.
SIGNAL_CHECK_SECONDS = 0.1

T = TypeVar("T")


def settle(in_flight: dict[int, T], delivery_tag: int, multiple: bool) -> list[T]:
    """The tasks a confirm settles, taken out of `in_flight` (delivery tag -> task, in tag order).

    A confirm with `multiple` settles every tag up to its own; without, only its own (AMQP 0-9-1, confirm.select).
    """
    tags = list(itertools.takewhile(lambda tag: tag <= delivery_tag, in_flight)) if multiple else [delivery_tag]
    return [in_flight.pop(tag) for tag in tags if tag in in_flight]


def runs_text(runs: Iterable[tuple[int, int] | list[int]]) -> str:
    """Runs of ids, [first, last] each, in any order, as one line: [[1, 3], [7, 7]] -> '1-3, 7'."""
    merged: list[list[int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in merged)


class Outcome:
    """What became of each task, every task exactly once; prints what the user should see as it happens."""

    def __init__(self, total: int, events_path: str | None) -> None:
        self.total = total
        self.confirmed = 0
        self.failed_runs: list[list[int]] = []  # [first, last] ids: millions of failures stay small
        self.failures = 0
        self.republished = 0
        self.seconds = 0.0  # work in the tasks confirmed so far
        self.events = events.Writer(events_path)
        self.per_task_lines = total <= PER_TASK_LINES
        self.progress = not self.per_task_lines and sys.stdout.isatty()
        self.drawn_at = 0.0

    def confirm(self, tasks: list[tuple[Task, str]]) -> None:
        """Tasks the broker has confirmed, each with its message id; often hundreds at once."""
        self.confirmed += len(tasks)
        self.seconds += sum(task.seconds for task, _ in tasks)
        if self.per_task_lines:
            for task, _ in tasks:
                log(WHO, f"sent task {task.task_id} ({task.seconds:g} s): confirmed")
        if tasks and self.events.path:
            problem = self.events.write("\n".join(events.published(task.task_id, task.seconds, message_id)
                                                  for task, message_id in tasks))
            if problem:
                self.end_progress_line()
                log(WHO, f"{problem} ({len(tasks)} task(s) not recorded)")
        self.draw_progress()

    def fail(self, task: Task, problem: str | None) -> None:
        """A task not confirmed, and why, in a line of its own (unless `problem` is None: a line for many)."""
        self.failures += 1
        if self.failed_runs and self.failed_runs[-1][1] == task.task_id - 1:
            self.failed_runs[-1][1] = task.task_id
        else:
            self.failed_runs.append([task.task_id, task.task_id])
        if problem and (self.per_task_lines or self.failures <= PER_TASK_LINES):
            self.end_progress_line()
            log(WHO, f"task {task.task_id} ({task.seconds:g} s): NOT confirmed, {problem}")

    def failed_ids(self) -> str:
        """Every task not confirmed, as runs of ids: thousands of them still fit on one line."""
        return runs_text(self.failed_runs)

    def draw_progress(self) -> None:
        now = time.monotonic()
        if self.progress and (now - self.drawn_at >= PROGRESS_INTERVAL or self.confirmed == self.total):
            self.drawn_at = now
            write(f"\r[{WHO}] {self.confirmed} of {self.total} tasks confirmed")

    def end_progress_line(self) -> None:
        if self.progress and self.drawn_at:
            write("\n")
            self.drawn_at = 0.0


class Tasks:
    """The tasks still to send: first those to send again after a lost connection, then the new ones."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self.fresh = iter(tasks)
        self.taken = 0  # new tasks taken (made) so far
        self.all_taken = False  # the last new task has been taken
        self.again: deque[Task] = deque()
        self.prefix = run_prefix()

    def next(self) -> Task | None:
        if self.again:
            return self.again.popleft()
        if not self.all_taken:
            task = next(self.fresh, None)
            if task is not None:
                self.taken += 1
                return task
            self.all_taken = True
        return None

    def left(self) -> bool:
        return bool(self.again) or not self.all_taken

    def rest(self) -> Iterator[Task]:
        while (task := self.next()) is not None:
            yield task

    def sent_before(self) -> Iterator[Task]:
        """The tasks waiting to be sent again: sent on a connection that went before confirming them."""
        while self.again:
            yield self.again.popleft()

    def message_id(self, task: Task) -> str:
        # The same id for the same task, sent again or not: a worker can tell a copy from a new task.
        return f"{self.prefix}.{task.task_id}"


def guarded(callback):
    """Our callbacks run inside pika's I/O loop, which takes any exception as a lost connection and would
    have everything sent again: an error of our own stops the run instead, and is named."""
    @functools.wraps(callback)
    def run(self: ConfirmWindow, *args):
        try:
            return callback(self, *args)
        except Exception as error:
            self.fatal = WorkQueueError(f"internal error in {callback.__name__}: {type(error).__name__}: {error}")
            self.close()
    return run


class ConfirmWindow:
    """Publishes tasks on one connection, up to CONFIRM_WINDOW of them waiting for the broker's confirm."""

    def __init__(self, connection: pika.SelectConnection, settings: PublisherSettings, tasks: Tasks,
                 outcome: Outcome, signals) -> None:
        self.connection = connection
        # How the work queue is declared: topology.DECLARATIONS, in turn, while the broker refuses only the
        # backstop's arguments.
        self.ways = DECLARATIONS if settings.queue.type == "quorum" else ("none",)
        self.way = 0
        self.settings = settings
        self.signals = signals
        self.tasks = tasks
        self.outcome = outcome
        self.channel = None
        self.next_tag = 1
        self.in_flight: dict[int, tuple[Task, str]] = {}  # delivery tag -> task, message id
        self.returned: set[str] = set()  # message ids the broker could not route
        self.closing = False
        self.interrupted = False  # SIGINT or SIGTERM: send nothing more, wait a little for the confirms
        self.blocked = False  # a resource alarm: waiting is --blocked-timeout's business
        self.heard_from_broker = time.monotonic()  # the last confirm
        self.lost: BaseException | None = None
        self.fatal: WorkQueueError | None = None
        self.setup_seconds = setup_seconds(settings.broker.connect_timeout)
        self.publisher: _pika.FramePublisher | None = None  # once confirms are on

    def run(self) -> None:
        """Publish until every task is confirmed or failed, or the connection is lost, or a signal came.

        Afterwards `tasks` holds what still needs publishing (on a new connection), and `lost` why.
        """
        self.connection.add_on_close_callback(self.on_connection_closed)
        self.connection.add_on_connection_blocked_callback(self.on_blocked)
        self.connection.add_on_connection_unblocked_callback(self.on_unblocked)
        self.connection.channel(on_open_callback=self.declare_queue)
        self.connection.ioloop.call_later(SIGNAL_CHECK_SECONDS, self.watch)
        # A broker that never answers the set-up (a quorum queue left without a leader) must not hang us.
        self.setup_deadline = self.connection.ioloop.call_later(self.setup_seconds, self.on_setup_deadline)
        try:
            self.connection.ioloop.start()
        finally:
            # Tasks the broker never confirmed go out again: they may or may not have reached the queue.
            for task, _ in reversed(self.in_flight.values()):
                self.tasks.again.appendleft(task)
        if self.fatal:
            raise self.fatal

    @guarded
    def declare_queue(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self.on_channel_closed)
        channel.add_on_return_callback(self.on_return)  # the tasks are mandatory: see _pika.FramePublisher
        queue = self.settings.queue
        channel.queue_declare(queue.name, callback=self.on_queue_declareok,
                              **declaration_arguments(queue, self.ways[self.way]))

    @guarded
    def on_queue_declareok(self, _frame) -> None:
        if self.ways[self.way] == "ours":
            # The backstop's target must exist, or what the broker parks waits in the work queue's own books.
            dead = Queue(dead_letter_queue(self.settings.queue.name), self.settings.queue.type)
            self.channel.queue_declare(dead.name, durable=True, arguments=work_queue_arguments(dead, backstop=False),
                                       callback=self.on_dead_letter_queue_declareok)
        else:
            self.on_dead_letter_queue_declareok(None)

    @guarded
    def on_dead_letter_queue_declareok(self, _frame) -> None:
        self.channel.confirm_delivery(ack_nack_callback=self.on_confirm, callback=self.on_confirm_selectok)

    @guarded
    def on_confirm_selectok(self, _frame) -> None:
        self.connection.ioloop.remove_timeout(self.setup_deadline)
        self.heard_from_broker = time.monotonic()
        self.publisher = _pika.FramePublisher(self.channel, self.settings.queue.name)
        self.publish_more()

    def on_setup_deadline(self) -> None:
        self.fatal = Unanswered(f"the broker did not answer within {self.setup_seconds:g} s while the publisher "
                                f"declared queue {self.settings.queue.name!r} and turned on confirms {UNANSWERED}")
        self.abandon()

    def abandon(self) -> None:
        """Leave without closing: a broker that does not answer would not answer a close either (pika
        closes each channel, and waits for each, before the connection). Exiting drops the socket."""
        self.closing = True
        self.connection.ioloop.stop()

    @guarded
    def on_return(self, _channel, _method, properties, _body) -> None:
        self.returned.add(properties.message_id)

    def publish_more(self) -> None:
        """Persistent messages, until CONFIRM_WINDOW of them await their confirm; then wait for confirms."""
        sendable = self.channel.is_open and not self.closing  # basic_publish's own check, once per window
        while sendable and not self.interrupted and len(self.in_flight) < CONFIRM_WINDOW:
            task = self.tasks.next()
            if task is None:
                break
            message_id = self.tasks.message_id(task)
            self.in_flight[self.next_tag] = (task, message_id)
            self.next_tag += 1
            self.publisher.add(*encode(task, message_id))
        self.publisher.send()
        if not self.in_flight and (self.interrupted or not self.tasks.left()):
            self.close()

    @guarded
    def on_confirm(self, frame) -> None:
        """The broker has (ack) or will never have (nack) the tasks up to this tag, or just this one."""
        self.heard_from_broker = time.monotonic()
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        confirmed = []
        for task, message_id in settle(self.in_flight, method.delivery_tag, method.multiple):
            if not acked:
                self.outcome.fail(task, "rejected by the broker")
            elif message_id in self.returned:
                self.returned.discard(message_id)
                self.outcome.fail(task, "unroutable: no queue took it")
            else:
                confirmed.append((task, message_id))
        self.outcome.confirm(confirmed)
        self.publish_more()

    @guarded
    def watch(self) -> None:
        """Every SIGNAL_CHECK_SECONDS: a signal, or a broker that has stopped confirming?

        SIGINT or SIGTERM: send nothing more, and leave once the tasks already sent are confirmed, or after
        INTERRUPT_GRACE_SECONDS (then CLOSE_SECONDS at most for the broker's answer to the close). A second signal:
        leave now. No confirm for twice the set-up time while tasks wait for one, and the connection not blocked:
        give up, naming those tasks.
        """
        signals = self.signals()
        if signals >= 2:
            self.abandon()  # a second signal: now, not once the broker has answered a close
            return
        if signals and not self.in_flight:
            self.close()
            return
        if signals and not self.interrupted:
            self.interrupted = True
            log(WHO, f"interrupted: sending no more tasks; waiting up to {INTERRUPT_GRACE_SECONDS:g} s for "
                     f"the confirms of {len(self.in_flight)} task(s) already sent")
            self.connection.ioloop.call_later(INTERRUPT_GRACE_SECONDS, self.close)
        silence = 2 * self.setup_seconds
        if self.in_flight and not self.blocked and time.monotonic() - self.heard_from_broker > silence:
            self.fatal = Unanswered(f"the broker confirmed nothing for {silence:g} s while {len(self.in_flight)} "
                                    "task(s) waited; giving up")
            self.abandon()
            return
        self.connection.ioloop.call_later(SIGNAL_CHECK_SECONDS, self.watch)

    def on_channel_closed(self, _channel, reason: BaseException) -> None:
        if self.publisher is None and self.way + 1 < len(self.ways) and lacks_backstop(reason) and not self.closing:
            # A queue made without our backstop (by the tutorial, an earlier release, or with one of its own):
            # declared the next way, and used as it is.
            self.way += 1
            self.connection.channel(on_open_callback=self.declare_queue)
            return
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == 406:
            self.fatal = mismatch(self.settings.queue, reason.reply_text)
        elif refused := refusal(reason, f"declare or publish to queue {self.settings.queue.name!r}"):
            self.fatal = refused
        elif not self.closing:
            self.lost = reason
        self.close()

    def on_unblocked(self, _connection, _frame) -> None:
        self.blocked = False
        self.heard_from_broker = time.monotonic()
        log(WHO, "the broker unblocked publishing; carrying on")

    def on_blocked(self, _connection, frame) -> None:
        self.blocked = True
        self.outcome.end_progress_line()
        log(WHO, f"the broker blocked publishing ({frame.method.reason}: a resource alarm); "
                 f"waiting up to {self.settings.broker.blocked_timeout:g} s for it to clear")

    def on_connection_closed(self, connection, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ConnectionBlockedTimeout):
            # Reconnecting would only be blocked again: the broker is short of memory or disk.
            self.fatal = WorkQueueError(f"the broker blocked publishing for {self.settings.broker.blocked_timeout:g} s "
                                        "(a memory or disk alarm on the broker); gave up")
        elif not self.closing and not self.lost:
            self.lost = reason
        connection.ioloop.stop()

    def close(self) -> None:
        """Close the connection; leave without the broker's answer if it does not come within CLOSE_SECONDS,
        or at once if the broker blocks this connection (in a resource alarm it reads nothing from it)."""
        if not self.closing:
            self.closing = True
            if self.blocked:
                self.abandon()
            elif self.connection.is_open:
                self.connection.close()
                self.connection.ioloop.call_later(CLOSE_SECONDS, self.abandon)


class Publisher:
    """Publishes tasks to the work queue, each confirmed by the broker, across lost connections.

    publish() returns when every task is confirmed or named as not confirmed in `outcome`, or raises
    WorkQueueError (Unreachable, Refused, QueueMismatch, Unanswered); account_for_every_task() then names the
    tasks not confirmed and prints the summary.
    """

    def __init__(self, settings: PublisherSettings) -> None:
        """Raises SettingError (errors.UsageError) if a setting cannot work."""
        check_publisher(settings)
        self.settings = settings
        self.window: ConfirmWindow | None = None
        self.gave_up: str | None = None  # why tasks were left unsent, if they were
        self.interrupted: str | None = None
        self.signals = 0
        self.started = time.monotonic()
        self.outcome: Outcome | None = None
        self.tasks: Tasks | None = None

    def interrupt(self, signal_name: str) -> None:
        """SIGINT or SIGTERM: send nothing more; a second time: leave now. Only a note, read by the I/O loop:
        a signal must not cut a callback in half, or a task would be neither confirmed nor named."""
        self.interrupted = signal_name
        self.signals += 1

    def publish(self, tasks: Iterable[Task], total: int) -> None:
        """Publish the tasks (`total` of them), reconnecting when the connection is lost. Afterwards `gave_up`
        says why tasks were left unsent, if any were (interrupted, or too many lost connections)."""
        self.gave_up = self.publish_all(tasks, total)

    def publish_all(self, tasks: Iterable[Task], total: int) -> str | None:
        self.outcome = Outcome(total, self.settings.events)
        self.tasks = Tasks(tasks)
        broker = self.settings.broker
        backoff = Backoff()
        for attempt in range(MAX_RECONNECTS + 1):
            connection = connect(broker.urls, broker.connect_timeout, WHO,
                                 opener=lambda parameters: open_async(parameters, broker.blocked_timeout),
                                 stop_requested=lambda: bool(self.interrupted))
            if connection is None or self.interrupted:
                if connection is not None:
                    connection.close()
                return f"interrupted by {self.interrupted}"
            self.window = ConfirmWindow(connection, self.settings, self.tasks, self.outcome, lambda: self.signals)
            if attempt == 0:
                self.started = time.monotonic()  # the rate counts publishing, not connecting
            confirmed_before = self.outcome.confirmed
            self.window.run()
            if self.interrupted:
                return f"interrupted by {self.interrupted}"
            if not self.tasks.left():
                return None
            self.outcome.end_progress_line()
            log(WHO, f"connection lost ({describe(self.window.lost)}); reconnecting to publish the task(s) not "
                     f"confirmed yet: {len(self.window.in_flight)} sent already, which may reach the queue twice")
            self.outcome.republished += len(self.window.in_flight)
            if self.outcome.confirmed == confirmed_before:  # no progress: do not hammer the broker
                pause = backoff.next()
                log(WHO, f"nothing was confirmed on that connection: waiting {pause:.1f} s")
                time.sleep(pause)
        return f"the connection was lost {MAX_RECONNECTS + 1} times"

    def account_for_every_task(self, error: WorkQueueError | None = None) -> bool:
        """Name every task not confirmed, then the summary line; whether every task was confirmed.

        `error`: what publish() raised, if it did; if nothing was sent at all, the error says it all and
        nothing is printed here.
        """
        if error is not None and self.window is None:
            return False
        outcome = self.outcome
        outcome.end_progress_line()
        why = self.gave_up if error is None else "gave up, see the error"
        for task in self.tasks.sent_before():
            outcome.fail(task, f"sent but never confirmed ({why}): it may or may not be on the queue")
        unsent, never_sent = IdRuns(), 0
        for task in itertools.islice(self.tasks.rest(), NAMED_UNSENT):
            outcome.fail(task, None)
            unsent.add(task.task_id)
            never_sent += 1
        unmade = max(outcome.total - self.tasks.taken, 0) if not self.tasks.all_taken else 0
        outcome.failures += unmade
        if never_sent or unmade:
            more = f", and the {unmade:,} after them, never made" if unmade else ""
            log(WHO, f"{never_sent + unmade} task(s) never sent ({why}): {unsent}{more}")
        outcome.end_progress_line()
        elapsed = time.monotonic() - self.started
        rate = f", {outcome.confirmed / elapsed:,.0f} tasks/s" if outcome.confirmed and elapsed > 0 else ""
        again = f"; {outcome.republished} sent again after a lost connection" if outcome.republished else ""
        log(WHO, f"{outcome.confirmed} of {outcome.total} tasks confirmed on queue {self.settings.queue.name!r} "
                 f"({outcome.seconds:g} s of work) in {elapsed:.2f} s{rate}{again}")
        if outcome.failures:
            log(WHO, f"NOT confirmed: task(s) {outcome.failed_ids()}" + (f" and {unmade:,} more" if unmade else ""))
        return not outcome.failures

