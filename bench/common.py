"""Shared by the benchmarks: a throwaway broker (or AMQP_URL), queues, workers, and median figures."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from rabbit import INSTALL_HINT, EpmdDaemon, RabbitNode, find_server, free_port_block  # noqa: E402

PYTHON = sys.executable


@contextlib.contextmanager
def broker_url() -> Iterator[str]:
    """AMQP_URL if set, else a private throwaway node that is stopped afterwards."""
    if os.environ.get("AMQP_URL"):
        yield os.environ["AMQP_URL"]
        return
    found = find_server()
    if not found:
        sys.exit(f"bench: {INSTALL_HINT}")
    base = free_port_block(2)
    epmd = EpmdDaemon(base + 1)
    node = RabbitNode(Path(tempfile.mkdtemp(prefix="bench-rabbit-")), f"bench{base}", base, base + 1, *found)
    try:
        node.start()
        yield node.url
    finally:
        node.stop()
        epmd.stop()


def fresh_queue(url: str, queue_type: str = "quorum") -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    connection.channel().queue_declare(name, durable=True, arguments=arguments)
    connection.close()
    return name


def delete_queue(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_delete(queue)
    channel.queue_delete(queue + ".dead")
    connection.close()


def publish(url: str, queue: str, durations: list[float]) -> None:
    """Fill the queue with the tasks, through publisher.py's own code."""
    result = subprocess.run([PYTHON, str(ROOT / "publisher.py"), "--url", url, "--queue", queue,
                             "--durations", ",".join(f"{d:g}" for d in durations)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: publishing failed:\n{result.stdout[-2000:]}{result.stderr}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}")
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))
