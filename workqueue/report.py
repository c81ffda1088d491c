"""Who did what, and how fair it was: the report's logic, from the events of a run (report.py prints it).

Pure functions of the events: no broker, no files.
"""

from __future__ import annotations

from collections import defaultdict

from workqueue.events import Events
from workqueue.output import IdRuns

# Parked tasks named one by one, at most; the rest are counted.
PARKED_LINES = 10

# Narrowest timeline drawn, in columns, however narrow the terminal.
MIN_TIMELINE_WIDTH = 20


def greedy_makespan(durations: list[float], workers: int) -> float:
    """The finish time when each task, in order, goes to the first worker free: fair dispatch's ideal."""
    free_at = [0.0] * max(workers, 1)
    for seconds in durations:
        free_at[free_at.index(min(free_at))] += seconds
    return max(free_at)


def task_key(event: dict) -> str:
    """What tells one task from another: its message_id, which stays the same when it is sent again."""
    if event.get("message_id"):
        return str(event["message_id"])
    if event.get("task_id") is not None:
        return f"task {event['task_id']}"
    # A text task sent with no id: each run of it counts as a task of its own.
    return f"{event.get('label')} at {event.get('started')}"


def task_name(event: dict) -> str:
    return str(event["task_id"]) if event.get("task_id") is not None else str(event.get("label", "?"))


# How each kind of block is filled on the timeline.
FILLS = {"done": "=", "failed": "!", "killed": "x"}
# The timeline's row for the broker's downtime.
BROKER_ROW = "broker"


def timeline(attempts: list[dict], width: int, downtimes: list[dict] = ()) -> list[str]:
    """A row per worker, a block per attempt, scaled so that the whole run fits in `width` columns.

    A task done is drawn with '=', an attempt that failed with '!', one whose worker was killed with 'x':
    "|7====|2!!  |5xx". A broker down is a row of its own: "#####".
    """
    blocks = [(str(e["worker"]), e["started"], e.get("finished", e.get("at")), FILLS[e.get("event", "done")],
               task_name(e)) for e in attempts]
    blocks += [(BROKER_ROW, e["down"], e["up"], "#", "#") for e in downtimes]
    rows_named = sorted({block[0] for block in blocks} - {BROKER_ROW}) + ([BROKER_ROW] if downtimes else [])
    start = min(block[1] for block in blocks)
    span = max(block[2] for block in blocks) - start or 1.0
    label_width = max(len(name) for name in rows_named)
    columns = max(width - label_width - 3, MIN_TIMELINE_WIDTH)
    rows = []
    for name in rows_named:
        row = [" "] * columns
        for _, began, ended, fill, label in sorted((b for b in blocks if b[0] == name), key=lambda b: b[1]):
            first = max(0, min(int((began - start) / span * columns), columns - 1))
            end = max(first + 1, min(round((ended - start) / span * columns), columns))
            size = end - first
            row[first:end] = (fill * size if fill == "#" else "|" + label + fill * size)[:size]
        rows.append(f"{name.ljust(label_width)}  {''.join(row)}")
    axis = f"0 s{'':{columns - 3 - len(f'{span:.1f} s')}}{span:.1f} s"
    rows.append(f"{'':{label_width}}  {axis}")
    return rows


def incident_lines(events: Events, acked: list[dict], lost: int) -> list[str]:
    """What the demo did on purpose, and what became of the tasks it hit: one line."""
    if not events.incidents:
        return []
    parts = []
    for killed in (e for e in events.incidents if e["event"] == "killed"):
        again = [e for e in acked if task_key(e) == task_key(killed) and e["started"] >= killed["at"]]
        fate = f"redone by {', '.join(str(e['worker']) for e in again)}" if again else "NOT redone"
        parts.append(f"{killed['worker']} killed {killed['at'] - killed['started']:.1f} s into task "
                     f"{task_name(killed)}: task {task_name(killed)} {fate}")
    for down in (e for e in events.incidents if e["event"] == "broker_down"):
        # In flight at the crash: started before it, not finished before it, and finished after it.
        hit = {task_key(e) for e in events.started if e["started"] < down["down"]} - \
            {task_key(e) for e in acked if e["finished"] <= down["down"]}
        redone = {task_key(e) for e in acked if e["started"] >= down["down"]} & hit
        parts.append(f"broker down {down['up'] - down['down']:.1f} s: {len(redone)} task(s) in flight at the "
                     "crash redone")
    return ["; ".join(parts) + f"; {lost} lost"]


