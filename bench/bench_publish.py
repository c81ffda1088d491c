#!/usr/bin/env python3
"""Publishing: publisher.py, every task confirmed, against plain unconfirmed publishing in the same run.

Goal: publisher.py's confirmed rate >= 1.5x the unconfirmed BlockingConnection rate (median of 3). Also
shown: waiting for each confirm in turn, the simple way to get confirms with BlockingConnection.
Rates count publishing only, from the first message to the last confirm (or the last publish and one
round trip, for unconfirmed publishing); connecting is left out of all three.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

import pika

import workqueue as wq
from bench import common as c


def blocking_rate(url: str, queue: str, tasks: int, confirm: bool) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    if confirm:
        channel.confirm_delivery()  # basic_publish now waits for each confirm
    messages = [wq.task_message(task_id, 0.0, f"bench.{task_id}") for task_id in range(1, tasks + 1)]
    start = time.perf_counter()
    for body, properties in messages:
        channel.basic_publish("", queue, body, properties)
    channel.queue_declare(queue, passive=True)  # one round trip: the broker has read everything before it
    elapsed = time.perf_counter() - start
    connection.close()
    return tasks / elapsed


def publisher_rate(url: str, queue: str, tasks: int) -> float:
    result = subprocess.run([c.PYTHON, str(c.ROOT / "publisher.py"), "--url", url, "--queue", queue,
                             "--count", str(tasks), "--min-seconds", "0", "--max-seconds", "0"],
                            capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0 and f"{tasks} of {tasks} tasks confirmed" in summary, result.stdout[-500:]
    return float(re.search(r"([\d,]+) tasks/s", summary).group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ways = {"publisher.py (confirmed, pipelined)": lambda url, queue: publisher_rate(url, queue, args.tasks),
            "BlockingConnection, unconfirmed": lambda url, queue: blocking_rate(url, queue, args.tasks, False),
            "BlockingConnection, each confirm awaited": lambda url, queue: blocking_rate(url, queue, args.tasks, True)}
    rates: dict[str, list[float]] = {way: [] for way in ways}
    with c.broker_url() as url:
        for _ in range(args.runs):
            for way, measure in ways.items():
                queue = c.fresh_queue(url)
                rates[way].append(measure(url, queue))
                c.delete_queue(url, queue)
    base = c.median(rates["BlockingConnection, unconfirmed"])
    rows = [[way, c.median(values), c.median(values) / base] for way, values in rates.items()]
    c.table(f"Publishing {args.tasks:,} persistent tasks to a quorum queue, median of {args.runs} "
            "(goal: publisher.py >= 1.5x unconfirmed)", ["how", "tasks/s", "x unconfirmed"], rows)


if __name__ == "__main__":
    main()
