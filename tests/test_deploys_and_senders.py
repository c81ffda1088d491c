"""What production brings: rolling deploys, messages from other clients' senders, the broker's frame and channel
limits, queues deleted under the workers. Nothing is parked that did not fail; nothing loops or is lost."""

from __future__ import annotations

import signal

import pika
import pytest

from helpers import (
    EVERY_TYPE,
    MILLIS,
    BrokerClient,
    RecordingProxy,
    WorkerProcess,
    field,
    long_string,
    raw_entries,
    read_events,
    run_publisher,
    table,
)
from workqueue import _pika
from workqueue.brokers import wait_for_consumers, wait_until
from workqueue.headers import join_properties


def properties(headers: list[tuple[str, bytes]], content_type: str | None = "application/json",
               message_id: str = "foreign.1") -> _pika.RawProperties:
    """Properties as another client encodes them: whatever the header table holds, byte for byte."""
    fields = {"headers": table(*headers), "delivery_mode": b"\x02",
              "message_id": bytes([len(message_id)]) + message_id.encode()}
    if content_type:
        fields["content_type"] = bytes([len(content_type)]) + content_type.encode()
    return _pika.RawProperties(join_properties(fields))


def plant(client: BrokerClient, queue: str, body: bytes, props: _pika.RawProperties) -> None:
    client.channel.basic_publish("", queue, body, props)


# ---------------------------------------------------------------- rolling deploys


