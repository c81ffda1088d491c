#!/usr/bin/env python3
"""Fair dispatch: consumer.py's makespan against tutorial-style workers on the same tasks.

Goal: ratio <= 1.002 on tasks [3,1,4,1,5,2,2,3,1,4] x 0.1 s with 2 workers (median of 3). Both sit a
little over the ideal greedy schedule: the broker's ack-to-next-delivery time is paid once per task.
For contrast, the tutorial worker without a prefetch limit (round robin), and 4 and 8 workers on 100
random tasks.
"""

from __future__ import annotations

import argparse
import random

from bench import common as c
from workqueue.report import greedy_makespan

TUTORIAL_TASKS = [t * 0.1 for t in (3, 1, 4, 1, 5, 2, 2, 3, 1, 4)]


def measure(url: str, kind: str, workers: int, durations: list[float]) -> float:
    queue = c.fresh_queue(url)
    if kind == "consumer.py":
        commands = [c.consumer_command(url, queue, f"w{i}", c.EVENTS) for i in range(workers)]
    else:
        commands = [c.tutorial_command(url, queue, f"w{i}", c.EVENTS, prefetch=0 if kind == "round robin" else 1)
                    for i in range(workers)]
    done = c.run_workers(url, commands, queue, durations)
    c.delete_queue(url, queue)
    assert len(done) == len(durations), f"{kind}: {len(done)} of {len(durations)} tasks done"
    return c.makespan(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    random_tasks = [round(rng.uniform(0.02, 0.2), 3) for _ in range(100)]
    cases = [("tutorial tasks", 2, TUTORIAL_TASKS, ["consumer.py", "tutorial", "round robin"]),
             ("100 random tasks", 4, random_tasks, ["consumer.py", "tutorial"]),
             ("100 random tasks", 8, random_tasks, ["consumer.py", "tutorial"])]
    rows = []
    with c.broker_url() as url:
        for label, workers, durations, kinds in cases:
            spans: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.runs):
                for kind in kinds:
                    spans[kind].append(measure(url, kind, workers, durations))
            ideal = greedy_makespan(durations, workers)
            base = c.median(spans["tutorial"])
            for kind in kinds:
                ours = c.median(spans[kind])
                rows.append([label, workers, kind, ours, ideal, ours / ideal, ours / base])
    c.table(f"Fair dispatch: makespan in seconds, median of {args.runs} (goal: consumer.py / tutorial <= 1.002 "
          "on the tutorial tasks)",
          ["tasks", "workers", "worker", "makespan", "ideal", "x ideal", "x tutorial"], rows)


if __name__ == "__main__":
    main()
