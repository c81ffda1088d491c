"""Who did what, and how fair it was: the report's logic, from the events of a run (report.py prints it).

Pure functions of the events: no broker, no files. The events are read once, in one pass, into a Run: counts
per task and per worker, and one compact row per attempt for the timeline. A million events take a few tens of
MiB; nothing keeps the events themselves.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable
from typing import NamedTuple

from workqueue.output import IdRuns

# Parked tasks named one by one, at most; the rest are counted.
PARKED_LINES = 10
# Failed tasks named one by one, at most.
FAILED_LINES = 10
# Tasks done more than once named one by one, at most.
TWICE_LINES = 10
# Workers drawn on the timeline, at most; the rest are counted.
TIMELINE_ROWS = 40
# Narrowest timeline drawn, in columns, however narrow the terminal.
MIN_TIMELINE_WIDTH = 20
# How each kind of attempt is filled on the timeline, by its kind's number in an attempt row. An attempt
# taken back (its worker's ack was lost: done, but done again) is drawn on the page, not on the terminal.
FILLS = "=!x?"
DONE, FAILED, KILLED, TAKEN_BACK = 0, 1, 2, 3
# The timeline's row for the broker's downtime.
BROKER_ROW = "broker"


def greedy_makespan(durations: Iterable[float], workers: int) -> float:
    """The finish time when each task, in order, goes to the first worker free: fair dispatch's ideal."""
    free_at = [0.0] * max(workers, 1)  # a heap: the first free worker on top
    for seconds in durations:
        heapq.heapreplace(free_at, free_at[0] + seconds)
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


def run_of(message_id: str) -> str:
    """The run a message id belongs to: publisher.py makes them "<run prefix>.<task id>"."""
    return message_id.rpartition(".")[0]


class Failures(NamedTuple):
    count: int
    last_finished: float
    outcome: str
    error: str


class Fairness(NamedTuple):
    """How close to ideal a run was, in seconds; ideal and bound are 0 when it is not judged (not_judged says
    why: tasks not done, failures, a crash on purpose, runs mixed)."""
    makespan: float
    ideal: float
    bound: float
    workers: int
    not_judged: str | None
    so_far: bool
    start: float  # when the first attempt done began: the makespan counts from there

    def in_words(self) -> str:
        if self.not_judged or not self.ideal or not self.bound:
            return (f"The run took {self.makespan:.2f} s{' so far' if self.so_far else ''}; not compared with the "
                    f"ideal, as {self.not_judged or 'the tasks took no time'}.")
        return (f"The run took {self.makespan:.2f} s with {self.workers} worker(s): "
                f"{longer(self.makespan, self.ideal)} the ideal greedy schedule of its tasks ({self.ideal:.2f} s), "
                f"{longer(self.makespan, self.bound)} the lower bound ({self.bound:.2f} s).")


def longer(makespan: float, than: float) -> str:
    ratio = makespan / than
    if ratio < 1.0005:
        return "as short as" if ratio > 0.9995 else f"{(1 - ratio) * 100:.1f}% shorter than"
    return f"{(ratio - 1) * 100:.1f}% longer than"


