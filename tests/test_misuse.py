"""Every wait has an end, and every misuse gets one right line: signals under alarms and frozen brokers, the user's
deadlines, URLs, names and flags, mismatched queues, closed pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers import (
    PYTHON,
    ROOT,
    BrokerClient,
    WorkerProcess,
    elapsed,
    one_line_error,
    publisher_command,
    queue_has_messages,
    run_publisher,
    script_env,
)
from workqueue import events
from workqueue.brokers import wait_for_consumers, wait_until


def run_script(script: str, *args: str, url: str = "amqp://guest:guest@127.0.0.1:1/%2F") -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / script), *args], env=script_env(url), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def usage_error(result: subprocess.CompletedProcess) -> str:
    """A usage error: exit 2, one line after argparse's usage line, nothing tried, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "attempt" not in result.stdout, result.stdout + result.stderr
    return result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- URLs, names and flags, checked before connecting


@pytest.mark.parametrize("url", ["amqp://u:p@localhost/team/jobs", "amqp://u:p@localhost//lead"])
@pytest.mark.parametrize("script", ["publisher.py", "consumer.py"])
def test_a_slash_in_a_vhost_must_be_percent_encoded(script, url):
    line = usage_error(run_script(script, "--url", url))
    assert "%2F" in line and "vhost" in line, line


@pytest.mark.parametrize("name, why", [("a" * 250, "too long"), ("\u00e9" * 124, "too long"), ("", "empty")])
@pytest.mark.parametrize("script", ["publisher.py", "consumer.py"])
def test_a_queue_name_that_cannot_work_is_a_usage_error(script, name, why):
    line = usage_error(run_script(script, "--queue", name))
    assert "--queue" in line and why in line, line


@pytest.mark.parametrize("flags, words", [
    (["--retry-delay", "1e308"], "--retry-delay"),
    (["--retry-max-delay", "1e30", "--retries", "100"], "--retry-max-delay"),
    (["--retries", "1000001"], "--retries"),
])
def test_retry_settings_the_broker_cannot_keep_are_usage_errors(flags, words):
    line = usage_error(run_script("consumer.py", *flags))
    assert words in line, line


# ---------------------------------------------------------------- the user's deadlines hold


class SilentListener:
    """A port that accepts connections and never says a word: no AMQP."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.server.getsockname()[1]}/%2F"
        self.held: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        for held in self.held:
            held.close()
        self.server.close()


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


def test_the_connect_timeout_holds_against_a_port_that_never_speaks_amqp(silent, tmp_path):
    start = time.monotonic()
    line = one_line_error(run_publisher(silent.url, "q", "--connect-timeout", "3"))
    assert elapsed(start) < 6, "3 s, not pika's own 15 s"
    assert "cannot reach RabbitMQ" in line and "after 3 s" in line
    worker = WorkerProcess(silent.url, "q", tmp_path, "w", "--connect-timeout", "3")
    assert worker.wait(timeout=10) == 1 and "cannot reach RabbitMQ" in worker.output


def test_a_url_list_moves_on_from_a_node_that_never_answers_and_says_so(broker, queue, silent):
    start = time.monotonic()
    result = run_publisher(f"{silent.url},{broker.url}", queue, "--durations", "0.1", "--connect-timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed(start) < 15, "the next node is tried well within the connect timeout"
    assert "trying the next" in result.stdout


def test_connection_attempts_in_the_url_do_not_stretch_the_connect_timeout(unused_url):
    start = time.monotonic()
    result = run_publisher(f"{unused_url}?connection_attempts=4&retry_delay=5", "q", "--connect-timeout", "2")
    line = one_line_error(result)
    assert elapsed(start) < 5 and "after 2 s" in line


# ---------------------------------------------------------------- signals end every wait


@contextlib.contextmanager
def frozen(node):
    """The broker's VM stopped (SIGSTOP): connections stay open, nothing is answered."""
    pid = node.beam_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def memory_alarm(node):
    node.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        yield
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")


