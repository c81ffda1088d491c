#!/usr/bin/env python3
"""Per-task overhead: zero-second tasks, prefetch 1, consumer.py against the tutorial-style worker.

Goal: consumer.py's tasks per second >= 1.0x the baseline's (median of 5 runs): keeping heartbeats
alive while a task runs must not cost throughput.
"""

from __future__ import annotations

import argparse

from bench import common as c

KINDS = {"consumer.py": c.consumer_command, "tutorial": c.tutorial_command}


def tasks_per_second(url: str, kind: str, workers: int, tasks: int) -> float:
    return c.zero_second_rate(url, lambda queue: [KINDS[kind](url, queue, f"w{i}", c.EVENTS) for i in range(workers)],
                              tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with c.broker_url() as url:
        for workers in (1, 2):
            rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(args.runs):  # interleaved, so drift on a noisy machine hits both alike
                for kind in KINDS:
                    rates[kind].append(tasks_per_second(url, kind, workers, args.tasks))
            ours, base = c.median(rates["consumer.py"]), c.median(rates["tutorial"])
            per_run = " ".join(f"{a / b:.3f}" for a, b in zip(rates["consumer.py"], rates["tutorial"], strict=True))
            rows.append([workers, round(ours), round(base), ours / base, per_run])
    c.table(f"Per-task overhead: {args.tasks} zero-second tasks, prefetch 1, quorum queue, median of {args.runs} "
          "(goal: ratio >= 1.0)",
          ["workers", "consumer.py tasks/s", "tutorial tasks/s", "ratio", "ratio per run"], rows)


if __name__ == "__main__":
    main()