class Run:
    """The events of a run, read once: add() each, then report()."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}  # task key -> its number
        self.names: list[str] = []  # a task's name, by number
        self.ids: list[str] = []  # a task's message id (or key), by number
        self.published: dict[int, float] = {}  # task number -> its seconds, in the order published
        self.runs: set[str] = set()  # the runs the published tasks belong to (their message ids' prefixes)
        self.workers: dict[str, int] = {}  # worker name -> its number
        # One row per attempt drawn: worker number, task number, kind, started, finished.
        self.a_worker, self.a_task, self.a_kind = array("i"), array("i"), array("b")
        self.a_start, self.a_end = array("d"), array("d")
        self.a_attempt = array("i")  # the attempt's number, as the worker counted it (0: not said)
        self.acked_runs = array("i")  # per task number: its done events acked
        self.unacked: dict[int, list[int]] = {}  # task number -> workers whose done could not be acked
        self.done_by: dict[int, list[int]] = {}  # task number -> workers that did it, when more than one did
        self.first_done = array("i")  # per task number: the worker number of its first done event, or -1
        self.failures: dict[int, Failures] = {}
        self.parked: dict[int, str] = {}  # task number -> the reason it was parked
        self.parked_foreign: list[str] = []  # reasons, of parked messages that are no task of the run
        self.started = array("d")  # when each attempt began, with started_task: for a broker's crash
        self.started_task = array("i")
        self.killed: list[dict] = []
        self.downtimes: list[dict] = []
        self.skipped = 0
        self.handlers = {"published": self.add_published, "started": self.add_started, "done": self.add_done,
                         "failed": self.add_failed, "parked": self.add_parked, "killed": self.add_killed,
                         "broker_down": self.downtimes.append}

    def add_all(self, events: Iterable[dict | None]) -> Run:
        handlers = self.handlers
        for event in events:
            if event is None:
                self.skipped += 1
            else:
                handlers[event["event"]](event)
        return self

    def task(self, event: dict) -> int:
        """The number of the event's task, numbered at its first event."""
        key = task_key(event)
        number = self.keys.get(key)
        if number is None:
            number = self.keys[key] = len(self.names)
            self.names.append(task_name(event))
            self.ids.append(str(key))
            self.acked_runs.append(0)
            self.first_done.append(-1)
        return number

    def worker(self, name: object) -> int:
        number = self.workers.get(name)
        if number is None:
            number = self.workers[name] = len(self.workers)
        return number

    def add_published(self, event: dict) -> None:
        self.published[self.task(event)] = event["seconds"]
        if event.get("message_id"):
            self.runs.add(run_of(str(event["message_id"])))

    def add_started(self, event: dict) -> None:
        self.started.append(event["started"])
        self.started_task.append(self.task(event))

    def attempt(self, kind: int, task: int, event: dict, end: float) -> None:
        self.a_worker.append(self.worker(str(event["worker"])))
        self.a_task.append(task)
        self.a_kind.append(kind)
        self.a_start.append(event["started"])
        self.a_end.append(end)
        attempt = event.get("attempt")
        self.a_attempt.append(attempt if type(attempt) is int and 0 < attempt < 2**31 else 0)

    def add_done(self, event: dict) -> None:
        task = self.task(event)
        worker = self.worker(str(event["worker"]))
        if self.first_done[task] == -1:
            self.first_done[task] = worker
        else:
            self.done_by.setdefault(task, [self.first_done[task]]).append(worker)
        if event.get("acked", True):
            self.acked_runs[task] += 1
            self.attempt(DONE, task, event, event["finished"])
        else:
            self.unacked.setdefault(task, []).append(worker)
            self.attempt(TAKEN_BACK, task, event, event["finished"])

    def add_killed(self, event: dict) -> None:
        self.killed.append(event)
        self.attempt(KILLED, self.task(event), event, event["at"])

    def add_failed(self, event: dict) -> None:
        task = self.task(event)
        self.attempt(FAILED, task, event, event["finished"])
        before = self.failures.get(task)
        if before is None or event["finished"] >= before.last_finished:
            self.failures[task] = Failures((before.count if before else 0) + 1, event["finished"],
                                           str(event.get("outcome")), str(event.get("error")))
        else:
            self.failures[task] = before._replace(count=before.count + 1)

    def add_parked(self, event: dict) -> None:
        if event.get("message_id") or event.get("task_id") is not None:
            self.parked.setdefault(self.task(event), str(event["reason"]))
        else:
            self.parked_foreign.append(str(event["reason"]))

    def worker_names(self) -> dict[int, str]:
        return {number: name for name, number in self.workers.items()}


def report(events: Iterable[dict | None], workers: int | None, width: int) -> tuple[str, bool]:
    """The report's text, and whether every published task was done. `events`: checked events (events.read), None
    for each line that is not one."""
    return Report(Run().add_all(events), workers, width).text()