def test_an_interrupted_publisher_leaves_within_its_grace_during_a_resource_alarm(broker, node, queue):
    with memory_alarm(node):
        process = subprocess.Popen(publisher_command(queue, "--durations", "1,1,1", "--blocked-timeout", "60"),
                                   env=script_env(broker.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, stdin=subprocess.DEVNULL)
        assert "the broker blocked publishing" in process.stdout.readline()
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert elapsed(start) < 8, "the 5 s grace, not the 60 s of --blocked-timeout"
    assert process.returncode == 1 and "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == "[publisher] NOT confirmed: task(s) 1-3"


def test_a_second_signal_ends_the_publisher_at_once_when_the_broker_is_frozen(broker, node, queue):
    process = subprocess.Popen(publisher_command(queue, "--count", "20000", "--min-seconds", "0", "--max-seconds", "0"),
                               env=script_env(broker.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, stdin=subprocess.DEVNULL)
    with BrokerClient(broker.url) as client:
        wait_until(lambda: queue_has_messages(client, queue), 20, "the first tasks on the queue", 0.02)
    with frozen(node):
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        waited = elapsed(start)
        if process.poll() is None:
            process.kill()
    stdout, stderr = process.communicate()
    assert waited < 2, "a second signal ends the wait at once"
    assert process.returncode == 1 and "Traceback" not in stderr
    assert "NOT confirmed" in stdout.strip().splitlines()[-1]


def test_an_idle_worker_leaves_within_its_grace_when_the_broker_freezes(broker, node, queue, tmp_path):
    worker = WorkerProcess(broker.url, queue, tmp_path, "w", "--idle-timeout", "1", "--connect-timeout", "3")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "0").returncode == 0
    worker.wait_for_output("done task 1")
    with frozen(node):
        start = time.monotonic()
        code = worker.wait(timeout=30)
        waited = elapsed(start)
    assert waited < 1 + 5 + 2, worker.output
    assert code == 0 and "Traceback" not in worker.output
    assert "summary: 1 task(s) done" in worker.output


# ---------------------------------------------------------------- advice that is right


def test_a_queue_with_another_argument_gets_advice_that_names_it(broker, queue):
    with BrokerClient(broker.url) as client:
        client.channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 5})
    line = one_line_error(run_publisher(broker.url, queue, "--count", "1", "--queue-type", "classic"))
    assert "x-max-priority" in line and "--queue-type" not in line, line
    assert f"rabbitmqctl delete_queue {queue}" in line or "--queue" in line


# ---------------------------------------------------------------- noise that buries the error


def test_tasks_never_sent_are_one_line(broker, queue):
    with BrokerClient(broker.url) as client:
        client.channel.queue_declare(queue, durable=True)  # classic: a mismatch for the default quorum
    result = run_publisher(broker.url, queue, "--count", "100")
    assert result.returncode == 1
    assert len(result.stdout.strip().splitlines()) == 3, result.stdout  # that line, the summary, the ids
    assert "NOT confirmed, never" not in result.stdout
    assert "100 task(s) never sent (gave up, see the error): 1-100" in result.stdout


# ---------------------------------------------------------------- a closed stdout


