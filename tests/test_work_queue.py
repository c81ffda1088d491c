"""The work-queue guarantees, proven by running publisher.py and consumer.py against a real broker."""

from __future__ import annotations

import re
import signal
import time

import pytest

from helpers import BrokerClient, WorkerProcess, done_ids, elapsed, read_events, run_publisher
from workqueue.brokers import wait_for_consumers, wait_until
from workqueue.report import greedy_makespan


def test_fair_dispatch_gives_short_tasks_to_the_free_worker(broker, queue, tmp_path):
    # One long task and twelve short ones: round robin would hand the busy worker half the short ones.
    durations = [1.5] + [0.1] * 12
    workers = [WorkerProcess(broker.url, queue, tmp_path, name, "--idle-timeout", "1") for name in ("w1", "w2")]
    wait_for_consumers(broker.url, queue, 2)
    published = run_publisher(broker.url, queue, "--durations", ",".join(map(str, durations)))
    assert published.returncode == 0, published.stdout + published.stderr
    for worker in workers:
        assert worker.wait() == 0, worker.output

    events = read_events(tmp_path / "events.jsonl")
    by_worker = {name: sorted(e["task_id"] for e in events if e["worker"] == name) for name in ("w1", "w2")}
    long_worker = next(name for name, ids in by_worker.items() if 1 in ids)
    other = "w2" if long_worker == "w1" else "w1"
    assert by_worker[long_worker] == [1], by_worker
    assert by_worker[other] == list(range(2, 14)), by_worker
    makespan = max(e["finished"] for e in events) - min(e["started"] for e in events)
    ideal = greedy_makespan(durations, 2)
    round_robin = 1.5 + 6 * 0.1
    assert makespan < ideal + 0.25 < round_robin, (makespan, ideal)


def test_task_survives_worker_crash(broker, queue, tmp_path):
    victim = WorkerProcess(broker.url, queue, tmp_path, "victim", "--idle-timeout", "0")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "2,0.2,0.2").returncode == 0
    victim.wait_for_output("started task 1")
    survivor = WorkerProcess(broker.url, queue, tmp_path, "survivor", "--idle-timeout", "1")
    wait_for_consumers(broker.url, queue, 2)
    victim.kill()  # kill -9 in the middle of task 1: it was never acked

    assert survivor.wait(timeout=30) == 0, survivor.output
    assert sorted(done_ids(tmp_path / "events.jsonl")) == [1, 2, 3]
    assert all(e["worker"] == "survivor" for e in read_events(tmp_path / "events.jsonl"))
    assert "started task 1 (2 s, delivery 2)" in survivor.output
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0


def test_worker_waits_for_its_first_task_then_exits_after_idle_timeout(broker, queue, tmp_path):
    """The idle clock starts at the first task: a worker started before a person starts the publisher waits."""
    worker = WorkerProcess(broker.url, queue, tmp_path, "idler", "--idle-timeout", "1")
    wait_for_consumers(broker.url, queue, 1)
    time.sleep(2)  # twice the idle timeout, before any task: the worker is still there
    assert worker.process.poll() is None, worker.output
    assert run_publisher(broker.url, queue, "--durations", "0.1").returncode == 0
    start = time.monotonic()
    assert worker.wait(timeout=20) == 0, worker.output
    assert elapsed(start) >= 1
    assert "summary: 1 task(s) done" in worker.output and re.search(r"no task for 1\.\d s: exiting", worker.output)


def test_workers_started_at_a_persons_pace_all_take_part(broker, queue, tmp_path):
    """The README's run by hand: a terminal, a worker; 8 s later another; 8 s later the publisher. With the
    default idle timeout (6 s), the first worker is still there when the tasks come, and both share them."""
    first = WorkerProcess(broker.url, queue, tmp_path, "first")
    wait_for_consumers(broker.url, queue, 1)
    time.sleep(8)
    second = WorkerProcess(broker.url, queue, tmp_path, "second")
    wait_for_consumers(broker.url, queue, 2)
    time.sleep(8)
    assert first.process.poll() is None, first.output
    assert run_publisher(broker.url, queue, "--durations", "0.5,0.5,0.5,0.5,0.5,0.5").returncode == 0
    events = tmp_path / "events.jsonl"
    wait_until(lambda: len(read_events(events, ("done",))) == 6, 30, "the six tasks to be done")
    for worker in (first, second):
        worker.signal()
        assert worker.wait() == 0, worker.output
    done_by = [e["worker"] for e in read_events(events, ("done",))]
    assert done_by.count("first") >= 1 and done_by.count("second") >= 1, done_by


