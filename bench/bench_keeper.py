#!/usr/bin/env python3
"""What pika's documented way to keep a long task's connection alive would cost: the work on a thread of its
own, each ack handed back through add_callback_threadsafe (pika's basic_consumer_threaded example), against
the work on the connection's thread, as consumer.py does it (its helper thread serves the connection only
while a task runs, so a short task costs no thread switch).

Both are the bare worker (no log line, no events file, no check), so the figure is the hand-off alone, on
zero-second tasks, in bench_overhead's rounds: fresh workers each round taking bursts of tasks in turn, speed
from the median time between two tasks' ends; "control" is the inline worker against itself, the noise.
A ratio within the control's noise would mean the documented pattern costs nothing, and consumer.py's
keeper (workqueue/_pika.ConnectionKeeper) could give way to it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import common as c
from bench.bench_overhead import one_round

WORKERS: dict[str, tuple[str, ...]] = {"inline": (), "threaded": ("--threaded",), "control": ()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=400, help="tasks per burst (default %(default)s)")
    parser.add_argument("--queue-types", default="quorum,classic")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, c.broker_url() as url:
        for queue_type in args.queue_types.split(","):
            rounds = [one_round(url, queue_type, args.bursts, args.tasks, Path(folder), WORKERS)
                      for _ in range(args.rounds)]
            for name in ("threaded", "control"):
                ratios = [speed[name] / speed["inline"] for speed in rounds]
                rows.append([queue_type, name, round(c.median([speed[name] for speed in rounds])),
                             round(c.median([speed["inline"] for speed in rounds])), c.median(ratios),
                             f"{min(ratios):.2f}-{max(ratios):.2f}"])
    c.table(f"Work on the connection's thread (inline) against pika's documented thread hand-off: zero-second "
            f"tasks, prefetch 1, {args.rounds} rounds of fresh workers, each taking {args.bursts} bursts of "
            f"{args.tasks} in turn; median of the rounds",
            ["queue", "worker", "tasks/s", "inline tasks/s", "x inline", "range"], rows)


if __name__ == "__main__":
    main()
