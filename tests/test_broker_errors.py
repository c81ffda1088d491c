"""What the scripts do when the broker is down, restarted, refuses them or rejects their tasks."""

from __future__ import annotations

import re
import time

from helpers import (
    BrokerClient,
    WorkerProcess,
    done_ids,
    elapsed,
    one_line_error,
    publish_with_fault,
    read_events,
    run_publisher,
    script_env,
    settled_quorum_queue,
)
from workqueue.brokers import free_port_block, wait_for_consumers, wait_until


def test_confirmed_tasks_survive_a_broker_crash(broker, node, queue, tmp_path):
    settled_quorum_queue(broker.url, queue)
    published = run_publisher(broker.url, queue, "--durations", "0.1,0.2,0.1,0.3,0.1,0.2")
    assert published.returncode == 0, published.stdout + published.stderr
    assert "6 of 6 tasks confirmed" in published.stdout

    node.kill()  # kill -9: no clean shutdown, no chance to flush anything more
    node.start()
    with BrokerClient(broker.url) as client:
        # A quorum queue reports its messages once it has replayed its log after the restart.
        wait_until(lambda: client.depth(queue) == 6, 30, "the 6 confirmed tasks to be back on the queue")
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1")
    assert worker.wait() == 0, worker.output
    assert sorted(done_ids(tmp_path / "events.jsonl")) == [1, 2, 3, 4, 5, 6]


def test_worker_reconnects_after_broker_restart_and_task_is_redone(broker, node, queue, tmp_path):
    settled_quorum_queue(broker.url, queue)
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "2", "--connect-timeout", "60")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "2,0.1,0.1").returncode == 0
    worker.wait_for_output("started task 1")
    node.restart()  # clean stop while task 1 runs: its ack can no longer be sent

    assert worker.wait(timeout=60) == 0, worker.output
    assert "connection lost" in worker.output
    assert "but could not ack it (" in worker.output and "it will be redelivered" in worker.output
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["task_id"], e["acked"]) for e in events if e["task_id"] == 1] == [(1, False), (1, True)]
    assert sorted(done_ids(tmp_path / "events.jsonl")) == [1, 2, 3]


