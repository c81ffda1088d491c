"""publisher.py's pipelined confirms: every task confirmed once, progress on a terminal, its rate."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from helpers import PYTHON, ROOT, BrokerClient, read_events, run_publisher, script_env


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
