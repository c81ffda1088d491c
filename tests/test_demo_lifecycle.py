"""Whatever way the demo ends, what it started is stopped, and it says so; what it finds, it does not trust
blindly (an orphaned broker, leftover consumers, another demo, a listener that is no broker)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_demo import (
    DEMO,
    DURATIONS,
    assert_complete_report,
    demo_env,
    events_file,
    report_of,
    run_demo,
    skip_unless_the_demo_can_start_a_node,
)

from helpers import ROOT, WorkerProcess, read_events
from workqueue.brokers import (
    RABBITMQ_BIN,
    consumer_count,
    free_port_block,
    port_is_free,
    wait_for_consumers,
    wait_until,
)


def local_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], int]:
    """A demo that starts a local node on a free port, with no Docker engine to find and no management UI
    (the node boots in about half the time)."""
    skip_unless_the_demo_can_start_a_node()
    port = free_port_block(2)
    env = demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, PATH="/usr/bin:/bin",
                   RABBITMQ_BIN=str(RABBITMQ_BIN), RABBITMQ_MANAGEMENT_PORT="0", DOCKER_HOST="unix:///nonexistent",
                   **extra)
    return env, port


def nothing_listens(port: int) -> bool:
    """Whether a connection to the port is refused (a port in TIME-WAIT is not free to bind, yet unused)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def processes_of(folder: Path) -> list[str]:
    """The command lines of the processes that name this folder (a node keeps its data there)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(folder).encode() in cmdline.read_bytes():
                found.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def nothing_left(port: int, folder: Path | None = None) -> bool:
    """The demo's node, its management listener and its port mapper (port + 30000) are all gone; and no
    process names the test's folder (a node still booting listens on no port yet)."""
    return all(nothing_listens(p) for p in (port, port + 1, port + 30000)) and not (folder and processes_of(folder))


def start_demo(env: dict[str, str], output: Path, *args: str) -> subprocess.Popen:
    with open(output, "w") as out:
        return subprocess.Popen([DEMO, "--mode", "inline", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def test_demo_whose_stdout_closes_still_does_the_work_and_stops_its_broker(tmp_path):
    env, port = local_env(tmp_path)
    command = f"{DEMO} --mode inline --durations 0.2,0.2,0.2 --idle-timeout 1 | head -n 1"
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert len(result.stdout.splitlines()) == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    [events] = (tmp_path / "demo" / "runs").glob("*/events.jsonl")
    assert sorted(e["task_id"] for e in read_events(events, ("done",))) == [1, 2, 3], "the work went on"
    assert nothing_left(port, tmp_path), processes_of(tmp_path)


def test_demo_whose_terminal_closes_stops_its_workers_warmly_and_its_broker(tmp_path):
    env, port = local_env(tmp_path)
    output = tmp_path / "demo.out"
    demo = start_demo(env, output, "--durations", "2,2,2,2", "--idle-timeout", "1")
    try:
        wait_until(lambda: output.read_text().count("started task") == 2, 90, "both workers busy")
        demo.send_signal(signal.SIGHUP)
        assert demo.wait(timeout=60) == 1, "not every task was done"
    finally:
        if demo.poll() is None:
            demo.kill()
    text = output.read_text()
    assert "[demo] SIGHUP: the workers finish their current task, then stop" in text
    assert "2 done" in report_of(text) and "Traceback" not in text
    assert "[demo] stopping the broker this demo started (local node" in text
    assert nothing_left(port, tmp_path), processes_of(tmp_path)


def test_demo_interrupted_while_its_node_boots_stops_it(tmp_path):
    env, port = local_env(tmp_path)
    output = tmp_path / "demo.out"
    demo = start_demo(env, output)
    try:
        wait_until(lambda: "starting a throwaway RabbitMQ node" in output.read_text(), 60, "the node to be starting")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
    text = output.read_text()
    assert "Traceback" not in text and "[demo] stopping the broker this demo started (local node" in text, text
    assert nothing_left(port, tmp_path), processes_of(tmp_path)


def test_demo_in_a_folder_it_cannot_write_says_so_in_one_line_and_starts_nothing(tmp_path):
    env, port = local_env(tmp_path)
    folder = tmp_path / "read-only"
    folder.mkdir()
    # As root, permissions do not stop a write: a read-only file system does.
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                                    str(folder)]).returncode == 0
    if not mounted:
        folder.chmod(0o555)
    try:
        result = run_demo({**env, "DEMO_DIR": str(folder / "demo")}, "--mode", "inline")
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)])
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert re.fullmatch(r"run_demo.sh: error: cannot write in \S+ \((Read-only file system|Permission denied)\): "
                        r"set DEMO_DIR to a folder you can write\n", result.stderr), result.stderr
    assert nothing_left(port, tmp_path), processes_of(tmp_path)


