"""A 3-node RabbitMQ cluster on this machine: losing the node that holds the connections and the queue leader.

Each test prints its figures (published, confirmed, done, duplicates, lost) in a line starting "FAULT".
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from helpers import (
    BrokerClient,
    WorkerProcess,
    fault_figures,
    publish_with_fault,
    read_events,
    run_publisher,
    settled_quorum_queue,
)
from workqueue.brokers import DISTRIBUTION_PORT_OFFSET, Cluster, RabbitNode, find_install, free_port_block, wait_until

# RabbitMQ 4 hands the tasks that consumers on a lost node held back to the queue only after this many
# milliseconds (60,000 by default); 3.x at once. The cluster here waits less, so the test does too.
CONSUMER_DISCONNECTED_TIMEOUT = 5_000


@pytest.fixture(scope="module")
def cluster():
    install = find_install()
    if not install:
        pytest.skip("needs rabbitmq-server installed locally, to run three nodes")
    nodes = Cluster(install, advanced=f"[{{rabbit, [{{consumer_disconnected_timeout, "
                                      f"{CONSUMER_DISCONNECTED_TIMEOUT}}}]}}].\n")
    try:
        nodes.start()
        yield nodes.nodes
    finally:
        nodes.stop()


def cluster_url(nodes: list[RabbitNode]) -> str:
    return ",".join(node.url for node in nodes)


def declare_led_by(node: RabbitNode) -> str:
    """A quorum queue declared through `node`, which therefore leads it."""
    queue = f"cluster-{uuid.uuid4().hex[:8]}"
    settled_quorum_queue(node.url, queue)
    return queue


def test_workers_survive_loss_of_their_node_and_the_queue_leader(cluster, tmp_path, capfd):
    r1, r2, _ = cluster
    queue = declare_led_by(r1)
    url = cluster_url(cluster)  # r1 first: every client starts there
    published = tmp_path / "published.jsonl"
    assert run_publisher(url, queue, "--count", "200", "--min-seconds", "0.02", "--max-seconds", "0.08",
                         "--seed", "2", "--events", str(published)).returncode == 0
    # Idle longer than the tasks held on the lost node may take to come back (RabbitMQ 4).
    idle = str(CONSUMER_DISCONNECTED_TIMEOUT / 1000 + 4)
    workers = [WorkerProcess(url, queue, tmp_path, f"w{i}", "--idle-timeout", idle, "--connect-timeout", "60")
               for i in range(3)]
    events = tmp_path / "events.jsonl"
    try:
        wait_until(lambda: len(read_events(events)) >= 40, 60, "work to be under way")
        r1.kill()
        for worker in workers:
            assert worker.wait(timeout=120) == 0, worker.output
            assert "connection lost" in worker.output, "each worker was on the node that died"
    finally:
        r1.start()
    with capfd.disabled():
        figures = fault_figures("cluster: kill -9 of the workers' node and queue leader, 3 workers",
                                read_events(published), read_events(events))
    assert figures["confirmed"] == 200 and figures["done"] == 200 and figures["lost"] == 0
    assert figures["duplicates"] <= 3, "only tasks in flight at the kill, one per worker, may be done again"
    with BrokerClient(r2.url) as client:
        assert client.depth(queue) == 0
    # The killed node came back and rejoined the cluster by itself.
    assert r2.ctl("await_online_nodes", "3", "--timeout", "60", check=False).returncode == 0


def test_publisher_moves_to_another_node_when_its_node_dies(cluster, tmp_path, capfd):
    r1, r2, _ = cluster
    queue = declare_led_by(r2)
    url = cluster_url(cluster)
    published = tmp_path / "published.jsonl"

    try:
        result = publish_with_fault(url, queue, lambda _: r1.kill(), "--count", "50000", "--min-seconds", "0",
                                    "--max-seconds", "0", "--events", str(published), watch_url=r2.url, timeout=120)
    finally:
        r1.start()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "connection lost" in result.stdout and "reconnecting to publish" in result.stdout
    again = int(re.search(r"; (\d+) sent again after a lost connection", result.stdout).group(1))
    confirmed = sorted(event["task_id"] for event in read_events(published))
    assert confirmed == list(range(1, 50001)), "every task confirmed, each once"
    with BrokerClient(r2.url) as client:
        depth = client.depth(queue)
        assert 50000 <= depth <= 50000 + again
        client.channel.queue_delete(queue)
    with capfd.disabled():
        print(f"\nFAULT cluster: kill -9 of the publisher's node mid-run: published 50000, confirmed "
              f"{len(confirmed)}, sent again {again}, on the queue {depth} ({depth - 50000} twice), lost 0")


def test_node_ports_are_none_that_a_connection_can_take_first():
    """A cluster's nodes get their ports before any of them binds one: no port twice, and none from the range
    the kernel gives to outgoing connections, where one took a booting node's port (eaddrinuse)."""
    bases = [free_port_block(4) for _ in range(100)]
    ports = [base + i + offset for base in bases for i in range(4) for offset in (0, DISTRIBUTION_PORT_OFFSET)]
    assert len(ports) == len(set(ports)), "no port handed out twice"
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first_ephemeral = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 49152
    assert max(ports) < first_ephemeral
