#!/usr/bin/env python3
"""Put tasks on the durable work queue: persistent messages, each one confirmed by the broker."""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections import deque

import pika
import pika.exceptions
import pika.spec

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
    parser.add_argument("--events", default=wq.env("TASK_EVENTS", "") or None, metavar="FILE",
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


def task_durations(args: argparse.Namespace) -> list[float]:
    if args.durations is not None:
        return args.durations
    rng = random.Random(args.seed)
    return [round(rng.uniform(args.min_seconds, args.max_seconds), 2) for _ in range(args.count)]


class Outcome:
    """What became of each task; prints what the user should see."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args = args
        self.total = total
        self.confirmed = 0
        self.failed: list[int] = []
        self.republished = 0
        self.per_task_lines = total <= PER_TASK_LINES
        self.progress = not self.per_task_lines and sys.stdout.isatty()
        self.drawn_at = 0.0

    def confirm(self, task_id: int, seconds: float, message_id: str) -> None:
        self.confirmed += 1
        if self.per_task_lines:
            wq.log(WHO, f"sent task {task_id} ({seconds:g} s): confirmed")
        if self.args.events:
            wq.append_line(self.args.events, json.dumps({
                "event": "published", "task_id": task_id, "seconds": seconds,
                "message_id": message_id, "published": time.time()}))
        self.draw_progress()

    def fail(self, task_id: int, seconds: float, problem: str) -> None:
        self.failed.append(task_id)
        if self.per_task_lines or len(self.failed) <= PER_TASK_LINES:
            self.end_progress_line()
            wq.log(WHO, f"task {task_id} ({seconds:g} s): NOT confirmed, {problem}")

    def draw_progress(self) -> None:
        now = time.monotonic()
        if self.progress and (now - self.drawn_at >= PROGRESS_INTERVAL or self.confirmed == self.total):
            self.drawn_at = now
            print(f"\r[{WHO}] {self.confirmed} of {self.total} tasks confirmed", end="", flush=True)

    def end_progress_line(self) -> None:
        if self.progress and self.drawn_at:
            print(flush=True)
            self.drawn_at = 0.0


class ConfirmedPublishing:
    """Publishes tasks on one connection, up to CONFIRM_WINDOW of them waiting for the broker's confirm.

    Waiting for each confirm in turn would cost a round trip per task; a window of unconfirmed tasks
    keeps the broker busy, and each confirm (often for many tasks at once) lets more go.
    """

    def __init__(self, connection: pika.SelectConnection, args: argparse.Namespace,
                 pending: deque[tuple[int, float]], outcome: Outcome) -> None:
        self.connection = connection
        self.args = args
        self.pending = pending
        self.outcome = outcome
        self.channel = None
        self.next_tag = 1
        self.in_flight: dict[int, tuple[int, float, str]] = {}  # delivery tag -> task id, seconds, message id
        self.returned: set[str] = set()  # message ids the broker could not route
        self.closing = False
        self.lost: BaseException | None = None
        self.fatal: wq.Fatal | None = None

    def run(self) -> None:
        """Publish until every pending task is confirmed or failed, or the connection is lost.

        Afterwards `pending` holds what still needs publishing (on a new connection), and `lost` why.
        """
        self.connection.add_on_close_callback(self.on_connection_closed)
        self.connection.add_on_connection_blocked_callback(self.on_blocked)
        self.connection.add_on_connection_unblocked_callback(
            lambda _connection, _frame: wq.log(WHO, "the broker unblocked publishing; carrying on"))
        self.connection.channel(on_open_callback=self.on_channel_open)
        try:
            self.connection.ioloop.start()
        finally:
            # Tasks the broker never confirmed go out again: they may or may not have reached the queue.
            for task_id, seconds, _ in reversed(self.in_flight.values()):
                self.pending.appendleft((task_id, seconds))
        if self.fatal:
            raise self.fatal

    def on_channel_open(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self.on_channel_closed)
        # mandatory: a task that no queue takes comes back (basic.return) instead of vanishing.
        channel.add_on_return_callback(lambda _ch, _method, properties, _body: self.returned.add(properties.message_id))
        channel.queue_declare(self.args.queue, durable=True, arguments=wq.queue_arguments(self.args.queue_type),
                              callback=lambda _frame: channel.confirm_delivery(
                                  ack_nack_callback=self.on_confirm, callback=lambda _frame: self.publish_more()))

    def publish_more(self) -> None:
        while self.pending and len(self.in_flight) < CONFIRM_WINDOW:
            task_id, seconds = self.pending.popleft()
            body, properties = wq.task_message(task_id, seconds)
            self.in_flight[self.next_tag] = (task_id, seconds, properties.message_id)
            self.next_tag += 1
            self.channel.basic_publish("", self.args.queue, body, properties, mandatory=True)
        if not self.pending and not self.in_flight:
            self.close()

    def on_confirm(self, frame) -> None:
        """The broker has (ack) or will never have (nack) the tasks up to this tag, or just this one."""
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = [method.delivery_tag]
        if method.multiple:  # tags are in order: stop at the first one past this confirm
            tags = list(itertools.takewhile(lambda tag: tag <= method.delivery_tag, self.in_flight))
        for tag in tags:
            task_id, seconds, message_id = self.in_flight.pop(tag)
            if not acked:
                self.outcome.fail(task_id, seconds, "rejected by the broker")
            elif message_id in self.returned:
                self.returned.discard(message_id)
                self.outcome.fail(task_id, seconds, "unroutable: no queue took it")
            else:
                self.outcome.confirm(task_id, seconds, message_id)
        self.publish_more()

    def on_channel_closed(self, _channel, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == 406:
            self.fatal = wq.queue_mismatch(self.args.queue, self.args.queue_type, reason.reply_text)
        elif not self.closing:
            self.lost = reason
        self.close()

    def on_blocked(self, _connection, frame) -> None:
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


def id_ranges(ids: list[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7': thousands of failed tasks still fit on one line."""
    runs: list[list[int]] = []
    for task_id in sorted(ids):
        if runs and task_id == runs[-1][-1] + 1:
            runs[-1].append(task_id)
        else:
            runs.append([task_id])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    durations = task_durations(args)
    pending = deque(enumerate(durations, start=1))
    outcome = Outcome(args, len(durations))
    started = time.monotonic()
    publishing = None
    gave_up = f"the connection was lost {MAX_RECONNECTS + 1} times"
    try:
        for attempt in range(MAX_RECONNECTS + 1):
            connection = wq.connect(args.url, args.connect_timeout, WHO,
                                    opener=lambda parameters: wq.open_async(parameters, args.blocked_timeout))
            publishing = ConfirmedPublishing(connection, args, pending, outcome)
            if attempt == 0:
                started = time.monotonic()  # the rate counts publishing, not connecting
            publishing.run()
            if not pending:
                break
            outcome.end_progress_line()
            wq.log(WHO, f"connection lost ({wq.describe(publishing.lost)}); reconnecting to publish "
                        f"{len(pending)} task(s) not confirmed yet, which may reach the queue twice")
            outcome.republished += len(publishing.in_flight)
    except wq.Fatal as error:
        if publishing is None:
            return wq.fail("publisher.py", error)  # nothing was sent: the error says it all
        wq.fail("publisher.py", error)
        gave_up = "gave up, see the error"
    except KeyboardInterrupt:
        gave_up = "interrupted"
    outcome.end_progress_line()
    for task_id, seconds in pending:
        outcome.fail(task_id, seconds, f"never confirmed: {gave_up}")
    outcome.end_progress_line()
    elapsed = time.monotonic() - started
    rate = f", {outcome.confirmed / elapsed:,.0f} tasks/s" if outcome.confirmed and elapsed > 0 else ""
    again = f"; {outcome.republished} sent again after a lost connection" if outcome.republished else ""
    wq.log(WHO, f"{outcome.confirmed} of {len(durations)} tasks confirmed on queue {args.queue!r} "
                f"({sum(durations):g} s of work) in {elapsed:.2f} s{rate}{again}")
    if outcome.failed:
        wq.log(WHO, f"NOT confirmed: task(s) {id_ranges(outcome.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