def test_a_closed_stdout_stops_no_work(broker, queue):
    head = f"{PYTHON} -c 'import sys; print(sys.stdin.readline(), end=\"\")'"
    publisher = subprocess.run(f"{' '.join(publisher_command(queue, '--durations', ','.join(['0.01'] * 30)))} | {head}",
                               shell=True, env=script_env(broker.url), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in publisher.stderr and "BrokenPipe" not in publisher.stderr, publisher.stderr
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 30
    worker = subprocess.run(f"{PYTHON} {ROOT / 'consumer.py'} --queue {queue} --idle-timeout 1 | {head}",
                            shell=True, env=script_env(broker.url), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in worker.stderr, worker.stderr
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0, "every task done, though nobody read the worker's lines"



def test_a_classic_queue_is_classic_in_a_vhost_whose_default_is_quorum(broker, node, queue, tmp_path):
    node.ctl("add_vhost", "quorum-first", "--default-queue-type", "quorum")
    try:
        node.ctl("set_permissions", "-p", "quorum-first", "guest", ".*", ".*", ".*")
        url = broker.url.replace("/%2F", "/quorum-first")
        assert run_publisher(url, queue, "--durations", "0", "--queue-type", "classic").returncode == 0
        kinds = node.ctl("list_queues", "-p", "quorum-first", "name", "type", "--no-table-headers").stdout
        assert f"{queue}\tclassic" in kinds, kinds
        line = one_line_error(run_publisher(url, queue, "--durations", "0"))  # a default (quorum) publisher
        assert "x-queue-type" in line and "--queue-type classic" in line, line
    finally:
        node.ctl("delete_vhost", "quorum-first")


def test_a_retry_queue_made_by_other_workers_gets_advice_not_a_bare_refusal(broker, queue, tmp_path):
    with BrokerClient(broker.url) as client:
        client.channel.queue_declare(f"{queue}.retry.1s", durable=True, arguments={"x-max-length": 5})
    worker = WorkerProcess(broker.url, queue, tmp_path, "w")
    assert worker.wait(timeout=20) == 1
    assert f"retry queue '{queue}.retry.1s' already exists with another" in worker.output, worker.output
    assert "run workers of one kind" in worker.output and "Traceback" not in worker.output
    with BrokerClient(broker.url) as client:
        client.channel.queue_delete(f"{queue}.retry.1s")


# ---------------------------------------------------------------- the events file, and memory


def test_a_fifo_nobody_reads_is_a_usage_error_not_a_hang(tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    line = usage_error(run_script("publisher.py", "--events", str(fifo)))
    assert "FIFO that no process reads" in line


def test_a_line_cut_short_by_a_full_disk_costs_that_line_only(tmp_path):
    path = tmp_path / "events.jsonl"
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from workqueue import events
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write is cut short, or fails: a full disk
writer = events.Writer({str(path)!r})
writer.write({{"event": "killed", "worker": "w", "started": 1, "at": 2}})
resource.setrlimit(resource.RLIMIT_FSIZE, (80, resource.RLIM_INFINITY))
print(writer.write({{"event": "killed", "worker": "w" * 40, "started": 3, "at": 4}}))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # room again
print(writer.write({{"event": "killed", "worker": "w", "started": 5, "at": 6}}))
"""
    result = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=30)
    problem, after = result.stdout.splitlines()
    assert "could not write to the events file" in problem and after == "None", result.stdout + result.stderr
    lines = [events.checked(line) for line in path.read_text().splitlines()]
    assert [line and line["started"] for line in lines] == [1, None, 5], "the cut line is one bad line; the next whole"


# Runs a command and prints its exit code and peak RSS in KiB; SIGINT is passed on. Not measured from the
# tests' own process: a child that Python starts with vfork inherits its parent's peak RSS (ru_maxrss counts
# the memory of the parent it borrowed before exec), so the peak would be pytest's, not the publisher's.
PEAK_RSS = """
import os, signal, subprocess, sys
signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def test_a_huge_run_takes_no_more_memory_than_a_small_one(broker, queue, tmp_path):
    """Ten million tasks, all flaky: made one by one as they are sent, with nothing kept per task."""
    def peak_rss(*args: str, interrupt: bool) -> tuple[int, float]:
        process = subprocess.Popen([sys.executable, "-c", PEAK_RSS, *publisher_command(queue, *args)],
                                   env=script_env(broker.url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True)
        if interrupt:
            with BrokerClient(broker.url) as client:
                wait_until(lambda: queue_has_messages(client, queue), 30, "the first tasks on the queue", 0.05)
            process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
        code, kib = output.split()[-2:] if output.strip() else ("?", "0")
        assert code.lstrip("-").isdigit(), f"the publisher under the measure printed:\n{output}"
        return int(code), int(kib) / 1024

    small = peak_rss("--count", "0", interrupt=False)  # the same publisher, connected, with nothing to send
    huge = peak_rss("--count", "10000000", "--flaky", "10000000", "--min-seconds", "0", "--max-seconds", "0",
                    interrupt=True)
    assert small[0] == 0 and huge[0] == 1, "interrupted: not every task of the huge run confirmed"
    assert huge[1] < small[1] + 15, f"peak RSS {huge[1]:.0f} MiB for ten million tasks, {small[1]:.0f} MiB for ten"
