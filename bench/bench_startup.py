#!/usr/bin/env python3
"""Start-up: publisher.py's wall time for 10 tasks against a minimal pika script publishing one message.

Both are whole processes, Python's own start-up included, so the figure is what a user waits for.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from bench import common as c

MINIMAL = """
import sys, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
channel.queue_declare(queue=sys.argv[2], durable=True, arguments={"x-queue-type": "quorum"})
properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
channel.basic_publish("", sys.argv[2], b"Hello World!", properties)
connection.close()
"""


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"publisher.py, 10 tasks": [], "minimal pika script, 1 message": []}
    with c.broker_url() as url:
        queue = c.fresh_queue(url)
        for _ in range(args.runs):
            times["publisher.py, 10 tasks"].append(
                wall_time([c.PYTHON, str(c.ROOT / "publisher.py"), "--url", url, "--queue", queue]))
            times["minimal pika script, 1 message"].append(wall_time([c.PYTHON, "-c", MINIMAL, url, queue]))
        c.delete_queue(url, queue)
    base = c.median(times["minimal pika script, 1 message"])
    rows = [[what, c.median(values), c.median(values) / base] for what, values in times.items()]
    c.table(f"Start-up: wall time of a whole process, seconds, median of {args.runs}",
            ["what", "seconds", "x minimal"], rows)


if __name__ == "__main__":
    main()
