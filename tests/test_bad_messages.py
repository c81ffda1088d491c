"""Messages a worker cannot run end in <queue>.dead with the reason; none is dropped, the worker carries on."""

from __future__ import annotations

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


@pytest.mark.parametrize("nacks, runs", [(1, True), (2, False)])
def test_task_is_run_at_most_max_deliveries_times(broker, queue, tmp_path, nacks, runs):
    assert run_publisher(broker.url, queue, "--durations", "0.1").returncode == 0
    with BrokerClient(broker.url) as client:
        for _ in range(nacks):  # each failed delivery counts, as a crashed worker's would
            method, _, _ = client.channel.basic_get(queue)
            client.channel.basic_nack(method.delivery_tag, requeue=True)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--max-deliveries", "2")
    assert worker.wait() == 0, worker.output
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        dead = client.drain(queue + ".dead")
    if runs:
        assert done_ids(tmp_path / "events.jsonl") == [1] and dead == []
    else:
        assert read_events(tmp_path / "events.jsonl") == []
        [(properties, _)] = dead
        assert "delivered 2 times" in properties.headers["x-dead-reason"]
