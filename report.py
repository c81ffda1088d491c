#!/usr/bin/env python3
"""Who did what, and how fair it was: a report from the --events file of a run.

    python3 report.py EVENTS_FILE [--workers N] [--width COLUMNS]

Exits 0 when every task the publisher confirmed was done, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict

# Narrowest timeline drawn, in columns, however narrow the terminal.
MIN_TIMELINE_WIDTH = 20


def load_events(path: str) -> tuple[list[dict], list[dict]]:
    """The tasks the publisher confirmed, and the tasks workers finished, from one events file."""
    published, done = [], []
    with open(path) as lines:
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            (published if event.get("event") == "published" else done).append(event)
    return published, done


def greedy_makespan(durations: list[float], workers: int) -> float:
    """The finish time when each task, in order, goes to the first worker free: fair dispatch's ideal."""
    free_at = [0.0] * max(workers, 1)
    for seconds in durations:
        free_at[free_at.index(min(free_at))] += seconds
    return max(free_at)


def task_key(event: dict) -> str:
    return event.get("message_id") or str(event["task_id"])


def task_name(event: dict) -> str:
    return str(event["task_id"]) if event.get("task_id") is not None else event.get("label", "?")


def timeline(done: list[dict], width: int) -> list[str]:
    """A row per worker, a block per task, scaled so that the whole run fits in `width` columns."""
    workers = sorted({event["worker"] for event in done})
    start = min(event["started"] for event in done)
    span = max(event["finished"] for event in done) - start or 1.0
    label_width = max(len(name) for name in workers)
    columns = max(width - label_width - 3, MIN_TIMELINE_WIDTH)
    rows = []
    for worker in workers:
        row = [" "] * columns
        for event in sorted((e for e in done if e["worker"] == worker), key=lambda e: e["started"]):
            first = min(int((event["started"] - start) / span * columns), columns - 1)
            end = max(first + 1, min(round((event["finished"] - start) / span * columns), columns))
            size = end - first
            # A bar where the task starts, its id, then = to its end: "|7====|2=    |5=="
            row[first:end] = ("|" + task_name(event) + "=" * size)[:size]
        rows.append(f"{worker.ljust(label_width)}  {''.join(row)}")
    axis = f"0 s{'':{columns - 3 - len(f'{span:.1f} s')}}{span:.1f} s"
    rows.append(f"{'':{label_width}}  {axis}")
    return rows


def report(published: list[dict], done: list[dict], workers: int | None, width: int) -> tuple[str, bool]:
    """The report's text, and whether every published task was done."""
    ours = {task_key(event) for event in published}
    acked = [event for event in done if event.get("acked", True)]
    # Tasks left on the queue by an earlier run are counted apart, when we know what this run published.
    foreign = [event for event in acked if published and task_key(event) not in ours]
    acked = [event for event in acked if not published or task_key(event) in ours]
    lines = [f"{len(published) or len(acked)} task(s) published, {len(acked)} done"]
    if not acked:
        return "\n".join(lines + ["no task was done"]), not published

    by_worker: dict[str, list[dict]] = defaultdict(list)
    for event in acked:
        by_worker[event["worker"]].append(event)
    name_width = max(len(name) for name in by_worker)
    for name in sorted(by_worker):
        events = sorted(by_worker[name], key=lambda e: e["started"])
        busy = sum(e["finished"] - e["started"] for e in events)
        ids = ", ".join(task_name(e) for e in events)
        lines.append(f"  {name.ljust(name_width)}  {len(events):3d} task(s)  {busy:7.2f} s busy  ids: {ids}")

    lines += ["", *timeline(acked, width), ""]

    count = workers or len(by_worker)
    order = published or sorted(acked, key=lambda e: e["started"])
    durations = [event["seconds"] for event in order]
    makespan = max(e["finished"] for e in acked) - min(e["started"] for e in acked)
    missing = [event for event in published if task_key(event) not in {task_key(e) for e in acked}]
    if missing:
        lines.append(f"makespan {makespan:.2f} s so far; not compared with the ideal, as tasks are not done")
    else:
        ideal = greedy_makespan(durations, count)
        bound = max(sum(durations) / count, max(durations))
        lines.append(f"makespan {makespan:.2f} s with {count} worker(s); ideal greedy schedule {ideal:.2f} s "
                     f"(x{makespan / ideal:.3f}); lower bound {bound:.2f} s (x{makespan / bound:.3f})"
                     if ideal else f"makespan {makespan:.2f} s")

    runs = defaultdict(list)
    for event in done:
        runs[task_key(event)].append(event)
    twice = [events for key, events in runs.items() if len(events) > 1 and (not published or key in ours)]
    for events in twice:
        workers_seen = ", ".join(e["worker"] for e in events)
        lines.append(f"DONE MORE THAN ONCE: task {task_name(events[0])} ({len(events)} times: {workers_seen})")
    if missing:
        lines.append(f"NOT DONE: task(s) {', '.join(task_name(e) for e in missing)} (still on the queue, or lost)")
    if foreign:
        lines.append(f"also done: {len(foreign)} task(s) this run did not publish (left on the queue before)")
    if published and not missing and not twice:
        lines.append(f"every task done exactly once ({len(published)} of {len(published)})")
    return "\n".join(lines), not missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", help="the file given to consumer.py (and publisher.py) as --events")
    parser.add_argument("--workers", type=int, help="workers the run had (default: those in the file)")
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size().columns,
                        help="columns for the timeline (default: the terminal's width)")
    args = parser.parse_args(argv)
    try:
        published, done = load_events(args.events)
    except (OSError, ValueError) as error:
        print(f"report.py: error: cannot read {args.events}: {error}", file=sys.stderr)
        return 1
    text, complete = report(published, done, args.workers, args.width)
    print(text)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
