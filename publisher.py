#!/usr/bin/env python3
"""Put tasks on the durable work queue: persistent messages, each confirmed by the broker."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import pika.exceptions

import workqueue as wq

WHO = "publisher"


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


def publish_task(channel, queue: str, task_id: int, seconds: float) -> str:
    """Publish one task and wait for the broker's confirm; raises if it was not taken. Returns its message_id."""
    body, properties = wq.task_message(task_id, seconds)
    # mandatory: a task that no queue takes comes back as UnroutableError instead of vanishing.
    channel.basic_publish(exchange="", routing_key=queue, body=body, properties=properties, mandatory=True)
    return properties.message_id


def id_ranges(ids: list[int]) -> str:
    """1, 2, 3, 7 -> '1-3, 7': thousands of failed tasks still fit on one line."""
    runs: list[list[int]] = []
    for task_id in ids:
        if runs and task_id == runs[-1][-1] + 1:
            runs[-1].append(task_id)
        else:
            runs.append([task_id])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    durations = task_durations(args)
    unconfirmed: list[int] = []
    try:
        connection = wq.connect(args.url, args.connect_timeout, WHO)
        channel = connection.channel()
        wq.declare_queue(channel, args.queue, args.queue_type)
        # With confirms on, basic_publish returns only once the broker has the message on disk.
        channel.confirm_delivery()
        lost = ""  # once the connection is gone, no later task can be confirmed either
        for task_id, seconds in enumerate(durations, start=1):
            problem = lost
            if not lost:
                try:
                    message_id = publish_task(channel, args.queue, task_id, seconds)
                    wq.log(WHO, f"sent task {task_id} ({seconds:g} s): confirmed")
                    if args.events:
                        wq.append_line(args.events, json.dumps({
                            "event": "published", "task_id": task_id, "seconds": seconds,
                            "message_id": message_id, "published": time.time()}))
                    continue
                except pika.exceptions.UnroutableError:
                    problem = "unroutable: no queue took it"
                except pika.exceptions.NackError:
                    problem = "rejected by the broker"
                except wq.CONNECTION_ERRORS as error:
                    problem = lost = f"connection lost ({wq.describe(error)})"
            unconfirmed.append(task_id)
            wq.log(WHO, f"task {task_id} ({seconds:g} s): NOT confirmed, {problem}")
        if connection.is_open:
            connection.close()
    except wq.Fatal as error:
        return wq.fail("publisher.py", error)
    confirmed = len(durations) - len(unconfirmed)
    wq.log(WHO, f"{confirmed} of {len(durations)} tasks confirmed on queue {args.queue!r} "
                f"({sum(durations):g} s of work)")
    if unconfirmed:
        wq.log(WHO, f"NOT confirmed: task(s) {id_ranges(unconfirmed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