class Report:
    """The lines of a report of one Run."""

    def __init__(self, run: Run, workers: int | None, width: int) -> None:
        self.run = run
        self.workers = workers
        self.width = width
        published = run.published
        # Without published events, every task a worker did is the run's; with them, only those published.
        self.ours = (lambda task: task in published) if published else (lambda task: True)
        self.done = {task for task, acked in enumerate(run.acked_runs) if acked and self.ours(task)}
        self.foreign = sum(1 for task, acked in enumerate(run.acked_runs) if acked and not self.ours(task))
        self.missing = [task for task in published if task not in self.done]
        self.parked = {task for task in run.parked if self.ours(task)} | \
            {task for task, failure in run.failures.items() if failure.outcome == "parked" and self.ours(task)}

    def text(self) -> tuple[str, bool]:
        run, published = self.run, self.run.published
        lines = [f"{len(published)} task(s) published, {len(self.done)} done" if published else
                 f"{len(self.done)} done; no published events in the file, so tasks not done cannot be named"]
        if run.skipped:
            lines.append(f"skipped {run.skipped} line(s) of the events file that are not whole events")
        ours_failed = [task for task in run.failures if self.ours(task)]
        if not self.done and not ours_failed and not run.parked and not run.parked_foreign:
            return "\n".join(lines + ["no task was done"]), not published
        lines += self.worker_lines()
        rows = self.timeline_rows()
        if rows:
            lines += ["", *rows, ""]
        lines += self.makespan_lines(ours_failed)
        lines += self.retry_lines(ours_failed)
        lines += self.twice_lines()
        lines += self.parked_lines()
        still_missing = [task for task in self.missing if task not in self.parked]
        if still_missing:
            ids = IdRuns()
            for task in still_missing:
                ids.add(self.id_of(task))
            lines.append(f"NOT DONE: task(s) {ids} (still on the queue, or lost)")
        if self.foreign:
            lines.append(f"also done: {self.foreign} task(s) this run did not publish (left on the queue before)")
        if published and not self.missing and not self.twice():
            lines.append(f"every task done exactly once ({len(published)} of {len(published)})")
        lines += self.incident_lines(len(still_missing))
        return "\n".join(lines), not self.missing and not self.parked

    def id_of(self, task: int) -> int | None:
        name = self.run.names[task]
        return int(name) if name.lstrip("-").isdigit() else None

    # ---------------------------------------------------------------- per worker

    def worker_lines(self) -> list[str]:
        run = self.run
        count: dict[int, int] = {}
        busy: dict[int, float] = {}
        order: dict[int, list[tuple[float, int]]] = {}
        for worker, task, kind, start, end in zip(run.a_worker, run.a_task, run.a_kind, run.a_start, run.a_end):
            if kind == DONE and task in self.done:
                count[worker] = count.get(worker, 0) + 1
                busy[worker] = busy.get(worker, 0.0) + end - start
                order.setdefault(worker, []).append((start, task))
        names = run.worker_names()
        width = max((len(names[worker]) for worker in count), default=0)
        lines = []
        for worker in sorted(count, key=names.__getitem__):
            ids = IdRuns()
            for _, task in sorted(order[worker]):
                ids.add(self.id_of(task))
            lines.append(f"  {names[worker].ljust(width)}  {count[worker]:3d} task(s)  {busy[worker]:7.2f} s busy  "
                         f"ids: {ids}")
        return lines

    # ---------------------------------------------------------------- the timeline

    def blocks(self) -> list[tuple[str, float, float, str, str]]:
        """(row, started, ended, fill, label) for every attempt of the run drawn, and the broker's downtimes."""
        run = self.run
        names = run.worker_names()
        drawn = [(names[worker], start, end, FILLS[kind], run.names[task])
                 for worker, task, kind, start, end in zip(run.a_worker, run.a_task, run.a_kind, run.a_start, run.a_end)
                 if kind != TAKEN_BACK and (self.ours(task) or kind == KILLED)]
        return drawn + [(BROKER_ROW, e["down"], e["up"], "#", "#") for e in run.downtimes]

    def timeline_rows(self) -> list[str]:
        blocks = self.blocks()
        return draw_timeline(blocks, self.width) if blocks else []

    # ---------------------------------------------------------------- how fair

    def makespan_lines(self, failed: list[int]) -> list[str]:
        fairness = self.fairness(failed)
        if fairness is None:
            return []
        makespan, ideal, bound, count, not_judged = fairness[:5]
        if not_judged:
            return [f"makespan {makespan:.2f} s{' so far' if self.missing else ''}; not compared with the ideal, "
                    f"as {not_judged}"]
        if not ideal or not bound or not makespan:
            return [f"makespan {makespan:.2f} s"]
        return [f"makespan {makespan:.2f} s with {count} worker(s); ideal greedy schedule {ideal:.2f} s "
                f"(x{makespan / ideal:.3f}); lower bound {bound:.2f} s (x{makespan / bound:.3f})"]

    def fairness(self, failed: list[int] | None = None) -> Fairness | None:
        """The makespan against the ideal greedy schedule and the lower bound, or why they are not compared
        (ideal and bound 0 then); None when no task was done."""
        if not hasattr(self, "judged"):  # made once: the text and the page both ask
            self.judged = self.judge(failed)
        return self.judged

    def judge(self, failed: list[int] | None) -> Fairness | None:
        run = self.run
        if failed is None:
            failed = [task for task in run.failures if self.ours(task)]
        acked = [(start, end) for task, kind, start, end in zip(run.a_task, run.a_kind, run.a_start, run.a_end)
                 if kind == DONE and task in self.done]
        if not acked:
            return None
        makespan = max(end for _, end in acked) - min(start for start, _ in acked)
        durations = list(run.published.values()) or [end - start for start, end in acked]
        work = sum(durations)
        count = self.workers or len({worker for worker, task, kind in zip(run.a_worker, run.a_task, run.a_kind)
                                     if kind == DONE and task in self.done})
        not_judged = ("tasks are not done" if self.missing else
                      "failed attempts took time too" if failed else
                      "the demo crashed a worker or the broker on purpose" if run.killed or run.downtimes else
                      f"the file holds the events of {len(run.runs)} runs (their message ids differ)"
                      if len(run.runs) > 1 else
                      "the events' times are further apart than all the work in them: clocks out of step, or "
                      "runs mixed" if makespan > 2 * work + 10 else None)
        first = min(start for start, _ in acked)
        if not_judged:
            return Fairness(makespan, 0.0, 0.0, count, not_judged, bool(self.missing), first)
        return Fairness(makespan, greedy_makespan(durations, count), max(work / count, max(durations)), count, None,
                        False, first)

    def parked_reason(self, task: int) -> str:
        failure = self.run.failures.get(task)
        if failure is not None and failure.outcome == "parked":
            return f"after {failure.count} failed attempt(s): {failure.error}"
        return self.run.parked.get(task, "parked")

    # ---------------------------------------------------------------- what went wrong

    def retry_lines(self, failed: list[int]) -> list[str]:
        """Failed attempts: per task, how many, and whether it was done in the end or parked."""
        if not failed:
            return []
        failures = self.run.failures
        lines = [f"{sum(failures[task].count for task in failed)} failed attempt(s) of {len(failed)} task(s), "
                 "each retried later:"]
        for task in failed[:FAILED_LINES]:
            failure = failures[task]
            if task in self.done:
                fate = f"done on attempt {failure.count + 1}"
            elif failure.outcome == "parked":
                fate = f"PARKED in the dead-letter queue after {failure.count} attempt(s): {failure.error}"
            else:
                fate = f"waiting for its retry ({failure.outcome})"
            lines.append(f"  task {self.run.names[task]}: {failure.count} failure(s), {fate}")
        if len(failed) > FAILED_LINES:
            lines.append(f"  and {len(failed) - FAILED_LINES} more task(s)")
        return lines

    def twice(self) -> list[int]:
        return [task for task in self.run.done_by if task in self.done]

    def twice_lines(self) -> list[str]:
        run, twice = self.run, self.twice()
        names = run.worker_names()
        lines = []
        for task in twice[:TWICE_LINES]:
            unacked = list(run.unacked.get(task, []))
            seen = []
            for worker in run.done_by[task]:
                lost = worker in unacked
                if lost:
                    unacked.remove(worker)
                seen.append(names[worker] + (" (its ack was lost)" if lost else ""))
            lines.append(f"DONE MORE THAN ONCE: task {run.names[task]} ({len(seen)} times: {', '.join(seen)})")
        if len(twice) > TWICE_LINES:
            lines.append(f"DONE MORE THAN ONCE: {len(twice) - TWICE_LINES} more task(s)")
        return lines

    def parked_lines(self) -> list[str]:
        """The messages workers parked in <queue>.dead, with the reason: tasks of this run by name (those parked
        after failed attempts are told by retry_lines), the rest counted."""
        run = self.run
        said = {task for task, failure in run.failures.items() if failure.outcome == "parked"}
        tasks = [task for task in run.parked if task in run.published and task not in said]
        lines = [f"PARKED in the dead-letter queue: task {run.names[task]}: {run.parked[task]}"
                 for task in tasks[:PARKED_LINES]]
        if len(tasks) > PARKED_LINES:
            lines.append(f"PARKED in the dead-letter queue: {len(tasks) - PARKED_LINES} more task(s)")
        others = [run.parked[task] for task in run.parked if task not in run.published] + run.parked_foreign
        if others:
            what = "message(s) that are no task of this run" if run.published else "message(s)"
            lines.append(f"parked {len(others)} {what}, the first because: {others[0]}")
        return lines

    def incident_lines(self, lost: int) -> list[str]:
        """What the demo did on purpose, and what became of the tasks it hit: one line."""
        run = self.run
        if not run.killed and not run.downtimes:
            return []
        acked = [(task, start, end) for task, kind, start, end in zip(run.a_task, run.a_kind, run.a_start, run.a_end)
                 if kind == DONE]
        names = run.worker_names()
        parts = []
        for killed in run.killed:
            task = run.keys.get(killed.get("message_id") or task_key(killed))
            again = [names[worker] for worker, t, kind, start in zip(run.a_worker, run.a_task, run.a_kind, run.a_start)
                     if kind == DONE and t == task and start >= killed["at"]]
            fate = f"redone by {', '.join(again)}" if again else "NOT redone"
            parts.append(f"{killed['worker']} killed {killed['at'] - killed['started']:.1f} s into task "
                         f"{task_name(killed)}: task {task_name(killed)} {fate}")
        for down in run.downtimes:
            # In flight at the crash: started before it, not finished before it, and finished after it.
            hit = {task for task, start in zip(run.started_task, run.started) if start < down["down"]} - \
                {task for task, _, end in acked if end <= down["down"]}
            redone = {task for task, start, _ in acked if start >= down["down"]} & hit
            parts.append(f"broker down {down['up'] - down['down']:.1f} s: {len(redone)} task(s) in flight at the "
                         "crash redone")
        return ["; ".join(parts) + f"; {lost} lost"]


