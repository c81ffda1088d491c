#!/usr/bin/env python3
"""What the retry machinery costs a worker whose tasks all succeed: consumer.py now against consumer.py as
it was before retries (taken from git), on zero-second tasks, in bench_overhead's rounds: fresh workers
each round, taking bursts of tasks in turn; speed from the median time between two tasks' ends. "before
again", a second copy of the old worker, is the noise.

Goal: no measurable cost (a ratio within the control's noise).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from bench import common as c
from bench.bench_overhead import one_round

# The last commit before retries, bad-message hardening and the started events.
BEFORE = "71d6e4a"
# The files the worker was made of then.
WORKER_FILES = ("consumer.py", "workqueue.py")


def checkout(revision: str, folder: Path) -> Path:
    for name in WORKER_FILES:
        text = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=c.ROOT, check=True, capture_output=True,
                              text=True).stdout
        (folder / name).write_text(text)
    return folder / "consumer.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=400, help="tasks per burst (default %(default)s)")
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, c.broker_url() as url:
        (Path(folder) / "before").mkdir()
        old = checkout(args.before, Path(folder) / "before")
        workers = {"before": old, "now": c.ROOT / "consumer.py", "before again": old}
        rounds = [one_round(url, "quorum", args.bursts, args.tasks, Path(folder), workers) for _ in range(args.rounds)]
    ratios = {name: [speed[name] / speed["before"] for speed in rounds] for name in workers}
    rows = [[name, round(c.median([speed[name] for speed in rounds])), c.median(ratios[name]),
             f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}"] for name in workers]
    c.table(f"Retry machinery on the happy path: zero-second tasks, prefetch 1, quorum queue, {args.rounds} rounds of "
            f"fresh workers, each taking {args.bursts} bursts of {args.tasks} in turn (consumer.py now against "
            f"{args.before}; 'before again' is the noise)", ["worker", "tasks/s", "x before", "range"], rows)


if __name__ == "__main__":
    main()