def test_next_demo_stops_the_broker_an_earlier_one_could_not(tmp_path):
    env, port = local_env(tmp_path)
    first_output = tmp_path / "first.out"
    first = start_demo(env, first_output, "--durations", "2,2", "--idle-timeout", "1")
    wait_until(lambda: "all workers are consuming" in first_output.read_text(), 90, "the first demo's workers")
    first.kill()  # kill -9: nothing of the demo's runs to stop its broker
    first.wait()
    node_pid = json.loads((tmp_path / "demo" / "broker.json").read_text())["node"]
    try:
        second = run_demo(env, "--mode", "inline", "--durations", DURATIONS, "--idle-timeout", "1", timeout=180)
    finally:
        for pid_file in (tmp_path / "demo" / "runs").glob("*/*.pid"):  # the first demo's workers, if still there
            pid = pid_file.read_text().strip()
            with contextlib.suppress(OSError):
                if b"consumer.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(int(pid), signal.SIGKILL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"[demo] stopping the broker an earlier demo started and left running (local node, PID {node_pid})" \
        in second.stdout
    assert "starting a throwaway RabbitMQ node" in second.stdout, "a broker of its own, stopped at its end"
    assert_complete_report(second.stdout, 9)
    assert nothing_left(port, tmp_path), processes_of(tmp_path)


