"""Messages a worker cannot run end in <queue>.dead with the reason; none is dropped, the worker carries on."""

from __future__ import annotations

import datetime
import decimal
import time

import pytest

from helpers import BrokerClient, WorkerProcess, done_ids, read_events, run_publisher

BAD_MESSAGES = [
    (b"\xff\xfe\x00garbage", None, "not UTF-8"),
    (b'{"task_id": 1, "seconds": ', "application/json", "malformed JSON"),
    (b"[1, 2]", None, "not an object"),
    (b'{"task_id": 2}', "application/json", "missing field(s): seconds"),
    (b'{"seconds": 1}', "application/json", "missing field(s): task_id"),
    (b'{"task_id": 3, "seconds": -1}', "application/json", "negative"),
    (b'{"task_id": 4, "seconds": "2"}', "application/json", "not a number"),
    (b'{"task_id": 5, "seconds": NaN}', "application/json", "not finite"),
    (b'{"task_id": 6, "seconds": 1e999}', "application/json", "not finite"),
    (b'{"task_id": 7, "seconds": 1e9}', "application/json", "absurd"),
    (b'{"task_id": "seven", "seconds": 1}', "application/json", "task_id is not a whole number"),
    (b"\x00\x01\x02 binary", None, "neither a JSON task nor printable text"),
    ("a text task that asks for 4000 s: " + "." * 4000, None, "absurd"),
]


def test_each_kind_of_bad_message_lands_in_the_dead_letter_queue(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        for body, content_type, _ in BAD_MESSAGES:
            client.publish(queue, body if isinstance(body, bytes) else body.encode(), content_type)
    # A good task after the bad ones proves the worker carried on.
    assert run_publisher(broker.url, queue, "--durations", "0.1").returncode == 0
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1")
    assert worker.wait() == 0, worker.output

    assert done_ids(tmp_path / "events.jsonl") == [1]
    assert f"{len(BAD_MESSAGES)} moved to '{queue}.dead'" in worker.output
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        dead = client.drain(queue + ".dead")
    assert len(dead) == len(BAD_MESSAGES)
    for (properties, body), (sent_body, _, reason) in zip(dead, BAD_MESSAGES, strict=True):
        assert body == (sent_body if isinstance(sent_body, bytes) else sent_body.encode()), "body kept as sent"
        assert reason in properties.headers["x-dead-reason"]
        assert properties.headers["x-original-queue"] == queue
        assert properties.delivery_mode == 2


def test_tutorial_text_task_runs_one_second_per_dot(broker, queue, tmp_path):
    # What the official tutorial's new_task.py sends: plain text, persistent, on a quorum queue.
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, b"Hello.")
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1")
    assert worker.wait() == 0, worker.output
    [event] = read_events(tmp_path / "events.jsonl")
    assert event["task_id"] is None and event["seconds"] == 1.0 and event["acked"]
    assert event["finished"] - event["started"] >= 1.0


@pytest.mark.parametrize("rejects, runs", [(1, True), (2, False)])
def test_task_is_run_at_most_max_deliveries_times(broker, queue, tmp_path, rejects, runs):
    assert run_publisher(broker.url, queue, "--durations", "0.1").returncode == 0
    with BrokerClient(broker.url) as client:
        client.fail_deliveries(queue, rejects)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--max-deliveries", "2")
    assert worker.wait() == 0, worker.output
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        dead = client.drain(queue + ".dead")
    if runs:
        assert done_ids(tmp_path / "events.jsonl") == [1] and dead == []
        assert "started task 1 (0.1 s, delivery 2)" in worker.output
    else:
        assert read_events(tmp_path / "events.jsonl") == []
        [(properties, _)] = dead
        assert "delivered 2 times" in properties.headers["x-dead-reason"]


