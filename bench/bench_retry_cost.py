#!/usr/bin/env python3
"""What the retry machinery costs a worker whose tasks all succeed: consumer.py now, against consumer.py as
it was before retries (taken from git), side by side on the same zero-second tasks, rounds alternating.

Goal: no measurable cost (ratio within the noise, which the old worker against itself shows).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from bench import common as c

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


def tasks_per_second(url: str, script: Path, tasks: int) -> float:
    return c.zero_second_rate(url, lambda queue: [c.consumer_command(url, queue, "w", c.EVENTS, script)], tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, c.broker_url() as url:
        old = checkout(args.before, Path(folder))
        scripts = {"now": c.ROOT / "consumer.py", "before": old, "before, again": old}
        rates: dict[str, list[float]] = {kind: [] for kind in scripts}
        for _ in range(args.runs):  # alternating, so drift on a noisy machine hits all alike
            for kind, script in scripts.items():
                rates[kind].append(tasks_per_second(url, script, args.tasks))
    base = c.median(rates["before"])
    rows = [[kind, round(c.median(values)), c.median(values) / base] for kind, values in rates.items()]
    c.table(f"Retry machinery on the happy path: {args.tasks} zero-second tasks, 1 worker, prefetch 1, quorum queue, "
            f"median of {args.runs} (consumer.py now against {args.before}; 'before, again' is the noise)",
            ["worker", "tasks/s", "x before"], rows)


if __name__ == "__main__":
    main()
