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
    wait_until,
)


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