def test_queue_with_other_arguments_is_a_one_line_error(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.channel.queue_declare(queue, durable=True)  # classic, as the older tutorial made it
    line = one_line_error(run_publisher(broker.url, queue, "--count", "1"))
    assert f"queue '{queue}' already exists" in line and "x-queue-type" in line
    assert "--queue-type classic" in line
    worker = WorkerProcess(broker.url, queue, tmp_path, "w")
    assert worker.wait() == 1
    assert "--queue-type classic" in worker.output and "Traceback" not in worker.output
    # ...and the suggested fix works.
    assert run_publisher(broker.url, queue, "--count", "1", "--queue-type", "classic").returncode == 0


def test_unreachable_broker_is_retried_then_a_one_line_error(tmp_path):
    port = free_port_block(1)
    url = f"amqp://guest:pa55word@127.0.0.1:{port}/%2F"
    start = time.monotonic()
    result = run_publisher(url, "q", "--connect-timeout", "2")
    line = one_line_error(result)
    assert 2 <= elapsed(start) < 10
    assert "cannot reach RabbitMQ" in line and "pa55word" not in result.stdout + result.stderr
    assert "attempt 2" in result.stdout, "each retry is logged"
    worker = WorkerProcess(url, "q", tmp_path, "w", "--connect-timeout", "1")
    assert worker.wait() == 1
    assert "cannot reach RabbitMQ" in worker.output and "pa55word" not in worker.output


def test_wrong_password_is_a_one_line_error_without_retries(broker, queue, tmp_path):
    url = broker.url.replace("guest:guest@", "guest:not-the-pa55word@")
    start = time.monotonic()
    result = run_publisher(url, queue, "--connect-timeout", "30")
    line = one_line_error(result)
    assert elapsed(start) < 10, "refused credentials must not be retried for the whole connect timeout"
    assert "refused the user name or password" in line
    assert "not-the-pa55word" not in result.stdout + result.stderr and "guest:***@" in line
    worker = WorkerProcess(url, queue, tmp_path, "w", "--connect-timeout", "30")
    assert worker.wait(timeout=10) == 1
    assert "refused the user name or password" in worker.output and "not-the-pa55word" not in worker.output


def test_unknown_vhost_is_a_one_line_error(broker, queue):
    url = broker.url.rsplit("/", 1)[0] + "/no-such-vhost"
    line = one_line_error(run_publisher(url, queue, "--connect-timeout", "30"))
    assert "denied access to the virtual host" in line


def test_unroutable_tasks_are_named_and_exit_1(broker, queue):
    def delete_queue(_publisher) -> None:  # runs in this thread: if it fails, the test fails
        with BrokerClient(broker.url) as client:
            client.channel.queue_delete(queue)

    # A classic queue: deleting a quorum queue under a confirming publisher makes RabbitMQ 3.10 close
    # the whole connection (541 INTERNAL_ERROR) rather than return the messages.
    result = publish_with_fault(broker.url, queue, delete_queue, "--count", "50000",
                                "--min-seconds", "0", "--max-seconds", "0", "--queue-type", "classic")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "NOT confirmed, unroutable" in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\[publisher\] NOT confirmed: task\(s\) \d+-50000", summary), summary


def test_tasks_the_broker_rejects_are_named_and_exit_1(broker, node, queue):
    node.ctl("set_policy", "--apply-to", "queues", f"cap-{queue}", f"^{queue}$",
             '{"max-length": 2, "overflow": "reject-publish"}')
    try:
        # Classic: a quorum queue enforces its length limit a message or so late.
        result = run_publisher(broker.url, queue, "--durations", "1,1,1,1", "--queue-type", "classic")
    finally:
        node.ctl("clear_policy", f"cap-{queue}")
    assert result.returncode == 1
    assert "task 3 (1 s): NOT confirmed, rejected by the broker" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[publisher] NOT confirmed: task(s) 3-4"


def test_publisher_reconnects_and_sends_unconfirmed_tasks_again(broker, node, queue, tmp_path):
    events = tmp_path / "published.jsonl"
    result = publish_with_fault(broker.url, queue, lambda _: node.ctl("close_all_connections", "test: connection cut"),
                                "--count", "50000", "--min-seconds", "0", "--max-seconds", "0", "--events", str(events))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "connection lost (ConnectionClosedByBroker" in result.stdout
    assert "reconnecting to publish" in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    again = int(re.search(r"; (\d+) sent again after a lost connection", summary).group(1))
    assert summary.startswith("[publisher] 50000 of 50000 tasks confirmed")
    confirmed_ids = [event["task_id"] for event in read_events(events)]
    assert sorted(confirmed_ids) == list(range(1, 50001)), "each task confirmed exactly once"
    with BrokerClient(broker.url) as client:
        # Every task is on the queue; only those sent again may be there twice, with the same message_id.
        on_queue = [properties.message_id for properties, _ in client.drain_fast(queue)]
    assert 50000 <= len(on_queue) <= 50000 + again
    assert len(set(on_queue)) == 50000, "a task sent again keeps its message_id"
    assert set(on_queue) == {event["message_id"] for event in read_events(events)}


def test_tasks_never_confirmed_are_named_when_the_broker_stays_down(broker, node, queue):
    # A classic queue: a quorum queue crashed this soon after its creation may come back leaderless.
    result = publish_with_fault(broker.url, queue, lambda _: node.kill(), "--count", "50000", "--min-seconds", "0",
                                "--max-seconds", "0", "--queue-type", "classic", "--connect-timeout", "1")
    assert result.returncode == 1
    assert "cannot reach RabbitMQ" in result.stderr and "Traceback" not in result.stderr
    confirmed = int(re.search(r"(\d+) of 50000 tasks confirmed", result.stdout).group(1))
    assert confirmed < 50000
    assert result.stdout.strip().splitlines()[-1] == f"[publisher] NOT confirmed: task(s) {confirmed + 1}-50000"


def test_scripts_read_every_setting_from_the_environment(broker, queue, tmp_path):
    import subprocess

    from helpers import PYTHON, ROOT
    env = {**script_env(broker.url), "TASK_QUEUE": queue, "TASK_DURATIONS": "0.1,0.1"}
    published = subprocess.run([PYTHON, str(ROOT / "publisher.py")], env=env, capture_output=True, text=True)
    assert "2 of 2 tasks confirmed on queue" in published.stdout, published.stderr
    env.update(WORKER_NAME="envworker", WORKER_IDLE_TIMEOUT="0.5", WORKER_EVENTS=str(tmp_path / "ev.jsonl"))
    worker = subprocess.run([PYTHON, str(ROOT / "consumer.py")], env=env, capture_output=True, text=True)
    assert worker.returncode == 0 and "[envworker] summary: 2 task(s) done" in worker.stdout
    assert len(read_events(tmp_path / "ev.jsonl")) == 2


def test_host_name_that_does_not_resolve_is_retried_then_a_one_line_error(tmp_path):
    url = "amqp://guest:pa55word@rabbitmq-typo.invalid:5672/%2F"
    result = run_publisher(url, "q", "--connect-timeout", "1")
    line = one_line_error(result)
    assert "cannot reach RabbitMQ" in line and "gaierror" in line and "pa55word" not in line
    assert "attempt 1, retrying" in result.stdout, "a name may resolve later (a restarting container): retried"
    worker = WorkerProcess(url, "q", tmp_path, "w", "--connect-timeout", "1")
    assert worker.wait() == 1
    assert "consumer.py: error: cannot reach RabbitMQ" in worker.output and "Traceback" not in worker.output


def test_a_url_list_moves_past_a_node_whose_name_does_not_resolve(broker, queue, tmp_path):
    url = f"amqp://guest:guest@node1.invalid:5672/%2F,{broker.url}"
    assert run_publisher(url, queue, "--durations", "0.05").returncode == 0
    worker = WorkerProcess(url, queue, tmp_path, "w", "--idle-timeout", "0.5")
    assert worker.wait() == 0, worker.output
    assert done_ids(tmp_path / "events.jsonl") == [1]


def test_tls_to_a_plain_port_is_retried_then_a_one_line_error(broker, queue, tmp_path):
    url = broker.url.replace("amqp://", "amqps://")
    line = one_line_error(run_publisher(url, queue, "--connect-timeout", "1"))
    assert "cannot reach RabbitMQ" in line
    worker = WorkerProcess(url, queue, tmp_path, "w", "--connect-timeout", "1")
    assert worker.wait() == 1 and "Traceback" not in worker.output


def assert_refused_at_once(url: str, queue: str, tmp_path, words: str, *flags: str) -> None:
    """Both scripts give up on a refusal at once, with one line naming it: no reconnect can fix it."""
    start = time.monotonic()
    line = one_line_error(run_publisher(url, queue, "--count", "1", *flags))
    assert words in line, line
    worker = WorkerProcess(url, queue, tmp_path, "w", *flags)
    assert worker.wait(timeout=20) == 1
    assert "consumer.py: error: the broker refused to" in worker.output and words in worker.output
    assert "reconnecting" not in worker.output and "Traceback" not in worker.output
    assert elapsed(start) < 15


def test_missing_permission_is_a_one_line_error_not_a_reconnect_loop(broker, node, queue, tmp_path):
    node.ctl("add_user", "limited", "limited-pw")
    try:
        node.ctl("set_permissions", "-p", "/", "limited", "^$", ".*", ".*")  # may not declare (configure) anything
        url = broker.url.replace("guest:guest@", "limited:limited-pw@")
        assert_refused_at_once(url, queue, tmp_path, "403 ACCESS_REFUSED")
    finally:
        node.ctl("delete_user", "limited")


def test_queue_held_exclusively_elsewhere_is_a_one_line_error(broker, queue, tmp_path):
    with BrokerClient(broker.url) as holder:
        holder.channel.queue_declare(queue, exclusive=True)
        assert_refused_at_once(broker.url, queue, tmp_path, "405 RESOURCE_LOCKED", "--queue-type", "classic")


def test_dead_letter_queue_that_refuses_the_copy_stops_the_worker_and_keeps_the_message(broker, node, queue, tmp_path):
    # Classic queues: a quorum queue enforces its length limit a message or so late.
    node.ctl("set_policy", "--apply-to", "queues", f"full-{queue}", f"^{queue}\\.dead$",
             '{"max-length": 0, "overflow": "reject-publish"}')
    try:
        with BrokerClient(broker.url) as client:
            client.declare(queue, "classic")
            client.publish(queue, b"\xff not a task")
        worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--queue-type", "classic")
        assert worker.wait(timeout=20) == 1
    finally:
        node.ctl("clear_policy", f"full-{queue}")
    assert f"consumer.py: error: the broker refused a message into '{queue}.dead'" in worker.output
    assert "reconnecting" not in worker.output and "Traceback" not in worker.output
    with BrokerClient(broker.url) as client:
        wait_until(lambda: client.depth(queue) == 1, 10, "the message to be back on the work queue")


def test_worker_says_what_it_waits_for_in_a_resource_alarm_and_gives_up_on_time(broker, node, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.declare_quorum(queue)
        client.publish(queue, b"\xff not a task")
    node.ctl("set_vm_memory_high_watermark", "0.000001")  # a memory alarm: publishing is blocked
    try:
        worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--blocked-timeout", "3", "--idle-timeout", "0")
        worker.wait_for_output(f"waiting for the broker to confirm the copy in '{queue}.dead'", timeout=10)
        worker.wait_for_output("connection lost (the broker blocked it for 3 s: a memory or disk alarm", timeout=10)
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")
    with BrokerClient(broker.url) as client:
        # The broker reads the blocked connection's goodbye only once the alarm is over: then the message
        # goes back to the queue, and the worker, connected again, parks it.
        wait_until(lambda: client.depth(queue) == 0 and client.depth(queue + ".dead") >= 1, 30,
                   "the message to be parked once the alarm cleared")
        worker.signal()
        assert worker.wait(timeout=30) == 0, worker.output
        assert client.depth(queue) == 0
        assert 1 <= len(client.drain(queue + ".dead")) <= 2, "parked once the alarm cleared; at worst twice"


def test_worker_whose_queue_is_deleted_says_so_and_subscribes_again(broker, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "2")
    wait_for_consumers(broker.url, queue, 1)
    with BrokerClient(broker.url) as client:
        client.channel.queue_delete(queue)  # the broker cancels the worker's consumer
    worker.wait_for_output(f"the queue '{queue}' was deleted: the broker cancelled this worker's subscription; "
                           "subscribing again")
    wait_for_consumers(broker.url, queue, 1)  # declared again, and consumed again
    assert run_publisher(broker.url, queue, "--durations", "0.05").returncode == 0
    assert worker.wait() == 0, worker.output
    assert done_ids(tmp_path / "events.jsonl") == [1]
