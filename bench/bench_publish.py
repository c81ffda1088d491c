#!/usr/bin/env python3
"""Publishing: publisher.py, whole process, against plain unconfirmed pika publishing in-process.

publisher.py --count 30000 runs as users run it: a fresh Python process that imports, connects, declares,
publishes every task with a confirm, and exits; its time is the process's, start to exit. The baseline is
what the tutorial does, timed inside this process from connecting to closing: a BlockingConnection
publishing the same 30,000 persistent JSON messages, each built as it goes (json.dumps, new properties,
the same message id and timestamp), unconfirmed, then one round trip so that the broker has read them all.
Each round runs plain, publisher.py and plain again, each going first in turn, on a fresh queue each, with a
pause for the broker to settle in between; "plain again" over "plain" is the noise.
Goal: plain's time / publisher.py's time >= 1.8 (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import pika

from bench import common as c
from workqueue.task import JSON_CONTENT_TYPE, run_prefix

GOAL = 1.8
# Between two runs: the broker finishes writing and deleting the last run's queue, not during the next run.
SETTLE_SECONDS = 1.0


def plain_seconds(url: str, queue: str, tasks: int) -> float:
    start = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    prefix = run_prefix()
    for task_id in range(1, tasks + 1):
        body = json.dumps({"task_id": task_id, "seconds": 0.0})
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent,
                                          content_type=JSON_CONTENT_TYPE, message_id=f"{prefix}.{task_id}",
                                          timestamp=int(time.time()))
        channel.basic_publish("", queue, body, properties)
    channel.queue_declare(queue, durable=True, passive=True)  # one round trip: the broker has read them all
    connection.close()
    return time.perf_counter() - start


def publisher_seconds(url: str, queue: str, tasks: int) -> float:
    start = time.perf_counter()
    result = subprocess.run([c.PYTHON, str(c.ROOT / "publisher.py"), "--url", url, "--queue", queue,
                             "--count", str(tasks), "--min-seconds", "0", "--max-seconds", "0"],
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and f"{tasks} of {tasks} tasks confirmed" in summary, result.stdout[-500:]
    return elapsed


def queued(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    count = connection.channel().queue_declare(queue, durable=True, passive=True).method.message_count
    connection.close()
    return count


def timed(url: str, way, tasks: int) -> float:
    queue = c.fresh_queue(url)
    seconds = way(url, queue, tasks)
    assert queued(url, queue) == tasks, f"{way.__name__}: not all {tasks} tasks reached the queue"
    c.delete_queue(url, queue)
    time.sleep(SETTLE_SECONDS)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    ways = {"plain": plain_seconds, "publisher.py": publisher_seconds, "plain again": plain_seconds}
    order = list(ways)
    times: dict[str, list[float]] = {name: [] for name in ways}
    with c.broker_url() as url:
        for round_number in range(args.rounds):  # alternating, so drift on a noisy machine hits all alike
            turn = round_number % len(order)  # and each goes first in turn: no place in a round is favoured
            for name in order[turn:] + order[:turn]:
                times[name].append(timed(url, ways[name], args.tasks))
    ratios = [plain / ours for plain, ours in zip(times["plain"], times["publisher.py"], strict=True)]
    control = [again / plain for plain, again in zip(times["plain"], times["plain again"], strict=True)]
    c.table(f"Publishing {args.tasks:,} persistent tasks to a quorum queue, median of {args.rounds} alternating rounds "
            "(control: plain against itself)",
            ["publisher.py s (whole process, confirmed)", "plain s (in-process, unconfirmed)", "plain / publisher.py",
             "range", "control", "range", "goal"],
            [[c.median(times["publisher.py"]), c.median(times["plain"]), c.median(ratios),
              f"{min(ratios):.2f}-{max(ratios):.2f}", c.median(control), f"{min(control):.2f}-{max(control):.2f}",
              f">= {GOAL}"]])


if __name__ == "__main__":
    main()
