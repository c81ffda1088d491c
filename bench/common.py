"""Shared by the benchmarks: a throwaway broker (or AMQP_URL), queues, workers, and median figures.

The benchmarks run as modules from the project's folder: .venv/bin/python -m bench.run_all
"""

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

from workqueue import events
from workqueue.brokers import INSTALL_HINT, LocalNode, find_install, wait_for_consumers

ROOT = Path(__file__).resolve().parent.parent

PYTHON = sys.executable
# Stands for the events file in a worker's command line; run_workers puts a fresh file there.
EVENTS = "{events}"


@contextlib.contextmanager
def broker_url() -> Iterator[str]:
    """AMQP_URL if set, else a private throwaway node that is stopped afterwards."""
    if os.environ.get("AMQP_URL"):
        yield os.environ["AMQP_URL"]
        return
    install = find_install()
    if not install:
        sys.exit(f"bench: {INSTALL_HINT}")
    with LocalNode(install, "bench") as node:
        yield node.url


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
    """Fill the queue with the tasks, through publisher.py itself."""
    result = subprocess.run([PYTHON, str(ROOT / "publisher.py"), "--url", url, "--queue", queue, "--durations",
                             ",".join(f"{d:g}" for d in durations)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: publishing failed:\n{result.stdout[-2000:]}{result.stderr}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def cell_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}")
    cells = [header] + [[cell_text(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def consumer_command(url: str, queue: str, name: str, events: str, script: Path = ROOT / "consumer.py") -> list[str]:
    return [PYTHON, str(script), "--url", url, "--queue", queue, "--name", name, "--events", events,
            "--idle-timeout", "1"]


def tutorial_command(url: str, queue: str, name: str, events: str, prefetch: int = 1) -> list[str]:
    return [PYTHON, "-m", "bench.tutorial_worker", "--url", url, "--queue", queue, "--name", name,
            "--events", events, "--idle-timeout", "1", "--prefetch", str(prefetch)]


def run_workers(url: str, commands: list[list[str]], queue: str, durations: list[float]) -> list[dict]:
    """Start the workers; once all consume, publish `durations`.

    Returns the events of the tasks they did, once they have all exited.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        processes = [subprocess.Popen([str(path) if arg == EVENTS else arg for arg in command], cwd=ROOT,
                                      stdout=subprocess.DEVNULL) for command in commands]
        wait_for_consumers(url, queue, len(commands))
        publish(url, queue, durations)
        for process in processes:
            process.wait()
        return [e for e in events.read(str(path)) if e and e["event"] == "done"] if path.exists() else []


def makespan(events: list[dict]) -> float:
    return max(e["finished"] for e in events) - min(e["started"] for e in events)

