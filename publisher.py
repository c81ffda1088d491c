#!/usr/bin/env python3
"""Put tasks on the durable work queue: persistent messages, each one confirmed by the broker."""

from __future__ import annotations

import argparse
import functools
import itertools
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pika.frame
import pika.spec

import events
import workqueue as wq

WHO = "publisher"
# Tasks sent but not yet confirmed, at most: enough to keep the broker busy, bounded in memory.
CONFIRM_WINDOW = 1000
# Up to this many tasks, one line per task; beyond, a progress line on a terminal.
PER_TASK_LINES = 100
# Reconnections to another node, or the same one back, before giving up on the remaining tasks.
MAX_RECONNECTS = 10
# How often the progress line is redrawn, in seconds.
PROGRESS_INTERVAL = 0.2
# After SIGINT or SIGTERM, how long to wait for the confirms of tasks already sent before leaving.
INTERRUPT_GRACE_SECONDS = 5.0
# How often, in seconds, the publishing loop looks whether a signal asked it to stop, or the broker went silent.
SIGNAL_CHECK_SECONDS = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=wq.bounded_int(0), default=wq.env("TASK_COUNT", "10"),
                        help="how many tasks (env TASK_COUNT, default %(default)s)")
    parser.add_argument("--min-seconds", type=wq.seconds_value, default=wq.env("TASK_MIN_SECONDS", "1"),
                        help="shortest random duration (env TASK_MIN_SECONDS, default %(default)s)")
    parser.add_argument("--max-seconds", type=wq.seconds_value, default=wq.env("TASK_MAX_SECONDS", "5"),
                        help="longest random duration (env TASK_MAX_SECONDS, default %(default)s)")
    parser.add_argument("--seed", type=int, default=wq.env("TASK_SEED", "") or None,
                        help="random seed, for the same durations every run (env TASK_SEED)")
    parser.add_argument("--durations", type=duration_list, default=wq.env("TASK_DURATIONS", "") or None,
                        help="exact durations, e.g. 3,1,4.5; overrides --count and the min/max "
                             "(env TASK_DURATIONS)")
    parser.add_argument("--blocked-timeout", type=wq.non_negative_float, default=wq.env("BLOCKED_TIMEOUT", "60"),
                        help="seconds to wait while the broker blocks publishing (a memory or disk alarm) "
                             "before giving up (env BLOCKED_TIMEOUT, default %(default)s)")
    parser.add_argument("--flaky", type=wq.bounded_int(0), default=wq.env("TASK_FLAKY", "0"),
                        help="this many of the tasks, drawn at random, fail their first attempt on purpose, to "
                             "show retries (env TASK_FLAKY, default %(default)s)")
    parser.add_argument("--events", type=wq.events_file, default=wq.env("TASK_EVENTS", "") or None, metavar="FILE",
                        help="append a JSON line per confirmed task to FILE, for report.py (env TASK_EVENTS)")
    wq.add_connection_flags(parser)
    args = parser.parse_args(argv)
    if args.min_seconds > args.max_seconds:
        parser.error(f"--min-seconds {args.min_seconds:g} is more than --max-seconds {args.max_seconds:g}")
    return args


def duration_list(text: str) -> list[float]:
    parts = text.split(",")
    if not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text!r}")
    return [wq.seconds_value(part.strip()) for part in parts]


def task_count(args: argparse.Namespace) -> int:
    return len(args.durations) if args.durations is not None else args.count


def planned_tasks(args: argparse.Namespace) -> Iterator[tuple[int, float]]:
    """(task id, seconds) for each task, made as they are sent: 500,000 tasks need no list in memory."""
    if args.durations is not None:
        yield from enumerate(args.durations, start=1)
        return
    rng = random.Random(args.seed)
    for task_id in range(1, args.count + 1):
        yield task_id, round(rng.uniform(args.min_seconds, args.max_seconds), 2)


def flaky_tasks(args: argparse.Namespace) -> set[int]:
    """The ids of the --flaky tasks, drawn with their own random numbers so the durations stay the same."""
    total = task_count(args)
    return set(random.Random(args.seed).sample(range(1, total + 1), min(args.flaky, total)))


