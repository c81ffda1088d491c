"""A 3-node RabbitMQ cluster on this machine: losing the node that holds the connections and the queue leader.

Each test prints its figures (published, confirmed, done, duplicates, lost) in a line starting "FAULT".
"""

from __future__ import annotations

import re
import secrets
import uuid

import pytest

from helpers import (
    BrokerClient,
    WorkerProcess,
    fault_figures,
    once_publishing_started,
    read_events,
    run_publisher,
    settled_quorum_queue,
)
from rabbit import EpmdDaemon, RabbitNode, find_server, free_port_block, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    found = find_server()
    if not found:
        pytest.skip("needs rabbitmq-server installed locally, to run three nodes")
    folder = tmp_path_factory.mktemp("cluster")
    home = folder / "home"  # one Erlang cookie for the three nodes
    home.mkdir()
    (home / ".erlang.cookie").write_text(secrets.token_hex(16))
    (home / ".erlang.cookie").chmod(0o400)
    base = free_port_block(4)
    epmd = EpmdDaemon(base + 3)
    nodes = [RabbitNode(folder / f"r{i + 1}", f"wqc{base}r{i + 1}", base + i, base + 3, *found, home=home)
             for i in range(3)]
    try:
        for node in nodes:
            node.launch()  # boot in parallel
        for node in nodes:
            node.wait_ready()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].name)
            node.ctl("start_app")
        nodes[0].ctl("await_online_nodes", "3")
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        epmd.stop()


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
    workers = [WorkerProcess(url, queue, tmp_path, f"w{i}", "--idle-timeout", "3", "--connect-timeout", "60")
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

    killer = once_publishing_started(r2.url, queue, r1.kill)
    try:
        result = run_publisher(url, queue, "--count", "50000", "--min-seconds", "0", "--max-seconds", "0",
                               "--events", str(published), timeout=120)
    finally:
        killer.join()
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