def test_idle_timeout_counts_from_the_last_task(broker, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1")
    wait_for_consumers(broker.url, queue, 1)
    # A 1.5 s task is longer than the idle timeout: the worker must not leave in the middle of it.
    assert run_publisher(broker.url, queue, "--durations", "1.5").returncode == 0
    assert worker.wait(timeout=20) == 0, worker.output
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["task_id"], e["acked"]) for e in events] == [(1, True)]
    assert "summary: 1 task(s) done" in worker.output and "task ids: 1;" in worker.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # SIGHUP: its terminal window closed
def test_warm_shutdown_finishes_and_acks_the_current_task(broker, queue, tmp_path, signum):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "1.5,1").returncode == 0
    worker.wait_for_output("started task 1")
    worker.signal(signum)
    assert worker.wait(timeout=10) == 0, worker.output
    assert done_ids(tmp_path / "events.jsonl") == [1]
    assert "summary: 1 task(s) done" in worker.output
    with BrokerClient(broker.url) as client:
        wait_until(lambda: client.depth(queue) == 1, 10, "task 2 to be back on the queue, untouched")


def test_second_signal_exits_at_once_and_task_is_redelivered(broker, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "5").returncode == 0
    worker.wait_for_output("started task 1")
    start = time.monotonic()
    worker.signal(signal.SIGINT)
    worker.wait_for_output("finishing the current task")
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=10) != 0
    assert elapsed(start) < 3, "a second signal must not wait for the 5 s task"
    assert read_events(tmp_path / "events.jsonl") == []
    with BrokerClient(broker.url) as client:
        wait_until(lambda: client.depth(queue) == 1, 10, "the unacked task to be back on the queue")
    rescuer = WorkerProcess(broker.url, queue, tmp_path, "rescuer", "--idle-timeout", "0.5")
    rescuer.wait_for_output("started task 1 (5 s, delivery 2)")
    rescuer.stop()


def test_long_task_keeps_its_connection_under_a_1s_heartbeat(broker, queue, tmp_path):
    url = broker.url + "?heartbeat=1"
    worker = WorkerProcess(url, queue, tmp_path, "w", "--idle-timeout", "1")
    wait_for_consumers(broker.url, queue, 1)
    # 3.5 s of work is more than three heartbeat intervals: a worker that blocked its I/O for that
    # long would have its connection dropped by the broker and its ack lost.
    assert run_publisher(broker.url, queue, "--durations", "3.5").returncode == 0
    assert worker.wait(timeout=30) == 0, worker.output
    assert "connection lost" not in worker.output
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["task_id"], e["acked"]) for e in events] == [(1, True)]
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0


def test_events_file_records_every_finished_task(broker, queue, tmp_path):
    workers = [WorkerProcess(broker.url, queue, tmp_path, name, "--idle-timeout", "1") for name in ("a", "b")]
    wait_for_consumers(broker.url, queue, 2)
    assert run_publisher(broker.url, queue, "--count", "6", "--min-seconds", "0.05",
                         "--max-seconds", "0.2", "--seed", "7").returncode == 0
    for worker in workers:
        assert worker.wait() == 0
    events = read_events(tmp_path / "events.jsonl")
    assert sorted(e["task_id"] for e in events) == [1, 2, 3, 4, 5, 6]
    for event in events:
        assert {"worker", "task_id", "seconds", "started", "finished"} <= event.keys()
        assert event["worker"] in ("a", "b")
        assert 0.05 <= event["seconds"] <= 0.2
        assert event["finished"] - event["started"] >= event["seconds"] - 0.01
