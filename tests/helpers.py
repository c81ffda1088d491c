"""Run the real scripts as processes and look at the broker the way a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pika

from workqueue import _pika, events  # _pika: this process reads every message's properties as they came
from workqueue.brokers import wait_until
from workqueue.headers import Entry, encode_table, entries, split_properties
from workqueue.task import JSON_CONTENT_TYPE
from workqueue.topology import queue_arguments

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def script_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "WORKER_"))}
    env["AMQP_URL"] = url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def publisher_command(queue: str, *args: str) -> list[str]:
    return [PYTHON, str(ROOT / "publisher.py"), "--queue", queue, *args]


def run_publisher(url: str, queue: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(publisher_command(queue, *args), env=script_env(url), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The scripts' contract for errors: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


class WorkerProcess:
    """consumer.py running in the background, its output collected in a file."""

    def __init__(self, url: str, queue: str, folder: Path, name: str, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.events = folder / "events.jsonl"
        self.output_path = folder / f"{name}.out"
        with open(self.output_path, "wb") as out:
            self.process = subprocess.Popen(
                [PYTHON, str(ROOT / "consumer.py"), "--queue", queue, "--name", name,
                 "--events", str(self.events), *args],
                env={**script_env(url), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        wait_until(lambda: text in self.output, timeout, f"{self.name} to print {text!r}; it printed:\n{self.output}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout} s; it printed:\n{self.output}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def read_events(path: Path, kinds: tuple[str, ...] = ("published", "done", "failed")) -> list[dict]:
    """The events of these kinds in the file, in the order written; each line must be a whole event."""
    if not path.exists():
        return []
    read = list(events.read(str(path)))
    assert None not in read, f"{path} has lines that are not events"
    return [event for event in read if event["event"] in kinds]


def done_ids(path: Path) -> list[int]:
    """Task ids acked, in the order they finished."""
    return [event["task_id"] for event in sorted(read_events(path), key=lambda e: e["finished"]) if event["acked"]]


class BrokerClient:
    """A plain pika connection for the test itself: inspect queues, publish raw messages."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc) -> None:
        if self.connection.is_open:
            self.connection.close()

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def consumers(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.consumer_count

    def declare_quorum(self, queue: str) -> None:
        self.channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})

    def declare(self, queue: str, queue_type: str = "quorum") -> None:
        self.channel.queue_declare(queue, durable=True, arguments=queue_arguments(queue_type))

    def publish(self, queue: str, body: bytes, content_type: str | None = None, **properties) -> None:
        self.channel.basic_publish("", queue, body, pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type=content_type, **properties))

    def publish_task(self, queue: str, task_id: int, seconds: float, **fields) -> None:
        """A task as publisher.py sends it, with extra fields (fail_attempts) in its JSON body."""
        body = json.dumps({"task_id": task_id, "seconds": seconds, **fields}).encode()
        self.publish(queue, body, JSON_CONTENT_TYPE, message_id=f"test.{task_id}")

    def fail_deliveries(self, queue: str, times: int) -> None:
        """Take the queue's first message and reject it back, `times` times: each counts as a failed
        delivery, as a crashed worker's would, on RabbitMQ 3 and 4 alike (a nack would not on 4)."""
        for _ in range(times):
            method = wait_until(lambda: self.channel.basic_get(queue)[0], 10, f"a message on {queue}", 0.05)
            self.channel.basic_reject(method.delivery_tag, requeue=True)

    def drain_fast(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Every message on the queue, taken a thousand at a time: for queues of many thousands."""
        self.channel.basic_qos(prefetch_count=1000)
        messages = []
        for method, properties, body in self.channel.consume(queue, auto_ack=True, inactivity_timeout=1):
            if method is None:  # a second without a message: the queue is empty
                break
            messages.append((properties, body))
        self.channel.cancel()
        return messages

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, body))


# ---------------------------------------------------------------- headers as other clients write them


def field(kind: bytes, payload: bytes) -> bytes:
    return kind + payload


def long_string(data: bytes, kind: bytes = b"S") -> bytes:
    return kind + struct.pack(">I", len(data)) + data


def table(*items: tuple[str, bytes]) -> bytes:
    return encode_table([Entry(name.encode(), value) for name, value in items])


# A timestamp in milliseconds, as Java and JavaScript senders sometimes write one: year 57,000-odd, which
# Python's datetime cannot hold (pika 1.4 drops the connection on it).
MILLIS = field(b"T", struct.pack(">Q", 1_764_000_000_000))
# Every type of header value AMQP 0-9-1 has, as other clients write them, nested ones too.
EVERY_TYPE = [
    ("bool", field(b"t", b"\x01")), ("int8", field(b"b", b"\xfe")), ("uint8", field(b"B", b"\xfe")),
    ("int16", field(b"s", struct.pack(">h", -300))), ("uint16", field(b"u", struct.pack(">H", 65000))),
    ("int32", field(b"I", struct.pack(">i", -70000))), ("uint32", field(b"i", struct.pack(">I", 4000000000))),
    ("int64", field(b"l", struct.pack(">q", -(2**40)))), ("float", field(b"f", struct.pack(">f", 1.5))),
    ("double", field(b"d", struct.pack(">d", 2.5))), ("decimal", field(b"D", b"\x02" + struct.pack(">i", 12345))),
    ("text", long_string("caf\u00e9".encode())), ("latin1", long_string(b"caf\xe9")),
    ("bytes", long_string(b"\x00\xff", b"x")), ("when", field(b"T", struct.pack(">Q", 1_764_000_000))),
    ("millis", MILLIS), ("nothing", b"V"),
    ("nested", b"F" + table(("price", field(b"d", struct.pack(">d", 0.1))), ("at", MILLIS),
                            ("list", long_string(MILLIS + field(b"d", struct.pack(">d", 1.25)), b"A")))),
    ("list", long_string(field(b"I", struct.pack(">i", 1)) + long_string(b"two"), b"A")),
]


def raw_entries(properties: pika.BasicProperties) -> list[Entry]:
    """A message's headers as they were on the wire, in order (kept by _pika.KeptProperties)."""
    assert isinstance(properties, _pika.KeptProperties), "read through workqueue._pika"
    return entries(split_properties(properties.raw).get("headers", b"\0\0\0\0"))


def elapsed(start: float) -> float:
    return time.monotonic() - start



def fault_figures(name: str, published: list[dict], done: list[dict]) -> dict[str, int]:
    """What a fault test reports: tasks published and confirmed, done, done more than once, lost."""
    runs: dict[int, int] = {}
    acked: set[int] = set()
    for event in done:
        runs[event["task_id"]] = runs.get(event["task_id"], 0) + 1
        if event["acked"]:
            acked.add(event["task_id"])
    confirmed = {event["task_id"] for event in published}
    figures = {"published": max(confirmed, default=0), "confirmed": len(confirmed), "done": len(acked & confirmed),
               "duplicates": sum(count - 1 for count in runs.values()), "lost": len(confirmed - acked)}
    print(f"\nFAULT {name}: " + ", ".join(f"{key} {value}" for key, value in figures.items()), flush=True)
    return figures


# A quorum queue crashed within about a second of its creation can come back without a leader
# (RabbitMQ 3.10); tests that crash a node give a new queue this long to settle first.
QUORUM_SETTLE_SECONDS = 3


def settled_quorum_queue(url: str, queue: str) -> None:
    """Declare a quorum queue through the node at `url` (which then leads it) and let it settle."""
    with BrokerClient(url) as client:
        client.declare_quorum(queue)
    time.sleep(QUORUM_SETTLE_SECONDS)


def queue_has_messages(client: BrokerClient, queue: str) -> bool:
    try:
        return client.depth(queue) > 0
    except pika.exceptions.ChannelClosedByBroker:
        client.channel = client.connection.channel()  # not declared yet; a 404 closes the channel
        return False


def publish_with_fault(url: str, queue: str, fault: Callable[[subprocess.Popen], object], *args: str,
                       watch_url: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run publisher.py and strike it with fault(process) while it is surely mid-run.

    The publisher is paused (SIGSTOP) from the moment its first tasks are on the queue until fault()
    returns: it sends tens of thousands of tasks a second, so a fault that takes a second to land
    (rabbitmqctl boots a VM) could otherwise find it already done. A paused process is still a real
    one: the broker sees its connection open, and whatever the fault did waits for it when it wakes.
    """
    process = subprocess.Popen(publisher_command(queue, *args), env=script_env(url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        with BrokerClient(watch_url or url) as client:
            wait_until(lambda: queue_has_messages(client, queue) or process.poll() is not None, 30,
                       "the publisher's first tasks", interval=0.02)
        process.send_signal(signal.SIGSTOP)
        assert process.poll() is None, "the publisher finished before the fault: give it more tasks"
        try:
            fault(process)
        finally:
            process.send_signal(signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


class RecordingProxy:
    """A TCP proxy in front of the broker that keeps every byte its clients send (`sent`) and receive
    (`received`): what goes on the wire."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname, parts.port or 5672)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}", 1)
        self.sent = bytearray()
        self.received = bytearray()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                broker = socket.create_connection(self.upstream)
                threading.Thread(target=self.pump, args=(client, broker, self.sent), daemon=True).start()
                threading.Thread(target=self.pump, args=(broker, client, self.received), daemon=True).start()

    @staticmethod
    def pump(source: socket.socket, target: socket.socket, record: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                record += data
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def frames(self) -> list[bytes]:
        """Every whole frame the clients sent, as bytes, after the protocol header."""
        data, frames, offset = bytes(self.sent), [], 8
        while offset + 7 <= len(data):
            size = int.from_bytes(data[offset + 3:offset + 7], "big")
            frames.append(data[offset:offset + 8 + size])
            offset += 8 + size
        return frames

    def close(self) -> None:
        self.listener.close()
