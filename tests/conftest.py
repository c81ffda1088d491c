"""Fixtures: one private RabbitMQ node for the session, a fresh queue for each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import pika
import pytest

from workqueue.brokers import (
    INSTALL_HINT,
    DockerBroker,
    LocalNode,
    RabbitNode,
    find_install,
    free_port_block,
    make_root,
    wait_until,
)
from workqueue.docker_engine import DockerEngine


@dataclass
class Broker:
    url: str
    node: RabbitNode | None  # None when the broker is not ours to stop or crash


def docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def can_connect(url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPConnectionError:
        return False
    return True


# Modules whose tests prove what does not depend on the broker's release (pure logic, the docs, the set-up,
# the demo's own decisions): run in the pass on this machine's RabbitMQ, skipped in a pass on another release
# (RABBITMQ_ROOT), which they would only repeat.
SAME_ON_EVERY_RELEASE = {"test_decisions.py", "test_settings_and_format.py", "test_report.py", "test_docs.py",
                         "test_page.py", "test_setup.py", "test_demo.py", "test_demo_lifecycle.py", "test_docker.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.environ.get("RABBITMQ_ROOT"):
        return
    skip = pytest.mark.skip(reason="the same on every release: tested in the pass on this machine's RabbitMQ")
    for item in items:
        if item.path.name in SAME_ON_EVERY_RELEASE:
            item.add_marker(skip)


def pytest_report_header() -> str:
    install = None if os.environ.get("AMQP_URL") else find_install()
    return f"broker: {os.environ['AMQP_URL'] if os.environ.get('AMQP_URL') else install or 'none found'}"


@pytest.fixture(scope="session")
def broker():
    """AMQP_URL if set; else a throwaway local node (RABBITMQ_ROOT: of another release); else Docker."""
    if os.environ.get("AMQP_URL"):
        yield Broker(os.environ["AMQP_URL"], None)
        return
    install = find_install()
    if install:
        with LocalNode(install, "wqtest") as node:
            yield Broker(node.url, node)
        return
    if docker_works():
        container = DockerBroker(free_port_block(1))
        try:
            wait_until(lambda: can_connect(container.url), 120, "the RabbitMQ container to accept connections", 1)
            yield Broker(container.url, None)
        finally:
            container.stop()
        return
    pytest.fail(INSTALL_HINT, pytrace=False)


@pytest.fixture(scope="session")
def docker_engine() -> tuple[DockerEngine, str]:
    """A real Docker engine of the tests' own, and the tag of a RabbitMQ 4.3 image made from the 4.3 root.

    The engine runs for the session and is stopped after it, with every container it ran.
    """
    if os.environ.get("RABBITMQ_ROOT"):
        pytest.skip("the demo's Docker path does not depend on the release the other tests run on: it is "
                    "tested in the run on this machine's RabbitMQ")
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("debootstrap"):
        pytest.skip("needs root, Debian's docker.io and debootstrap (./run_tests.sh installs them when run as root)")
    engine = DockerEngine()
    engine.start()
    try:
        yield engine, engine.rabbitmq_image(make_root("4.3"), "4.3")
    finally:
        engine.stop()


@pytest.fixture
def fresh_node(broker: Broker) -> RabbitNode:
    """A throwaway node of the same RabbitMQ, for this test alone: a crash test whose broker holds only its
    own queues (after the whole suite, the session's node recovers hundreds of quorum queues after a kill -9)."""
    if broker.node is None:
        pytest.skip("needs throwaway broker nodes of its own (unset AMQP_URL)")
    with LocalNode(broker.node.install, "wqfresh") as node:
        yield node


@pytest.fixture
def node(broker: Broker) -> RabbitNode:
    """The broker's node, for tests that stop, crash or reconfigure it."""
    if broker.node is None:
        pytest.skip("needs a throwaway broker node of its own (unset AMQP_URL)")
    yield broker.node
    if broker.node.process is None or broker.node.process.poll() is not None:
        broker.node.start()  # a failed test must not leave the broker down for the next one


# The delays of the retry queues that tests make: the defaults, and the short ones the retry tests use.
RETRY_DELAYS_USED = (0.2, 0.3, 0.4, 0.6, 0.8, 1, 1.2, 2, 4, 60)


@pytest.fixture
def queue(broker: Broker, request: pytest.FixtureRequest) -> str:
    """A queue name of this test's own; the queue and its dead-letter queue are deleted afterwards."""
    name = f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        for suffix in ("", ".dead", *(f".retry.{delay:g}s" for delay in RETRY_DELAYS_USED)):
            channel.queue_delete(name + suffix)
        connection.close()
    except pika.exceptions.AMQPError:
        pass  # the broker may be down after a fault test; its data dies with it



@pytest.fixture
def unused_url() -> str:
    """A URL where nothing listens."""
    return f"amqp://guest:guest@127.0.0.1:{free_port_block(1)}/%2F"
