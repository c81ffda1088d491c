#!/usr/bin/env python3
"""Memory: a worker's peak RSS after 10,000 tasks against its peak after 100 (goal: within 10 %)."""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

from bench import common as c


def peak_rss_mib(url: str, tasks: int) -> float:
    queue = c.fresh_queue(url)
    c.publish(url, queue, [0.0] * tasks)
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(c.consumer_command(url, queue, "w", os.path.join(folder, "events.jsonl")),
                                   stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    c.delete_queue(url, queue)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    with c.broker_url() as url:
        small, large = peak_rss_mib(url, 100), peak_rss_mib(url, args.tasks)
    c.table("Memory: consumer.py's peak RSS (goal: growth within 10 %)", ["tasks", "peak RSS MiB", "x 100 tasks"],
            [[100, small, 1.0], [args.tasks, large, large / small]])


if __name__ == "__main__":
    main()