def test_a_delivery_that_crosses_a_workers_cancel_is_run_not_handed_back(broker, queue):
    """Pins _pika.cancel_keeping_deliveries. A message the broker has sent as a consumer cancels (on the wire,
    not yet read) is rejected by pika's basic_cancel, and a quorum queue counts that as a delivery; kept, it is
    the worker's to run and ack, and it never comes back."""
    counts = {}
    for keep in (False, True):
        name = f"{queue}.{'kept' if keep else 'pikas'}"
        proxy = RecordingProxy(broker.url)
        with BrokerClient(broker.url) as sender:
            sender.declare_quorum(name)
            connection = pika.BlockingConnection(pika.URLParameters(proxy.url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=1)
            tag = channel.basic_consume(name, lambda *_: pytest.fail("the delivery reached the callback"))
            sender.publish(name, b"crossing")
            wait_until(lambda proxy=proxy: b"crossing" in proxy.received, 10, "the message on the wire, unread yet")
            if keep:
                [(method, _, body)] = _pika.cancel_keeping_deliveries(channel, tag)
                assert body == b"crossing"
                channel.basic_ack(method.delivery_tag)
            else:
                assert channel.basic_cancel(tag) == []
            connection.close()
            method, properties, _ = sender.channel.basic_get(name, auto_ack=True)
            counts[keep] = None if method is None else properties.headers.get("x-delivery-count")
            sender.channel.queue_delete(name)
        proxy.close()
    assert counts[False] == 1, "pika's basic_cancel hands it back, and the queue counts a delivery"
    assert counts[True] is None, "kept, run and acked: gone from the queue, counted nowhere"


def test_warm_stops_never_bring_a_task_closer_to_being_parked(broker, queue, tmp_path):
    """Rolling deploys: round after round, SIGTERM to every busy worker, then fresh workers. With --max-deliveries
    1, one task handed back by a stopping worker would be parked: none is, and each is done once."""
    published = tmp_path / "published.jsonl"
    assert run_publisher(broker.url, queue, "--count", "80", "--min-seconds", "0.2", "--max-seconds", "0.4",
                         "--seed", "3", "--events", str(published)).returncode == 0
    flags = ("--idle-timeout", "2", "--max-deliveries", "1")
    workers = [WorkerProcess(broker.url, queue, tmp_path, f"w{i}", *flags) for i in range(4)]
    for deploy in range(3):
        for worker in workers:
            worker.wait_for_output("started task")
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=20) == 0, worker.output
        workers = [WorkerProcess(broker.url, queue, tmp_path, f"d{deploy}w{i}", *flags) for i in range(4)]
    for worker in workers:
        assert worker.wait(timeout=60) == 0, worker.output
    done = [e["task_id"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done" and e["acked"]]
    assert sorted(done) == list(range(1, 81)), "every task done exactly once"
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        assert client.drain(queue + ".dead") == [], "nothing parked: no warm stop counted as a delivery"


def test_a_worker_stopped_with_several_tasks_in_hand_runs_them_all_and_hands_none_back(broker, queue, tmp_path):
    assert run_publisher(broker.url, queue, "--durations", "1,0.2,0.2,0.2,0.2").returncode == 0
    holder = WorkerProcess(broker.url, queue, tmp_path, "holder", "--prefetch", "3", "--idle-timeout", "0")
    holder.wait_for_output("started task 1")
    holder.signal(signal.SIGTERM)
    assert holder.wait(timeout=20) == 0, holder.output
    rest = WorkerProcess(broker.url, queue, tmp_path, "rest", "--max-deliveries", "1", "--idle-timeout", "0.5")
    assert rest.wait(timeout=20) == 0, rest.output
    done = {e["task_id"]: e["worker"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done"}
    assert done == {1: "holder", 2: "holder", 3: "holder", 4: "rest", 5: "rest"}, "the three in hand run, once each"
    with BrokerClient(broker.url) as client:
        assert client.drain(queue + ".dead") == [], "none of them counted as a delivery"


# ---------------------------------------------------------------- other clients' senders


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_message_pika_cannot_decode_is_parked_and_the_queue_behind_it_flows(broker, queue, tmp_path,
                                                                            queue_type):
    with BrokerClient(broker.url) as client:
        client.declare(queue, queue_type)
        plant(client, queue, b"\xff not a task", properties([("sent-at", MILLIS)], content_type=None))
        plant(client, queue, b'{"task_id": 1, "seconds": 0}', properties(EVERY_TYPE, message_id="foreign.2"))
        client.publish_task(queue, 2, 0)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--queue-type", queue_type)
    assert worker.wait(timeout=30) == 0, worker.output
    done = sorted(e["task_id"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done")
    assert done == [1, 2], "a task is done, whatever its headers hold"
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        [(parked, body)] = client.drain(queue + ".dead")
    assert body == b"\xff not a task" and parked.headers["x-dead-reason"] == "body is not UTF-8 text"
    assert dict(raw_entries(parked))[b"sent-at"] == MILLIS, "the sender's header kept as it came"


def test_the_queue_parks_a_message_that_no_worker_settles(broker, queue):
    """The broker's own backstop: a message delivered past the queue's delivery limit without an ack, whatever
    took it, is dead-lettered to <queue>.dead, not dropped."""
    assert run_publisher(broker.url, queue, "--durations", "0.1").returncode == 0  # declares the queue
    with BrokerClient(broker.url) as client:
        client.fail_deliveries(queue, 21)
        wait_until(lambda: client.depth(queue + ".dead") == 1, 10, "the broker to dead-letter the message")
        [(parked, _)] = client.drain(queue + ".dead")
    assert parked.headers["x-death"][0]["reason"] == "delivery_limit"


def test_a_queue_declared_without_the_backstop_keeps_working_and_the_worker_says_how_to_add_it(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)  # as the tutorial, or this project's earlier release, declared it
    published = run_publisher(broker.url, queue, "--durations", "0.05")
    assert published.returncode == 0, published.stdout + published.stderr
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0.5")
    assert worker.wait() == 0, worker.output
    advice = [line for line in worker.output.splitlines() if "delivery limit" in line]
    assert len(advice) == 1 and "rabbitmqctl set_policy" in advice[0], worker.output
    assert "Traceback" not in worker.output + published.stderr


@pytest.mark.parametrize("path", ["parked", "retried"])
def test_parked_and_retried_copies_keep_every_header_value_and_type(broker, queue, tmp_path, path):
    body = b"\xff not a task" if path == "parked" else b'{"task_id": 1, "seconds": 0, "fail_attempts": 1}'
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        plant(client, queue, body, properties(EVERY_TYPE))
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "0.5", "--retries", "1",
                           "--retry-delay", "60")
    assert worker.wait(timeout=30) == 0, worker.output
    with BrokerClient(broker.url) as client:
        [(copy, copied_body)] = client.drain(queue + (".dead" if path == "parked" else ".retry.60s"))
    assert copied_body == body
    kept = dict(raw_entries(copy))
    # The broker may put a table's entries in another order on the way (they are a map); never their bytes.
    sent = {name.encode(): value for name, value in EVERY_TYPE}
    assert {name: kept.get(name) for name in sent} == sent, "every header of the sender's kept: names, types, bytes"
    assert set(kept) - {name.encode() for name, _ in EVERY_TYPE} >= (
        {b"x-dead-reason", b"x-original-queue"} if path == "parked" else {b"x-task-failures", b"x-last-error"})


# ---------------------------------------------------------------- the broker's limits


def test_a_copy_too_big_for_a_frame_is_sent_without_the_senders_largest_header(broker, queue, tmp_path):
    big = long_string(b"z" * 130_950)  # a header frame of 131,024 bytes: the broker takes up to 131,072
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        plant(client, queue, b"\xff not a task", properties([("big", big), ("small", field(b"I", b"\0\0\0\7"))]))
        client.publish_task(queue, 1, 0)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1")
    assert worker.wait(timeout=30) == 0, worker.output
    assert "connection lost" not in worker.output
    with BrokerClient(broker.url) as client:
        [(parked, _)] = client.drain(queue + ".dead")
    kept = {entry.name: entry.value for entry in raw_entries(parked)}
    assert b"big" not in kept and kept[b"small"] == field(b"I", b"\0\0\0\7")
    assert parked.headers["x-dropped-headers"] == f"big ({len(big) + 4} bytes)"
    assert "left out the sender's header(s) big" in worker.output


def test_a_worker_allowed_a_single_channel_still_parks_and_retries(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, b"\xff not a task")
        client.publish_task(queue, 1, 0, fail_attempts=1)
    worker = WorkerProcess(f"{broker.url}?channel_max=1", queue, tmp_path, "w", "--idle-timeout", "1.5",
                           "--retry-delay", "0.2")
    assert worker.wait(timeout=30) == 0, worker.output
    assert "connection lost" not in worker.output
    done = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done"]
    assert [(e["task_id"], e["attempt"]) for e in done] == [(1, 2)]
    with BrokerClient(broker.url) as client:
        assert len(client.drain(queue + ".dead")) == 1


# ---------------------------------------------------------------- queues deleted under the workers


def test_a_dead_letter_or_retry_queue_deleted_under_the_workers_is_declared_again(broker, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "2", "--retry-delay", "0.3")
    wait_for_consumers(broker.url, queue, 1)
    with BrokerClient(broker.url) as client:
        for name in (".dead", ".retry.0.3s"):
            client.channel.queue_delete(queue + name)
        client.publish(queue, b"\xff not a task")
        client.publish_task(queue, 1, 0, fail_attempts=1)
        client.publish_task(queue, 2, 0)
    assert worker.wait(timeout=30) == 0, worker.output
    done = sorted(e["task_id"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done")
    assert done == [1, 2]
    assert worker.output.count("was gone: declared it again") == 2, worker.output
    with BrokerClient(broker.url) as client:
        assert len(client.drain(queue + ".dead")) == 1


def test_a_queue_deleted_while_a_task_runs_is_named_as_such_and_the_work_recorded(broker, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1.5")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "1.5").returncode == 0
    worker.wait_for_output("started task 1")
    with BrokerClient(broker.url) as client:
        client.channel.queue_delete(queue)
    assert worker.wait(timeout=30) == 0, worker.output
    assert f"the queue '{queue}' was deleted while task 1 ran" in worker.output
    assert "consumer_timeout" not in worker.output and "it will be done again" not in worker.output
    [done] = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "done"]
    assert done["task_id"] == 1 and done["acked"] is False and done["finished"] - done["started"] >= 1.5


# ---------------------------------------------------------------- long runs


def test_a_long_run_keeps_the_summary_to_one_short_line(broker, queue, tmp_path):
    workers = [WorkerProcess(broker.url, queue, tmp_path, f"w{i}", "--idle-timeout", "1") for i in (1, 2)]
    wait_for_consumers(broker.url, queue, 2)
    published = run_publisher(broker.url, queue, "--count", "3000", "--min-seconds", "0", "--max-seconds", "0")
    assert published.returncode == 0
    counts = 0
    for worker in workers:
        assert worker.wait(timeout=60) == 0
        [summary] = [line for line in worker.output.splitlines() if "summary:" in line]
        assert len(summary) < 400, summary
        counts += int(summary.split("summary: ")[1].split(" ")[0])
    assert counts == 3000