def draw_timeline(blocks: list[tuple[str, float, float, str, str]], width: int) -> list[str]:
    """A row per worker, a block per attempt, scaled so that the whole run fits in `width` columns.

    A task done is drawn with '=', an attempt that failed with '!', one whose worker was killed with 'x':
    "|7====|2!!  |5xx". A broker down is a row of its own: "#####". At most TIMELINE_ROWS workers are drawn.
    """
    by_row: dict[str, list[tuple[float, float, str, str]]] = {}
    for row, began, ended, fill, label in blocks:
        by_row.setdefault(row, []).append((began, ended, fill, label))
    names = sorted(set(by_row) - {BROKER_ROW})
    hidden = len(names) - TIMELINE_ROWS
    names = names[:TIMELINE_ROWS] + ([BROKER_ROW] if BROKER_ROW in by_row else [])
    start = min(block[1] for block in blocks)
    span = max(block[2] for block in blocks) - start or 1.0
    label_width = max(len(name) for name in names)
    columns = max(width - label_width - 3, MIN_TIMELINE_WIDTH)
    rows = []
    for name in names:
        row = [" "] * columns
        for began, ended, fill, label in sorted(by_row[name]):
            first = max(0, min(int((began - start) / span * columns), columns - 1))
            # An attempt that failed or was killed shows its mark however short it was ("|3x"), over the start
            # of what follows it on the row if need be.
            least = len(label) + 2 if fill in "!x" else 1
            end = min(max(first + least, round((ended - start) / span * columns)), columns)
            size = end - first
            row[first:end] = (fill * size if fill == "#" else "|" + label + fill * size)[:size]
        rows.append(f"{name.ljust(label_width)}  {''.join(row)}")
    if hidden > 0:
        rows.append(f"{'':{label_width}}  (and {hidden} more workers, not drawn)")
    axis = f"0 s{'':{columns - 3 - len(f'{span:.1f} s')}}{span:.1f} s"
    rows.append(f"{'':{label_width}}  {axis}")
    return rows


def timeline(attempts: list[dict], width: int, downtimes: list[dict] = ()) -> list[str]:
    """draw_timeline of event dicts: done and failed attempts, workers killed, and the broker's downtimes."""
    fills = {"done": FILLS[DONE], "failed": FILLS[FAILED], "killed": FILLS[KILLED]}
    blocks = [(str(e["worker"]), e["started"], e.get("finished", e.get("at")), fills[e.get("event", "done")],
               task_name(e)) for e in attempts]
    return draw_timeline(blocks + [(BROKER_ROW, e["down"], e["up"], "#", "#") for e in downtimes], width)
