"""publisher.py's pipelined confirms: every task confirmed once, progress on a terminal, its rate."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess

import pika
import pytest

from helpers import (
    PYTHON,
    ROOT,
    BrokerClient,
    RecordingProxy,
    publish_with_fault,
    read_events,
    run_publisher,
    script_env,
)
from workqueue import _pika


def test_publishing_without_failures_sends_each_task_once(broker, queue, tmp_path):
    events = tmp_path / "published.jsonl"
    result = run_publisher(broker.url, queue, "--count", "5000", "--min-seconds", "0", "--max-seconds", "0.01",
                           "--seed", "3", "--events", str(events))
    assert result.returncode == 0, result.stdout[-2000:]
    published = read_events(events)
    assert sorted(event["task_id"] for event in published) == list(range(1, 5001))
    assert len({event["message_id"] for event in published}) == 5000
    assert "sent again" not in result.stdout
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 5000


# Bodies at every edge of AMQP's framing: none, one byte, a frame exactly full (frame_max - 8 bytes), one byte
# over, several frames, and 1 MiB.
def edge_bodies(frame_max: int) -> list[bytes]:
    sizes = [0, 1, frame_max - 8, frame_max - 7, 3 * (frame_max - 8) + 5, 1 << 20]
    return [bytes((size + i) % 251 for i in range(size)) for size in sizes]


# The method id of Basic.Publish (class 60, method 40), as the payload of its method frame starts.
BASIC_PUBLISH = bytes([0, 60, 0, 40])


def publish_frames(frames: list[bytes]) -> list[bytes]:
    """The frames of publishing on channel 1, in order: Basic.Publish, content header, content body."""
    def publishing(frame: bytes) -> bool:
        return frame[1:3] == b"\x00\x01" and (frame[0] in (2, 3) or frame[7:11] == BASIC_PUBLISH)
    return [frame for frame in frames if publishing(frame)]


@pytest.mark.parametrize("frame_max", [8192, 131072])  # 8192: the least RabbitMQ 4 accepts
def test_publisher_frames_are_pikas_own(broker, queue, frame_max):
    """_pika.FramePublisher makes pika's frames itself and writes a window of them in one go: on the wire, byte for
    byte what basic_publish sends, for a body of any size, and every message confirmed by a real broker. This
    fails if pika changes its framing, or the private method the window goes out through."""
    bodies = edge_bodies(frame_max)
    messages = [(body, pika.BasicProperties(delivery_mode=2, message_id=f"frames.{n}"))
                for n, body in enumerate(bodies)]
    seen: dict[str, int] = {"confirmed": 0}

    def on_channel_open(channel) -> None:
        channel.confirm_delivery(ack_nack_callback=on_confirm)
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"},
                              callback=lambda _frame: publish(channel))

    def publish(channel) -> None:
        for body, properties in messages:  # pika's own, first
            channel.basic_publish("", queue, body, properties, mandatory=True)
        frames = _pika.FramePublisher(channel, queue)
        for body, properties in messages:
            frames.add(body, properties)
        frames.send()

    def on_confirm(frame) -> None:
        seen["confirmed"] = frame.method.delivery_tag
        if frame.method.delivery_tag == 2 * len(messages):
            connection.close()

    proxy = RecordingProxy(f"{broker.url}?frame_max={frame_max}")
    connection = pika.SelectConnection(pika.URLParameters(proxy.url),
                                       on_open_callback=lambda c: c.channel(on_open_callback=on_channel_open),
                                       on_close_callback=lambda *_: connection.ioloop.stop())
    connection.ioloop.call_later(30, connection.ioloop.stop)
    connection.ioloop.start()
    proxy.close()
    sent = publish_frames(proxy.frames())
    assert len(sent) % 2 == 0 and sent, "as many frames from each"
    pikas, ours = sent[:len(sent) // 2], sent[len(sent) // 2:]
    assert ours == pikas, "a message's frames are byte for byte what basic_publish makes"
    assert max(len(frame) for frame in ours) <= frame_max, "no frame larger than the broker allows"
    assert seen["confirmed"] == 2 * len(messages), "every message confirmed: the framing is the broker's too"
    with BrokerClient(broker.url) as client:
        delivered = client.drain(queue)
    assert [body for _, body in delivered] == bodies * 2, "each body whole, however many frames it took"


def test_a_queue_name_the_terminal_cannot_show_is_escaped_not_a_crash(broker, queue):
    name = f"{queue}-\u2603"
    result = subprocess.run([PYTHON, str(ROOT / "publisher.py"), "--queue", name, "--count", "3"],
                            env={**script_env(broker.url), "PYTHONIOENCODING": "ascii"}, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    with BrokerClient(broker.url) as client:
        depth = client.depth(name)
        client.channel.queue_delete(name)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert f"3 of 3 tasks confirmed on queue '{queue}-\\u2603'" in result.stdout and depth == 3


def test_large_count_shows_progress_on_a_terminal_only(broker, queue):
    args = [PYTHON, str(ROOT / "publisher.py"), "--queue", queue, "--count", "20000",
            "--min-seconds", "0", "--max-seconds", "0"]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(args, env=script_env(broker.url), stdin=subprocess.DEVNULL, stdout=terminal,
                               stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the publisher has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert "\r[publisher] 20000 of 20000 tasks confirmed" in text
    assert re.search(r"20000 of 20000 tasks confirmed on queue .* in [\d.]+ s, [\d,]+ tasks/s", text)
    assert "sent task" not in text, "no line per task for a large count"

    piped = run_publisher(broker.url, queue, "--count", "20000", "--min-seconds", "0", "--max-seconds", "0")
    assert piped.returncode == 0 and "\r" not in piped.stdout
    assert piped.stdout.count("\n") == 1, "only the summary when output is piped"
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 40000


def id_set(ranges: str) -> set[int]:
    """'1-3, 7' -> {1, 2, 3, 7}"""
    ids: set[int] = set()
    for part in ranges.split(", "):
        first, _, last = part.partition("-")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_every_task_is_accounted_for_exactly_once_when_interrupted(broker, queue, tmp_path, signum):
    events = tmp_path / "published.jsonl"
    result = publish_with_fault(broker.url, queue, lambda process: process.send_signal(signum), "--count", "100000",
                                "--min-seconds", "0", "--max-seconds", "0", "--events", str(events))
    output = result.stdout
    assert result.returncode == 1, output[-2000:] + result.stderr
    assert "interrupted: sending no more tasks; waiting up to 5 s for the confirms" in output
    summary, not_confirmed = output.strip().splitlines()[-2:]
    confirmed = int(re.search(r"\] (\d+) of 100000 tasks confirmed", summary).group(1))
    confirmed_ids = [event["task_id"] for event in read_events(events)]
    named = id_set(not_confirmed.removeprefix("[publisher] NOT confirmed: task(s) "))
    assert len(confirmed_ids) == len(set(confirmed_ids)) == confirmed, "each confirmed task written once"
    assert not named & set(confirmed_ids), "no task both confirmed and named as not confirmed"
    assert named | set(confirmed_ids) == set(range(1, 100001)), "no task missing from both"
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) >= confirmed


def test_events_file_that_cannot_be_written_does_not_resend_anything(broker, queue):
    # /dev/full opens, then refuses every write: the error is ours, not a lost connection.
    result = run_publisher(broker.url, queue, "--durations", "0,0,0", "--events", "/dev/full")
    assert result.returncode == 0, result.stdout + result.stderr
    # One line per failed write; a write holds every task of one confirm, and the line says how many.
    lost = re.findall(r"could not write to the events file '/dev/full': .*\((\d+) task\(s\) not recorded\)",
                      result.stdout)
    assert lost and sum(map(int, lost)) == 3, result.stdout
    assert "sent again" not in result.stdout and "3 of 3 tasks confirmed" in result.stdout
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 3