def report(events: Events, workers: int | None, width: int) -> tuple[str, bool]:
    """The report's text, and whether every published task was done."""
    published = events.published
    ours = {task_key(event) for event in published}

    def this_run(event: dict) -> bool:
        return not published or task_key(event) in ours

    acked = [event for event in events.done if event.get("acked", True)]
    # Tasks left on the queue by an earlier run are counted apart, when we know what this run published.
    foreign = [event for event in acked if not this_run(event)]
    acked = [event for event in acked if this_run(event)]
    failed = [event for event in events.failed if this_run(event)]
    lines = [f"{len(published)} task(s) published, {len(acked)} done" if published else
             f"{len(acked)} done; no published events in the file, so tasks not done cannot be named"]
    if events.skipped:
        lines.append(f"skipped {events.skipped} line(s) of the events file that are not whole events")
    parked_events = list(events.parked)
    if not acked and not failed and not parked_events:
        return "\n".join(lines + ["no task was done"]), not published

    by_worker: dict[str, list[dict]] = defaultdict(list)
    for event in acked:
        by_worker[str(event["worker"])].append(event)
    name_width = max((len(name) for name in by_worker), default=0)
    for name in sorted(by_worker):
        done = sorted(by_worker[name], key=lambda e: e["started"])
        busy = sum(e["finished"] - e["started"] for e in done)
        ids = IdRuns()
        for event in done:
            ids.add(event.get("task_id"))
        lines.append(f"  {name.ljust(name_width)}  {len(done):3d} task(s)  {busy:7.2f} s busy  ids: {ids}")

    killed = [e for e in events.incidents if e["event"] == "killed"]
    downtimes = [e for e in events.incidents if e["event"] == "broker_down"]
    if acked or failed or killed:
        lines += ["", *timeline(acked + failed + killed, width, downtimes), ""]

    done_keys = {task_key(e) for e in acked}
    missing = [event for event in published if task_key(event) not in done_keys]
    if acked:
        count = workers or len(by_worker)
        order = published or sorted(acked, key=lambda e: e["started"])
        durations = [float(event["seconds"]) for event in order]
        makespan = max(e["finished"] for e in acked) - min(e["started"] for e in acked)
        if missing or failed or events.incidents:
            why = ("tasks are not done" if missing else "failed attempts took time too" if failed
                   else "the demo crashed a worker or the broker on purpose")
            lines.append(f"makespan {makespan:.2f} s{' so far' if missing else ''}; not compared with the ideal, "
                         f"as {why}")
        else:
            ideal = greedy_makespan(durations, count)
            bound = max(sum(durations) / count, max(durations))
            lines.append(f"makespan {makespan:.2f} s with {count} worker(s); ideal greedy schedule {ideal:.2f} s "
                         f"(x{makespan / ideal:.3f}); lower bound {bound:.2f} s (x{makespan / bound:.3f})"
                         if ideal else f"makespan {makespan:.2f} s")

    lines += retry_lines(failed, done_keys)
    runs = defaultdict(list)
    for event in events.done:
        runs[task_key(event)].append(event)
    twice = [runs_of_task for key, runs_of_task in runs.items() if len(runs_of_task) > 1 and key in done_keys]
    for runs_of_task in twice:
        workers_seen = ", ".join(str(e["worker"]) + ("" if e.get("acked", True) else " (its ack was lost)")
                                 for e in runs_of_task)
        lines.append(f"DONE MORE THAN ONCE: task {task_name(runs_of_task[0])} "
                     f"({len(runs_of_task)} times: {workers_seen})")
    parked_after_failures = {task_key(e) for e in failed if e.get("outcome") == "parked"}
    lines += parked_lines(parked_events, parked_after_failures, {task_key(e): e for e in published})
    parked = parked_after_failures | ({task_key(e) for e in parked_events} & ours)
    still_missing = [e for e in missing if task_key(e) not in parked]
    if still_missing:
        ids = IdRuns()
        for event in still_missing:
            ids.add(event.get("task_id"))
        lines.append(f"NOT DONE: task(s) {ids} (still on the queue, or lost)")
    if foreign:
        lines.append(f"also done: {len(foreign)} task(s) this run did not publish (left on the queue before)")
    if published and not missing and not twice:
        lines.append(f"every task done exactly once ({len(published)} of {len(published)})")
    lines += incident_lines(events, acked, len(still_missing))
    return "\n".join(lines), not missing and not parked


def parked_lines(parked: list[dict], said: set[str], published: dict[str, dict]) -> list[str]:
    """The messages workers parked in <queue>.dead, with the reason: tasks of this run by name (those parked after
    failed attempts are told by retry_lines), the rest counted."""
    tasks = [event for event in parked if task_key(event) in published and task_key(event) not in said]
    lines = [f"PARKED in the dead-letter queue: task {task_name(published[task_key(event)])}: {event['reason']}"
             for event in tasks[:PARKED_LINES]]
    if len(tasks) > PARKED_LINES:
        lines.append(f"PARKED in the dead-letter queue: {len(tasks) - PARKED_LINES} more task(s)")
    others = [event for event in parked if task_key(event) not in published]
    if others:
        what = "message(s) that are no task of this run" if published else "message(s)"
        lines.append(f"parked {len(others)} {what}, the first because: {others[0]['reason']}")
    return lines


def retry_lines(failed: list[dict], done_keys: set[str]) -> list[str]:
    """Failed attempts: per task, how many, and whether it was done in the end or parked."""
    if not failed:
        return []
    by_task: dict[str, list[dict]] = defaultdict(list)
    for event in failed:
        by_task[task_key(event)].append(event)
    lines = [f"{len(failed)} failed attempt(s) of {len(by_task)} task(s), each retried later:"]
    for key, attempts in by_task.items():
        last = max(attempts, key=lambda e: e["finished"])
        name = task_name(last)
        if key in done_keys:
            fate = f"done on attempt {len(attempts) + 1}"
        elif last.get("outcome") == "parked":
            fate = f"PARKED in the dead-letter queue after {len(attempts)} attempt(s): {last.get('error')}"
        else:
            fate = f"waiting for its retry ({last.get('outcome')})"
        lines.append(f"  task {name}: {len(attempts)} failure(s), {fate}")
    return lines