class Outcome:
    """What became of each task, every task exactly once; prints what the user should see."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args = args
        self.total = total
        self.confirmed = 0
        self.failed_runs: list[list[int]] = []  # [first, last] ids: millions of failures stay small
        self.failures = 0
        self.republished = 0
        self.seconds = 0.0  # work in the tasks taken so far
        self.events = events.Writer(args.events)
        self.per_task_lines = total <= PER_TASK_LINES
        self.progress = not self.per_task_lines and sys.stdout.isatty()
        self.drawn_at = 0.0

    def confirm(self, tasks: list[tuple[int, float, str]]) -> None:
        """Tasks the broker has confirmed: (task id, seconds, message id) each; often hundreds at once."""
        self.confirmed += len(tasks)
        if self.per_task_lines:
            for task_id, seconds, _ in tasks:
                wq.log(WHO, f"sent task {task_id} ({seconds:g} s): confirmed")
        if tasks and self.events.path:
            problem = self.events.write("\n".join(events.published(*task) for task in tasks))
            if problem:
                self.end_progress_line()
                wq.log(WHO, f"{problem} ({len(tasks)} task(s) not recorded)")
        self.draw_progress()

    def fail(self, task_id: int, seconds: float, problem: str) -> None:
        self.failures += 1
        if self.failed_runs and self.failed_runs[-1][1] == task_id - 1:
            self.failed_runs[-1][1] = task_id
        else:
            self.failed_runs.append([task_id, task_id])
        if self.per_task_lines or self.failures <= PER_TASK_LINES:
            self.end_progress_line()
            wq.log(WHO, f"task {task_id} ({seconds:g} s): NOT confirmed, {problem}")

    def failed_ids(self) -> str:
        """1, 2, 3, 7 -> '1-3, 7': thousands of failed tasks still fit on one line."""
        runs: list[list[int]] = []
        for first, last in sorted(self.failed_runs):
            if runs and first <= runs[-1][1] + 1:
                runs[-1][1] = max(runs[-1][1], last)
            else:
                runs.append([first, last])
        return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)

    def draw_progress(self) -> None:
        now = time.monotonic()
        if self.progress and (now - self.drawn_at >= PROGRESS_INTERVAL or self.confirmed == self.total):
            self.drawn_at = now
            print(f"\r[{WHO}] {self.confirmed} of {self.total} tasks confirmed", end="", flush=True)

    def end_progress_line(self) -> None:
        if self.progress and self.drawn_at:
            print(flush=True)
            self.drawn_at = 0.0


class Tasks:
    """The tasks still to send: first those to send again after a lost connection, then the new ones."""

    def __init__(self, args: argparse.Namespace, outcome: Outcome) -> None:
        self.fresh = planned_tasks(args)
        self.all_taken = False  # the last new task has been taken
        self.again: deque[tuple[int, float]] = deque()
        self.outcome = outcome
        self.flaky = flaky_tasks(args)
        self.prefix = wq.run_prefix()

    def next(self) -> tuple[int, float] | None:
        if self.again:
            return self.again.popleft()
        if not self.all_taken:
            task = next(self.fresh, None)
            if task is not None:
                self.outcome.seconds += task[1]
                return task
            self.all_taken = True
        return None

    def left(self) -> bool:
        return bool(self.again) or not self.all_taken

    def rest(self) -> Iterator[tuple[int, float]]:
        while (task := self.next()) is not None:
            yield task

    def message(self, task_id: int, seconds: float) -> tuple[bytes, pika.BasicProperties]:
        # The same id for the same task, sent again or not: a worker can tell a copy from a new task.
        return wq.task_message(task_id, seconds, f"{self.prefix}.{task_id}", 1 if task_id in self.flaky else 0)


class TaskFrames:
    """The AMQP frames of a task, the same bytes pika's basic_publish makes, and a window of them sent at once.

    basic_publish marshals the same Basic.Publish frame for every task, then hands each of a task's three
    frames to its transport, which sends each in a syscall of its own: 90,000 sends for 30,000 tasks, and
    more time in pika than in the rest of the publisher. Here the Basic.Publish frame is made once, and a
    window of 1,000 tasks leaves in a few large sends. Sending calls pika's private
    Connection._adapter_emit_data (pika 1.4, pinned in requirements.txt); test_publisher_frames_are_pikas_own
    fails if pika changes it or its framing.
    """

    def __init__(self, channel_number: int, queue: str) -> None:
        self.channel_number = channel_number
        # mandatory: a task that no queue takes comes back (basic.return) instead of vanishing.
        publish = pika.spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
        self.publish = pika.frame.Method(channel_number, publish).marshal()

    def of(self, body: bytes, properties: pika.BasicProperties) -> tuple[bytes, bytes, bytes]:
        # A task's body is under 100 bytes: one body frame, far below the smallest frame size AMQP allows.
        return (self.publish, pika.frame.Header(self.channel_number, len(body), properties).marshal(),
                pika.frame.Body(self.channel_number, body).marshal())

    @staticmethod
    def send(connection: pika.SelectConnection, frames: list[bytes]) -> None:
        connection._adapter_emit_data(b"".join(frames))


def guarded(callback):
    """Our callbacks run inside pika's I/O loop, which takes any exception as a lost connection and would
    have everything sent again: an error of our own stops the run instead, and is named."""
    @functools.wraps(callback)
    def run(self: ConfirmedPublishing, *args):
        try:
            return callback(self, *args)
        except Exception as error:
            self.fatal = wq.Fatal(f"internal error in {callback.__name__}: {type(error).__name__}: {error}")
            self.close()
    return run


class ConfirmedPublishing:
    """Publishes tasks on one connection, up to CONFIRM_WINDOW of them waiting for the broker's confirm.

    Waiting for each confirm in turn would cost a round trip per task; a window of unconfirmed tasks
    keeps the broker busy, and each confirm (often for many tasks at once) lets more go.
    """

    def __init__(self, connection: pika.SelectConnection, args: argparse.Namespace,
                 tasks: Tasks, outcome: Outcome, signals: Callable[[], int]) -> None:
        self.connection = connection
        self.signals = signals
        self.args = args
        self.tasks = tasks
        self.outcome = outcome
        self.channel = None
        self.next_tag = 1
        self.in_flight: dict[int, tuple[int, float, str]] = {}  # delivery tag -> task id, seconds, message id
        self.returned: set[str] = set()  # message ids the broker could not route
        self.closing = False
        self.interrupted = False  # SIGINT or SIGTERM: send nothing more, wait a little for the confirms
        self.blocked = False  # a resource alarm: waiting is --blocked-timeout's business
        self.heard_from_broker = time.monotonic()  # the last confirm
        self.lost: BaseException | None = None
        self.fatal: wq.Fatal | None = None

    def run(self) -> None:
        """Publish until every task is confirmed or failed, or the connection is lost, or a signal came.

        Afterwards `tasks` holds what still needs publishing (on a new connection), and `lost` why.
        """
        self.connection.add_on_close_callback(self.on_connection_closed)
        self.connection.add_on_connection_blocked_callback(self.on_blocked)
        self.connection.add_on_connection_unblocked_callback(self.on_unblocked)
        self.connection.channel(on_open_callback=self.on_channel_open)
        self.connection.ioloop.call_later(SIGNAL_CHECK_SECONDS, self.watch)
        # A broker that never answers the set-up (a quorum queue left without a leader) must not hang us.
        self.setup_deadline = self.connection.ioloop.call_later(wq.setup_seconds(self.args.connect_timeout),
                                                                self.on_setup_deadline)
        try:
            self.connection.ioloop.start()
        finally:
            # Tasks the broker never confirmed go out again: they may or may not have reached the queue.
            for task_id, seconds, _ in reversed(self.in_flight.values()):
                self.tasks.again.appendleft((task_id, seconds))
        if self.fatal:
            raise self.fatal

    @guarded
    def on_channel_open(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self.on_channel_closed)
        channel.add_on_return_callback(self.on_return)  # the tasks are mandatory: see TaskFrames
        channel.queue_declare(self.args.queue, durable=True, arguments=wq.queue_arguments(self.args.queue_type),
                              callback=self.on_queue_declareok)

    @guarded
    def on_queue_declareok(self, _frame) -> None:
        self.channel.confirm_delivery(ack_nack_callback=self.on_confirm, callback=self.on_confirm_selectok)

    @guarded
    def on_confirm_selectok(self, _frame) -> None:
        self.connection.ioloop.remove_timeout(self.setup_deadline)
        self.heard_from_broker = time.monotonic()
        self.frames = TaskFrames(self.channel.channel_number, self.args.queue)
        self.publish_more()

    def on_setup_deadline(self) -> None:
        self.fatal = wq.Fatal(f"the broker did not answer within {wq.setup_seconds(self.args.connect_timeout):g} s "
                              f"while the publisher declared queue {self.args.queue!r} and turned on confirms "
                              f"{wq.UNANSWERED_HINT}")
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
        window: list[bytes] = []
        sendable = self.channel.is_open and not self.closing  # basic_publish's own check, once per window
        while sendable and not self.interrupted and len(self.in_flight) < CONFIRM_WINDOW:
            task = self.tasks.next()
            if task is None:
                break
            body, properties = self.tasks.message(*task)
            self.in_flight[self.next_tag] = (*task, properties.message_id)
            self.next_tag += 1
            window += self.frames.of(body, properties)
        if window:
            self.frames.send(self.connection, window)
        if not self.in_flight and (self.interrupted or not self.tasks.left()):
            self.close()

    @guarded
    def on_confirm(self, frame) -> None:
        """The broker has (ack) or will never have (nack) the tasks up to this tag, or just this one."""
        self.heard_from_broker = time.monotonic()
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = [method.delivery_tag]
        if method.multiple:  # tags are in order: stop at the first one past this confirm
            tags = list(itertools.takewhile(lambda tag: tag <= method.delivery_tag, self.in_flight))
        confirmed = []
        for tag in tags:
            task_id, seconds, message_id = task = self.in_flight.pop(tag)
            if not acked:
                self.outcome.fail(task_id, seconds, "rejected by the broker")
            elif message_id in self.returned:
                self.returned.discard(message_id)
                self.outcome.fail(task_id, seconds, "unroutable: no queue took it")
            else:
                confirmed.append(task)
        self.outcome.confirm(confirmed)
        self.publish_more()

    @guarded
    def watch(self) -> None:
        """Every SIGNAL_CHECK_SECONDS: a signal, or a broker that has stopped confirming?

        SIGINT or SIGTERM: send nothing more, and leave once the tasks already sent are confirmed, or
        after a grace period. A second signal: leave now. No confirm for twice the set-up time while
        tasks wait for one, and the connection not blocked: give up, naming those tasks.
        """
        signals = self.signals()
        if signals >= 2 or (signals and not self.in_flight):
            self.close()
            return
        if signals and not self.interrupted:
            self.interrupted = True
            wq.log(WHO, f"interrupted: sending no more tasks; waiting up to {INTERRUPT_GRACE_SECONDS:g} s for "
                        f"the confirms of {len(self.in_flight)} task(s) already sent")
            self.connection.ioloop.call_later(INTERRUPT_GRACE_SECONDS, self.close)
        silence = 2 * wq.setup_seconds(self.args.connect_timeout)
        if self.in_flight and not self.blocked and time.monotonic() - self.heard_from_broker > silence:
            self.fatal = wq.Fatal(f"the broker confirmed nothing for {silence:g} s while {len(self.in_flight)} "
                                  f"task(s) waited {wq.UNANSWERED_HINT}")
            self.abandon()
            return
        self.connection.ioloop.call_later(SIGNAL_CHECK_SECONDS, self.watch)

    def on_channel_closed(self, _channel, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == 406:
            self.fatal = wq.queue_mismatch(self.args.queue, self.args.queue_type, reason.reply_text)
        elif refused := wq.refusal(reason, f"declare or publish to queue {self.args.queue!r}"):
            self.fatal = refused
        elif not self.closing:
            self.lost = reason
        self.close()

    def on_unblocked(self, _connection, _frame) -> None:
        self.blocked = False
        self.heard_from_broker = time.monotonic()
        wq.log(WHO, "the broker unblocked publishing; carrying on")

    def on_blocked(self, _connection, frame) -> None:
        self.blocked = True
        self.outcome.end_progress_line()
        wq.log(WHO, f"the broker blocked publishing ({frame.method.reason}: a resource alarm); "
                    f"waiting up to {self.args.blocked_timeout:g} s for it to clear")

    def on_connection_closed(self, connection, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ConnectionBlockedTimeout):
            # Reconnecting would only be blocked again: the broker is short of memory or disk.
            self.fatal = wq.Fatal(f"the broker blocked publishing for {self.args.blocked_timeout:g} s "
                                  "(a memory or disk alarm on the broker); gave up")
        elif not self.closing and not self.lost:
            self.lost = reason
        connection.ioloop.stop()

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.connection.is_open:
                self.connection.close()


class Run:
    """One run of the publisher: connections come and go, signals may come at any moment."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.outcome = Outcome(args, task_count(args))
        self.tasks = Tasks(args, self.outcome)
        self.publishing: ConfirmedPublishing | None = None
        self.interrupted: str | None = None
        self.signals = 0
        self.started = time.monotonic()

    def on_signal(self, signum: int, _frame) -> None:
        # Only a note here, read by the publishing loop: a signal must not cut a callback in half, or a
        # task would be neither confirmed nor named.
        self.interrupted = signal.Signals(signum).name
        self.signals += 1

    def publish(self) -> str | None:
        """Publish everything, reconnecting when the connection is lost; why tasks are left, if any are."""
        pause = wq.RETRY_DELAY_FIRST
        for attempt in range(MAX_RECONNECTS + 1):
            connection = wq.connect(self.args.url, self.args.connect_timeout, WHO,
                                    stop_requested=lambda: bool(self.interrupted),
                                    opener=lambda parameters: wq.open_async(parameters, self.args.blocked_timeout))
            if connection is None or self.interrupted:
                if connection is not None:
                    connection.close()
                return f"interrupted by {self.interrupted}"
            self.publishing = ConfirmedPublishing(connection, self.args, self.tasks, self.outcome,
                                                  lambda: self.signals)
            if attempt == 0:
                self.started = time.monotonic()  # the rate counts publishing, not connecting
            confirmed_before = self.outcome.confirmed
            self.publishing.run()
            if self.interrupted:
                return f"interrupted by {self.interrupted}"
            if not self.tasks.left():
                return None
            self.outcome.end_progress_line()
            wq.log(WHO, f"connection lost ({wq.describe(self.publishing.lost)}); reconnecting to publish "
                        f"the task(s) not confirmed yet: {len(self.publishing.in_flight)} sent already, "
                        "which may reach the queue twice")
            self.outcome.republished += len(self.publishing.in_flight)
            if self.outcome.confirmed == confirmed_before:  # no progress: do not hammer the broker
                wq.log(WHO, f"nothing was confirmed on that connection: waiting {pause:.1f} s")
                time.sleep(pause)
                pause = min(pause * 2, wq.RETRY_DELAY_MAX)
        return f"the connection was lost {MAX_RECONNECTS + 1} times"


def main(argv: list[str] | None = None) -> int:
    wq.show_any_text()
    args = parse_args(argv)
    run = Run(args)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, run.on_signal)
    try:
        gave_up = run.publish()
    except wq.Fatal as error:
        if run.publishing is None:
            return wq.fail("publisher.py", error)  # nothing was sent: the error says it all
        wq.fail("publisher.py", error)
        gave_up = "gave up, see the error"
    outcome = run.outcome
    outcome.end_progress_line()
    for task_id, seconds in run.tasks.rest():
        outcome.fail(task_id, seconds, f"never confirmed: {gave_up}")
    outcome.end_progress_line()
    elapsed = time.monotonic() - run.started
    rate = f", {outcome.confirmed / elapsed:,.0f} tasks/s" if outcome.confirmed and elapsed > 0 else ""
    again = f"; {outcome.republished} sent again after a lost connection" if outcome.republished else ""
    wq.log(WHO, f"{outcome.confirmed} of {outcome.total} tasks confirmed on queue {args.queue!r} "
                f"({outcome.seconds:g} s of work) in {elapsed:.2f} s{rate}{again}")
    if outcome.failures:
        wq.log(WHO, f"NOT confirmed: task(s) {outcome.failed_ids()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