def test_start_broker_leaves_a_node_for_a_run_by_hand_and_stop_broker_stops_it(tmp_path):
    env, port = local_env(tmp_path)
    started = run_demo(env, "--start-broker")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "run python3 consumer.py in two terminals, then python3 publisher.py; ./run_demo.sh --stop-broker " \
               "stops it" in started.stdout
        assert not port_is_free(port), "still running after the command ended"
        again = run_demo(env, "--mode", "inline", "--durations", "0.1,0.1", "--idle-timeout", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "./run_demo.sh --stop-broker stops it" in again.stdout, "a demo leaves a kept broker running"
        assert not port_is_free(port)
    finally:
        stopped = run_demo(env, "--stop-broker")
    assert stopped.returncode == 0 and "[demo] stopped the broker at" in stopped.stdout, stopped.stdout
    assert nothing_left(port, tmp_path), processes_of(tmp_path)
    assert "no broker started by the demo is running" in run_demo(env, "--stop-broker").stdout


def test_demo_does_not_share_its_queue_with_a_leftover_worker(broker, tmp_path):
    env = demo_env(broker.url, tmp_path)
    leftover = WorkerProcess(broker.url, env["TASK_QUEUE"], tmp_path, "leftover", "--idle-timeout", "0")
    try:
        wait_for_consumers(broker.url, env["TASK_QUEUE"], 1)
        result = run_demo(env, "--mode", "inline", "--durations", DURATIONS, "--idle-timeout", "1")
    finally:
        leftover.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    own = re.search(r"already has 1 consumer\(s\), not this demo's .*: this run uses a queue of its own, '(\S+)'",
                    result.stdout)
    assert own, result.stdout
    assert_complete_report(result.stdout, 9)
    assert "started task" not in leftover.output
    assert consumer_count(broker.url, own.group(1)) is None, "the run's own queue is deleted at its end"


def test_two_demos_at_once_in_one_folder_each_report_their_own_run(broker, tmp_path):
    env = demo_env(broker.url, tmp_path)
    outputs = [tmp_path / "one.out", tmp_path / "two.out"]
    demos = [start_demo(env, outputs[0], "--durations", "0.3,0.3,0.3", "--idle-timeout", "1")]
    wait_until(lambda: "worker(s) (inline mode) on queue" in outputs[0].read_text(), 60, "the first on its queue")
    demos.append(start_demo(env, outputs[1], "--durations", "0.2,0.2,0.2,0.2,0.2", "--idle-timeout", "1"))
    assert [demo.wait(timeout=120) for demo in demos] == [0, 0], [path.read_text() for path in outputs]
    texts = [path.read_text() for path in outputs]
    assert_complete_report(texts[0], 3)
    assert_complete_report(texts[1], 5)
    assert events_file(texts[0]) != events_file(texts[1])
    assert sum("is in use by another demo run from this folder" in text for text in texts) == 1


def test_demo_probes_every_url_of_a_list(broker, tmp_path):
    dead = f"amqp://guest:guest@127.0.0.1:{free_port_block(1)}/%2F"
    result = run_demo(demo_env(f"{dead},{broker.url}", tmp_path), "--mode", "inline", "--durations", DURATIONS,
                      "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[demo] using the broker that answers at {broker.url.replace(':guest@', ':***@')}" in result.stdout
    assert_complete_report(result.stdout, 9)


def test_demo_facing_a_listener_that_never_answers_says_so_in_one_line(tmp_path):
    port = free_port_block(2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", port))
    silent.listen()
    start = time.monotonic()
    try:
        result = run_demo(demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, PATH="/usr/bin:/bin"),
                          "--mode", "inline")
    finally:
        silent.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(rf"run_demo.sh: error: something at 127.0.0.1:{port} accepts connections but no broker "
                        r"answers there \(.+\): stop it, or point AMQP_URL at another port\n", result.stderr), \
        result.stderr
    assert time.monotonic() - start < 30


def test_demo_with_idle_timeout_0_says_the_workers_wait_and_ctrl_c_ends_it(broker, tmp_path):
    output = tmp_path / "demo.out"
    demo = start_demo(demo_env(broker.url, tmp_path), output, "--durations", "0.1,0.1", "--idle-timeout", "0")
    try:
        wait_until(lambda: "the workers wait for more (--idle-timeout 0): Ctrl-C stops them" in output.read_text(),
                   60, "the demo to say the workers wait")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, output.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
    assert_complete_report(output.read_text(), 2)


def test_inline_lines_of_many_processes_never_run_into_each_other(broker, tmp_path):
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "inline", "--workers", "6", "--durations",
                      ",".join(["0.01"] * 60), "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    inline = result.stdout[:result.stdout.index("[demo] report")]
    for line in filter(None, inline.splitlines()):
        # Each line starts with one process's name column (the name, then two spaces or more), or [demo] : a
        # line that ran into another holds a second one.
        assert len(re.findall(r"(?:worker-\d+|publisher) {2,}|\[demo\] ", line)) == 1, line
        assert re.match(r"(?:worker-\d+|publisher) {2,}\S|\[demo\] ", line), line


def test_by_hand_scripts_without_pika_or_a_venv_say_what_to_run(tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("consumer.py", "publisher.py", "workqueue"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(copy)], check=True)
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import pika"], capture_output=True).returncode == 0:
        pytest.skip(f"{python} has pika: nothing is missing to test")
    for script in ("consumer.py", "publisher.py"):
        result = subprocess.run([python, script], cwd=copy, capture_output=True, text=True)
        assert result.returncode == 1
        assert result.stderr == (f"{script}: error: pika is missing from {python}: ./run_demo.sh --start-broker "
                                 "makes .venv with it (and starts a broker), or: python3 -m venv .venv && "
                                 ".venv/bin/pip install -r requirements.txt\n")
    # Beside a .venv (this checkout's), the same command runs in it.
    result = subprocess.run([python, "consumer.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "--idle-timeout" in result.stdout, result.stderr