# Messages sent to crash a worker. Each must end in <queue>.dead with a reason, or be done as a text task.
POISON = [
    (b"[" * 100000, "application/json", {}, "nested too deeply"),
    (b'{"task_id": 1, "seconds": 1' + b"0" * 400 + b"}", "application/json", {}, "absurd"),
    (b'{"task_id": 2, "seconds": 0, "fail_attempts": [1]}', "application/json", {}, "fail_attempts"),
    (b'{"task_id": 3, "seconds": 0}', "application/json",
     {"x-delivery-count": "many", "x-acquired-count": -4, "x-task-failures": "lots",
      "nested": {"a": [1, None, b"\xff"]}, "when": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
      "price": decimal.Decimal("1.5")}, None),
]


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_no_message_can_crash_a_worker(broker, queue, tmp_path, queue_type):
    with BrokerClient(broker.url) as client:
        client.declare(queue, queue_type)
        for body, content_type, headers, _ in POISON:
            client.publish(queue, body, content_type, headers=headers)
        client.publish(queue, b"[" * 100000)  # without a JSON content type: the tutorial's text, 0 s
        client.publish_task(queue, 9, 0.05)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--queue-type", queue_type)
    assert worker.wait() == 0, worker.output
    assert "Traceback" not in worker.output
    done = [e for e in read_events(tmp_path / "events.jsonl") if e["acked"]]
    assert sorted(str(e["task_id"]) for e in done) == ["3", "9", "None"]
    parked = [reason for *_, reason in POISON if reason]
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        dead = client.drain(queue + ".dead")
    assert len(dead) == len(parked)
    for (properties, _), reason in zip(dead, parked, strict=True):
        assert reason in properties.headers["x-dead-reason"]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_text_the_terminal_cannot_show_is_escaped_not_a_crash(broker, queue, tmp_path, encoding):
    """A sender's text reaches the log (a task's label, a bad value): on a terminal whose encoding lacks a
    character, the worker escapes it and carries on."""
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, "caf\u00e9 \u2603!".encode())  # the tutorial's text, with no dot: 0 s
        client.publish(queue, b'{"task_id": 1, "seconds": "\\u2603"}', "application/json")  # parked, with its value
        client.publish_task(queue, 2, 0)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1",
                           env={"PYTHONIOENCODING": encoding})
    assert worker.wait() == 0, worker.output
    output = worker.output
    assert "Traceback" not in output and "\\u2603" in output, output
    done = [e for e in read_events(tmp_path / "events.jsonl") if e["acked"]]
    assert sorted(str(e["task_id"]) for e in done) == ["2", "None"]
    assert "'caf\u00e9 \u2603!'" in {e["label"] for e in done}, "the events file keeps the text as it was"
    with BrokerClient(broker.url) as client:
        assert len(client.drain(queue + ".dead")) == 1


def test_delivery_count_is_checked_before_the_body_is_read(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, b"[" * 100000, "application/json")
        client.fail_deliveries(queue, 2)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--max-deliveries", "2")
    assert worker.wait() == 0, worker.output
    with BrokerClient(broker.url) as client:
        [(properties, _)] = client.drain(queue + ".dead")
    assert "delivered 2 times without an ack" in properties.headers["x-dead-reason"]
    assert properties.headers["x-deliveries"] == 3


def test_a_parked_message_stays_parked_even_with_a_ttl_of_its_own(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, b"\xff not a task", expiration="1500")
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0.5")
    assert worker.wait() == 0, worker.output
    time.sleep(2)  # past the message's own TTL: the copy in .dead has none, so it is still there
    with BrokerClient(broker.url) as client:
        [(properties, body)] = client.drain(queue + ".dead")
    assert body == b"\xff not a task" and properties.expiration is None
    assert properties.headers["x-original-expiration"] == "1500"


def test_events_file_that_cannot_be_written_costs_a_line_not_the_task(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish_task(queue, 1, 0.05)
        client.publish_task(queue, 2, 0.05)
    # /dev/full takes the open and refuses every write (ENOSPC): a disk that filled up after start-up.
    worker = WorkerProcess(broker.url, queue, tmp_path, "w2", "--idle-timeout", "1", "--events", "/dev/full")
    assert worker.wait() == 0, worker.output
    # Two lines lost per task, its "started" and its "done": each costs a line of the worker's log.
    assert worker.output.count("could not write to the events file '/dev/full': No space left on device") == 4
    assert "summary: 2 task(s) done" in worker.output and "Traceback" not in worker.output
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0


def test_a_classic_queue_redelivery_is_logged_as_such_not_counted(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare(queue, "classic")
        client.publish_task(queue, 1, 0.05)
        client.fail_deliveries(queue, 1)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0.5", "--queue-type", "classic")
    assert worker.wait() == 0, worker.output
    assert "started task 1 (0.05 s, redelivered)" in worker.output, "a classic queue counts no deliveries"
