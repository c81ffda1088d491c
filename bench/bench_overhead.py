#!/usr/bin/env python3
"""Per-task overhead: zero-second tasks, prefetch 1, consumer.py against the tutorial-style worker.

Goal: consumer.py's tasks per second >= 1.0x the baseline's (median of 5 runs): keeping heartbeats
alive while a task runs must not cost throughput.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from common import PYTHON, ROOT, broker_url, delete_queue, fresh_queue, median, publish, table

WORKERS = {
    "consumer.py": lambda url, queue, name, events: [
        PYTHON, str(ROOT / "consumer.py"), "--url", url, "--queue", queue, "--name", name,
        "--events", events, "--idle-timeout", "1"],
    "tutorial": lambda url, queue, name, events: [
        PYTHON, str(ROOT / "bench" / "tutorial_worker.py"), "--url", url, "--queue", queue, "--name", name,
        "--events", events, "--idle-timeout", "1"],
}


def tasks_per_second(url: str, kind: str, workers: int, tasks: int) -> float:
    queue = fresh_queue(url)
    publish(url, queue, [0.0] * tasks)
    with tempfile.TemporaryDirectory() as folder:
        events = str(Path(folder) / "events.jsonl")
        processes = [subprocess.Popen(WORKERS[kind](url, queue, f"w{i}", events), stdout=subprocess.DEVNULL)
                     for i in range(workers)]
        for process in processes:
            process.wait()
        done = [json.loads(line) for line in Path(events).read_text().splitlines()]
    delete_queue(url, queue)
    assert len(done) == tasks, f"{kind}: {len(done)} of {tasks} tasks done"
    span = max(e["finished"] for e in done) - min(e["started"] for e in done)
    return tasks / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with broker_url() as url:
        for workers in (1, 2):
            rates: dict[str, list[float]] = {kind: [] for kind in WORKERS}
            for _ in range(args.runs):  # interleaved, so drift on a noisy machine hits both alike
                for kind in WORKERS:
                    rates[kind].append(tasks_per_second(url, kind, workers, args.tasks))
            ours, base = median(rates["consumer.py"]), median(rates["tutorial"])
            per_run = " ".join(f"{a / b:.3f}" for a, b in zip(rates["consumer.py"], rates["tutorial"], strict=True))
            rows.append([workers, round(ours), round(base), ours / base, per_run])
    table(f"Per-task overhead: {args.tasks} zero-second tasks, prefetch 1, quorum queue, median of {args.runs}",
          ["workers", "consumer.py tasks/s", "tutorial tasks/s", "ratio", "ratio per run"], rows)


if __name__ == "__main__":
    main()
