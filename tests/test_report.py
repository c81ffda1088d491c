"""report.py: pure logic over an events file, no broker."""

from __future__ import annotations

import json

from report import greedy_makespan, main, report, timeline


def done(worker: str, task_id: int, start: float, seconds: float, acked: bool = True) -> dict:
    return {"event": "done", "worker": worker, "task_id": task_id, "seconds": seconds, "started": 100 + start,
            "finished": 100 + start + seconds, "acked": acked, "message_id": f"m{task_id}", "label": f"task {task_id}"}


def published(task_id: int, seconds: float) -> dict:
    return {"event": "published", "task_id": task_id, "seconds": seconds, "message_id": f"m{task_id}"}


def test_greedy_makespan_gives_each_task_to_the_first_free_worker():
    assert greedy_makespan([3, 1, 4, 1, 5, 2, 2, 3, 1, 4], 2) == 14
    assert greedy_makespan([1.5] + [0.1] * 12, 2) == 1.5
    assert greedy_makespan([2, 2, 2], 1) == 6


def test_report_counts_workers_and_compares_with_the_ideal():
    events = [done("a", 1, 0, 3), done("b", 2, 0, 1), done("b", 3, 1, 1), done("b", 4, 2, 1)]
    text, complete = report([published(i, s) for i, s in [(1, 3), (2, 1), (3, 1), (4, 1)]], events, 2, 80)
    assert complete
    assert "4 task(s) published, 4 done" in text
    assert "a    1 task(s)     3.00 s busy  ids: 1" in text and "ids: 2, 3, 4" in text
    assert "makespan 3.00 s with 2 worker(s); ideal greedy schedule 3.00 s (x1.000)" in text
    assert "every task done exactly once (4 of 4)" in text


def test_report_names_tasks_not_done_done_twice_and_foreign():
    events = [done("a", 1, 0, 1, acked=False), done("b", 1, 1, 1), {**done("b", 9, 2, 1), "message_id": "old"}]
    text, complete = report([published(1, 1), published(2, 1)], events, 2, 80)
    assert not complete
    assert "NOT DONE: task(s) 2" in text
    assert "DONE MORE THAN ONCE: task 1 (2 times: a, b)" in text
    assert "also done: 1 task(s) this run did not publish" in text


def test_timeline_fits_the_width_and_shows_each_task():
    rows = timeline([done("worker-1", 1, 0, 2), done("worker-1", 2, 2, 1), done("worker-2", 3, 0, 3)], 60)
    assert all(len(row) <= 60 for row in rows)
    assert rows[0].startswith("worker-1  |1") and "|2" in rows[0]
    assert rows[1].startswith("worker-2  |3===")
    assert rows[2].strip().startswith("0 s") and rows[2].endswith("3.0 s")


def test_report_command_exit_code_follows_completeness(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in [published(1, 1), done("a", 1, 0, 1)]) + "\n")
    assert main([str(path), "--width", "60"]) == 0
    path.write_text(path.read_text() + json.dumps(published(2, 1)) + "\n")
    assert main([str(path), "--width", "60"]) == 1
    assert main([str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err
