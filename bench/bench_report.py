#!/usr/bin/env python3
"""report.py at scale: its whole process on an events file of a large run, against parsing the same lines as JSON.

The file is a run as the scripts write it: per task a "published", a "started" and a "done" line (450,000 lines:
150,000 tasks), shared by --workers workers. The baseline is a process that reads the file and json.loads every
line, nothing more: report.py cannot read the events for less. Both are timed as whole processes, alternately,
median of the rounds; report.py's peak RSS is its own (wait4).
Goal: report.py / parsing <= 2.5, and report.py's peak RSS <= 150 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from bench import common as c

PARSE_ONLY = "import json, sys\nfor line in open(sys.argv[1]):\n    json.loads(line)\n"
GOALS = {"time": 2.5, "rss_mib": 150}


def write_run(path: Path, lines: int, workers: int, seed: int = 1) -> None:
    """A run's events, as the publisher and the workers write them: three lines a task."""
    rng = random.Random(seed)
    free_at = [1_795_000_000.0 + rng.random() for _ in range(workers)]
    with open(path, "w") as out:
        for task_id in range(1, lines // 3 + 1):
            seconds = round(rng.uniform(0.01, 0.5), 2)
            message_id = f"f10c1d8b511f47f5.{task_id}"
            worker = min(range(workers), key=free_at.__getitem__) if workers <= 8 else rng.randrange(workers)
            started = free_at[worker]
            finished = free_at[worker] = started + seconds
            name = f"worker-{worker:04x}"
            out.write(json.dumps({"event": "published", "task_id": task_id, "seconds": seconds,
                                  "message_id": message_id, "published": started - 1}) + "\n")
            out.write(json.dumps({"event": "started", "worker": name, "task_id": task_id, "seconds": seconds,
                                  "started": started, "attempt": 1, "message_id": message_id,
                                  "label": f"task {task_id}"}) + "\n")
            out.write(json.dumps({"event": "done", "worker": name, "task_id": task_id, "seconds": seconds,
                                  "started": started, "finished": finished, "acked": True, "attempt": 1,
                                  "message_id": message_id, "label": f"task {task_id}"}) + "\n")


def timed(command: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of a whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=c.ROOT, stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=450_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        write_run(path, args.lines, args.workers)
        times: dict[str, list[float]] = {"parse": [], "report": [], "page": []}
        peaks: dict[str, list[float]] = {"report": [], "page": []}
        command = [c.PYTHON, str(c.ROOT / "report.py"), str(path), "--width", "100"]
        for _ in range(args.rounds):
            times["parse"].append(timed([c.PYTHON, "-c", PARSE_ONLY, str(path)])[0])
            for name, extra in (("report", []), ("page", ["--html", str(Path(folder) / "page.html")])):
                seconds, peak = timed(command + extra)
                times[name].append(seconds)
                peaks[name].append(peak)
    parse = c.median(times["parse"])
    c.table(f"report.py on {args.lines:,} lines of events ({args.workers} workers), whole processes, median of "
            f"{args.rounds}", ["", "parse as JSON s", "report.py s", "ratio", "goal", "peak RSS MiB", "goal"],
            [[name, parse, c.median(times[key]), c.median(times[key]) / parse, f"<= {GOALS['time']}",
              max(peaks[key]), f"<= {GOALS['rss_mib']}"]
             for name, key in (("report.py", "report"), ("report.py --html", "page"))])


if __name__ == "__main__":
    main()
