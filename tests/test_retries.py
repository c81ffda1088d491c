"""A task whose work raises never kills a worker: it is retried later, through a delay queue, then parked."""

from __future__ import annotations

import itertools
import signal
import time

import pytest

from helpers import BrokerClient, WorkerProcess, read_events, settled_quorum_queue
from workqueue.brokers import wait_for_consumers, wait_until

# Short delays keep the tests fast: 0.3 s, then 0.6 s, then 1.2 s.
FAST_RETRIES = ("--retry-delay", "0.3")


def events_of(path, task_id: int, kind: str) -> list[dict]:
    return sorted((e for e in read_events(path) if e["task_id"] == task_id and e["event"] == kind),
                  key=lambda e: e["started"])


def assert_queues_empty(url: str, queue: str, *delays: float) -> None:
    with BrokerClient(url) as client:
        assert client.depth(queue) == 0
        for delay in delays:
            assert client.depth(f"{queue}.retry.{delay:g}s") == 0


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_task_that_fails_once_is_done_on_its_second_attempt(broker, queue, tmp_path, queue_type):
    flags = ("--idle-timeout", "2", "--queue-type", queue_type)
    workers = [WorkerProcess(broker.url, queue, tmp_path, f"w{i}", *flags) for i in (1, 2)]
    wait_for_consumers(broker.url, queue, 2)
    with BrokerClient(broker.url) as client:
        client.publish_task(queue, 1, 0.1, fail_attempts=1)
        for task_id in (2, 3):
            client.publish_task(queue, task_id, 0.1)
    for worker in workers:
        assert worker.wait() == 0, worker.output  # both stayed up throughout, and left only when idle
    events = tmp_path / "events.jsonl"
    [failure] = events_of(events, 1, "failed")
    [success] = events_of(events, 1, "done")
    assert (failure["attempt"], success["attempt"]) == (1, 2)
    assert "RuntimeError: failing on purpose" in failure["error"]
    assert success["started"] - failure["finished"] >= 1.0, "the first retry waits --retry-delay (1 s)"
    assert all(len(events_of(events, task_id, "done")) == 1 for task_id in (2, 3))
    output = "".join(worker.output for worker in workers)
    assert "FAILED task 1 on attempt 1: RuntimeError: failing on purpose" in output
    assert "task 1 will be retried in 1 s (retry 1 of 3)" in output
    assert "Traceback (most recent call last)" not in output, "a failed task is logged, not a crash"
    assert "started task 1 (0.1 s, attempt 2)" in output
    assert_queues_empty(broker.url, queue, 1)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_task_that_always_fails_is_parked_with_its_error_after_its_retries(broker, queue, tmp_path, queue_type):
    flags = ("--idle-timeout", "2.5", "--retries", "2", *FAST_RETRIES, "--queue-type", queue_type)
    workers = [WorkerProcess(broker.url, queue, tmp_path, f"w{i}", *flags) for i in (1, 2)]
    wait_for_consumers(broker.url, queue, 2)
    with BrokerClient(broker.url) as client:
        client.publish_task(queue, 1, 0.05, fail_attempts=99)
        for task_id in (2, 3, 4):
            client.publish_task(queue, task_id, 0.05)
    for worker in workers:
        assert worker.wait() == 0, worker.output
    events = tmp_path / "events.jsonl"
    attempts = events_of(events, 1, "failed")
    assert [e["attempt"] for e in attempts] == [1, 2, 3], "--retries 2: three attempts in all"
    assert [e["outcome"] for e in attempts] == ["retry in 0.3 s", "retry in 0.6 s", "parked"]
    gaps = [later["started"] - earlier["finished"] for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, f"each retry waits twice as long as the one before: {gaps}"
    assert events_of(events, 1, "done") == []
    assert all(len(events_of(events, task_id, "done")) == 1 for task_id in (2, 3, 4)), "the others done once"
    with BrokerClient(broker.url) as client:
        [(properties, body)] = client.drain(queue + ".dead")
    assert body == b'{"task_id": 1, "seconds": 0.05, "fail_attempts": 99}'
    headers = properties.headers
    assert headers["x-dead-reason"].startswith("failed 3 times (--retries 2); last error: RuntimeError: failing on")
    assert headers["x-task-failures"] == 3 and headers["x-original-queue"] == queue
    assert properties.message_id == "test.1" and properties.delivery_mode == 2
    assert_queues_empty(broker.url, queue, 0.3, 0.6)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_tasks_waiting_for_their_retry_survive_a_broker_crash(fresh_node, queue, tmp_path, queue_type):
    broker, node = fresh_node, fresh_node
    # No idle timeout: after a restart a quorum retry queue may take longer than any fixed idle time to
    # elect its leader and dead-letter what expired while the node was down; the test waits for the work.
    flags = ("--idle-timeout", "0", "--retry-delay", "2", "--connect-timeout", "60", "--queue-type", queue_type)
    if queue_type == "quorum":
        settled_quorum_queue(broker.url, queue)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", *flags)
    wait_for_consumers(broker.url, queue, 1)
    if queue_type == "quorum":
        time.sleep(3)  # the worker's new retry queue, too, must settle before a crash (see QUORUM_SETTLE_SECONDS)
    with BrokerClient(broker.url) as client:
        for task_id in (1, 2, 3):
            client.publish_task(queue, task_id, 0.05, fail_attempts=1)
    events = tmp_path / "events.jsonl"
    wait_until(lambda: len(read_events(events)) == 3, 20, "the three first attempts to fail")
    node.kill()  # kill -9 while the three wait in the retry queue
    node.start()
    try:
        wait_until(lambda: len(read_events(events, ("done",))) == 3, 90, "the three retries to be done")
    except AssertionError:
        with BrokerClient(broker.url) as client:
            depths = {name: client.depth(name) for name in (queue, queue + ".retry.2s", queue + ".dead")}
        raise AssertionError(f"the three retries not done in 90 s; queues: {depths}\n{worker.output}") from None
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    assert "connection lost" in worker.output
    for task_id in (1, 2, 3):
        assert [e["attempt"] for e in events_of(events, task_id, "done")] == [2], worker.output
    assert_queues_empty(broker.url, queue, 2)


def test_worker_killed_right_after_a_failure_still_retries_the_task(broker, queue, tmp_path):
    victim = WorkerProcess(broker.url, queue, tmp_path, "victim", "--idle-timeout", "0", *FAST_RETRIES)
    wait_for_consumers(broker.url, queue, 1)
    with BrokerClient(broker.url) as client:
        client.publish_task(queue, 1, 0.05, fail_attempts=1)
    wait_until(lambda: "FAILED task 1" in victim.output, 20, "the first attempt to fail", interval=0.002)
    victim.kill()  # kill -9 somewhere between the failure, the copy to the retry queue and the ack
    rescuer = WorkerProcess(broker.url, queue, tmp_path, "rescuer", "--idle-timeout", "2", *FAST_RETRIES)
    assert rescuer.wait() == 0, rescuer.output
    done = events_of(tmp_path / "events.jsonl", 1, "done")
    assert 1 <= len(done) <= 2, "never lost; at worst done twice (the original and its copy)"
    assert_queues_empty(broker.url, queue, 0.3)
