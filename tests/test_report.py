"""report.py: pure logic over an events file, no broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT
from workqueue.events import checked, read
from workqueue.report import greedy_makespan, report, timeline


def done(worker: str, task_id: int, start: float, seconds: float, acked: bool = True) -> dict:
    return {"event": "done", "worker": worker, "task_id": task_id, "seconds": seconds, "started": 100 + start,
            "finished": 100 + start + seconds, "acked": acked, "message_id": f"m{task_id}", "label": f"task {task_id}"}


def published(task_id: int, seconds: float) -> dict:
    return {"event": "published", "task_id": task_id, "seconds": seconds, "message_id": f"m{task_id}"}


def failed(worker: str, task_id: int, start: float, seconds: float, outcome: str = "retry in 1 s") -> dict:
    return {**done(worker, task_id, start, seconds), "event": "failed", "error": "RuntimeError: boom",
            "outcome": outcome}


def parked(worker: str, task_id: int | None, reason: str, message_id: str | None = None) -> dict:
    return {"event": "parked", "worker": worker, "task_id": task_id, "message_id": message_id or f"m{task_id}",
            "label": None, "reason": reason, "at": 200.0}


def events(published_events: list[dict], worker_events: list[dict]) -> list[dict]:
    return published_events + worker_events


def test_greedy_makespan_gives_each_task_to_the_first_free_worker():
    assert greedy_makespan([3, 1, 4, 1, 5, 2, 2, 3, 1, 4], 2) == 14
    assert greedy_makespan([1.5] + [0.1] * 12, 2) == 1.5
    assert greedy_makespan([2, 2, 2], 1) == 6


def test_report_counts_workers_and_compares_with_the_ideal():
    runs = [done("a", 1, 0, 3), done("b", 2, 0, 1), done("b", 3, 1, 1), done("b", 4, 2, 1)]
    text, complete = report(events([published(i, s) for i, s in [(1, 3), (2, 1), (3, 1), (4, 1)]], runs), 2, 80)
    assert complete
    assert "4 task(s) published, 4 done" in text
    assert "a    1 task(s)     3.00 s busy  ids: 1" in text and "ids: 2-4" in text
    assert "makespan 3.00 s with 2 worker(s); ideal greedy schedule 3.00 s (x1.000)" in text
    assert "every task done exactly once (4 of 4)" in text


def test_report_names_tasks_not_done_done_twice_and_foreign():
    runs = [done("a", 1, 0, 1, acked=False), done("b", 1, 1, 1), {**done("b", 9, 2, 1), "message_id": "old"}]
    text, complete = report(events([published(1, 1), published(2, 1)], runs), 2, 80)
    assert not complete
    assert "NOT DONE: task(s) 2" in text
    assert "DONE MORE THAN ONCE: task 1 (2 times: a (its ack was lost), b)" in text
    assert "also done: 1 task(s) this run did not publish" in text


def test_timeline_fits_the_width_and_shows_each_task():
    rows = timeline([done("worker-1", 1, 0, 2), done("worker-1", 2, 2, 1), done("worker-2", 3, 0, 3)], 60)
    assert all(len(row) <= 60 for row in rows)
    assert rows[0].startswith("worker-1  |1") and "|2" in rows[0]
    assert rows[1].startswith("worker-2  |3===")
    assert rows[2].strip().startswith("0 s") and rows[2].endswith("3.0 s")


def run_report(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "report.py"), *args], text=True, capture_output=True,
                          env={**os.environ, **env}, timeout=30, stdin=subprocess.DEVNULL)


def test_report_command_exit_code_follows_completeness(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in [published(1, 1), done("a", 1, 0, 1)]) + "\n")
    assert run_report(str(path), "--width", "60").returncode == 0
    path.write_text(path.read_text() + json.dumps(published(2, 1)) + "\n")
    assert run_report(str(path), "--width", "60").returncode == 1
    missing = run_report(str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_report_escapes_text_the_terminal_cannot_show(tmp_path):
    path = tmp_path / "events.jsonl"
    text_task = {**done("w\u2603", 1, 0, 0.5), "task_id": None, "message_id": None, "label": "'caf\u00e9 \u2603'"}
    path.write_text(json.dumps(text_task) + "\n")
    result = run_report(str(path), "--width", "60", PYTHONIOENCODING="ascii")
    assert "Traceback" not in result.stderr and "w\\u2603" in result.stdout, result.stdout + result.stderr


def test_report_shows_retries_and_parked_tasks():
    runs = [failed("a", 1, 0, 1), failed("b", 1, 2, 1), done("a", 1, 4, 1), done("b", 2, 0, 1),
            failed("a", 3, 1, 1), failed("b", 3, 3, 1, outcome="parked")]
    text, complete = report(events([published(1, 1), published(2, 1), published(3, 1)], runs), 2, 80)
    assert not complete, "a parked task was not done"
    assert "4 failed attempt(s) of 2 task(s)" in text
    assert "task 1: 2 failure(s), done on attempt 3" in text
    assert "task 3: 2 failure(s), PARKED in the dead-letter queue after 2 attempt(s): RuntimeError: boom" in text
    assert "NOT DONE" not in text, "a parked task is named as parked, not as lost"
    assert "|1!" in "\n".join(timeline(runs, 80)), "a failed attempt is drawn with !"


def test_report_skips_lines_that_are_not_events(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(published(1, 1)), json.dumps(done("a", 1, 0, 1)), "[1, 2]",
                               json.dumps({"event": "done", "worker": "a"}), '{"event": "published", "task_id": 2',
                               json.dumps({**published(3, 1), "seconds": "x"})]))
    text, complete = report(read(str(path)), None, 80)
    assert complete and "skipped 4 line(s)" in text


def test_tasks_without_an_id_are_told_apart_by_message_id():
    text_task = {"task_id": None, "label": "'Hello.'"}
    runs = [{**done("a", 0, i, 1), **text_task, "message_id": f"t{i}"} for i in range(3)]
    text, _ = report(events([], runs), None, 80)
    assert "DONE MORE THAN ONCE" not in text and "3 done" in text
    copies = [{**done(w, 0, i, 1), **text_task, "message_id": "same"} for i, w in enumerate("ab")]
    assert "DONE MORE THAN ONCE: task 'Hello.' (2 times: a, b)" in report(events([], copies), None, 80)[0]


@pytest.mark.parametrize("junk", ["", "\n\n", "not json at all\n"])
def test_report_of_a_file_with_no_events_does_not_crash(tmp_path, junk):
    path = tmp_path / "events.jsonl"
    path.write_text(junk)
    result = run_report(str(path), "--width", "60")
    assert result.returncode == 0 and "no task was done" in result.stdout


def test_report_of_workers_events_alone_claims_nothing_about_what_was_published():
    text, complete = report(events([], [done("a", 1, 0, 1), done("b", 2, 0, 1)]), None, 80)
    assert complete
    assert text.splitlines()[0] == "2 done; no published events in the file, so tasks not done cannot be named"
    assert "published," not in text


def test_parked_tasks_are_named_as_parked_with_their_reason_not_as_lost():
    runs = [done("a", 2, 0, 1), parked("a", None, "delivered 5 times without an ack", message_id="m1"),
            parked("b", None, "body is not UTF-8 text", message_id="x.9")]
    text, complete = report(events([published(1, 1), published(2, 1)], runs), 2, 80)
    assert not complete, "a parked task was not done"
    assert "PARKED in the dead-letter queue: task 1: delivered 5 times without an ack" in text
    assert "parked 1 message(s) that are no task of this run, the first because: body is not UTF-8 text" in text
    assert "NOT DONE" not in text


def test_long_lists_of_ids_are_runs_and_stay_short():
    runs = [done("a", n, n, 0.5) for n in range(1, 3001) if n % 7] + [done("b", n, n, 0.5) for n in range(7, 3001, 7)]
    text, _ = report(events([published(n, 0.5) for n in range(1, 3002)], runs), 2, 80)
    assert all(len(line) < 300 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "ids: 1-6, 8-13, 15-20," in text and "NOT DONE: task(s) 3001 " in text


def test_a_message_parked_that_is_no_task_of_this_run_does_not_fail_it():
    runs = [done("a", 1, 0, 1), parked("a", None, "body is not UTF-8 text", message_id="left.from.before")]
    text, complete = report(events([published(1, 1)], runs), 1, 80)
    assert complete and "every task done exactly once (1 of 1)" in text
    assert "parked 1 message(s) that are no task of this run" in text


ODD_LINES = [
    '{"event": "done", "worker": "a", "started": NaN, "finished": 2}',
    '{"event": "done", "worker": "a", "started": 1, "finished": Infinity}',
    '{"event": "done", "worker": "a", "started": 1e308, "finished": 1e308}',
    '{"event": "started", "worker": "a", "started": -1e308}',
    '{"event": "done", "worker": "a", "started": 5, "finished": 4}',
    '{"event": "published", "task_id": 1, "seconds": -1}',
    '{"event": "published", "task_id": 1, "seconds": NaN}',
    '{"event": "published", "task_id": 1, "seconds": 1e308}',
    '{"event": "broker_down", "down": true, "up": 3}',
    '{"event": "broker_down", "down": 1700000005, "up": 1700000001}',
    '{"event": "killed", "worker": "a", "started": 1700000005, "at": 1700000001}',
    '[' * 100000,
]


@pytest.mark.parametrize("line", ODD_LINES)
def test_odd_values_are_skipped_and_counted_like_other_bad_lines(line):
    assert checked(line) is None
    text, _ = report([published(1, 1), done("a", 1, 0, 1), checked(line)], None, 80)
    assert "skipped 1 line(s)" in text


def test_a_message_id_that_is_no_text_is_a_task_key_like_any_other():
    events = [{**published(1, 1), "message_id": [1]}, {**done("a", 1, 0, 1), "message_id": {"x": 1}}]
    text, _ = report(events, None, 80)
    assert text.startswith("1 task(s) published")


def test_zero_second_tasks_and_done_events_without_seconds_are_reported():
    text, complete = report([published(1, 0.0), {**done("a", 1, 0, 0.0)}], 1, 80)
    assert complete and "makespan 0.00 s" in text
    bare = {"event": "done", "worker": "a", "started": 100.0, "finished": 101.5}  # complete, says the format
    text, complete = report([checked(json.dumps(bare))], None, 80)
    assert complete and "1 done" in text and "makespan 1.50 s" in text


def test_two_runs_in_one_file_are_not_judged():
    first = [{**published(n, 1), "message_id": f"aaaa.{n}"} for n in (1, 2)]
    second = [{**published(n, 1), "message_id": f"bbbb.{n}"} for n in (1, 2)]
    runs = [{**done("a", n, n, 1), "message_id": f"{prefix}.{n}"} for prefix in ("aaaa", "bbbb") for n in (1, 2)]
    text, _ = report(first + second + runs, 1, 80)
    assert "not compared with the ideal, as the file holds the events of 2 runs" in text


def test_events_far_apart_in_time_are_not_judged():
    runs = [done("a", 1, 0, 1), done("b", 2, 1800, 1)]  # a worker's clock half an hour out
    text, _ = report([published(1, 1), published(2, 1)] + runs, 2, 80)
    assert "clocks out of step, or runs mixed" in text and "(x" not in text


def test_the_report_refuses_less_than_one_worker(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(published(1, 1)) + "\n")
    result = run_report(str(path), "--workers", "-1")
    assert result.returncode == 2 and "must be >= 1" in result.stderr and "Traceback" not in result.stderr


def test_a_short_failed_or_killed_attempt_shows_its_mark_at_any_width():
    """A worker killed 0.7 s into a task of a 20 s run: at 80 columns its bar would be a column or two wide."""
    rows = timeline([{"event": "killed", "worker": "w1", "task_id": 1, "started": 0.0, "at": 0.7},
                     {"event": "failed", "worker": "w1", "task_id": 3, "started": 10.0, "finished": 10.2},
                     {"event": "done", "worker": "w2", "task_id": 2, "started": 0.0, "finished": 20.0}], 80)
    assert "|1x" in rows[0] and "|3!" in rows[0], rows
