"""run_demo.sh end to end: inline, tmux and terminal windows, the Docker path, a local node, Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from browser import is_blank, screenshot
from test_page import assert_page_shows_the_run, drawn, page_of_demo

from helpers import ROOT, read_events
from workqueue.brokers import RABBITMQ_BIN, free_port_block, port_is_free, wait_until

DEMO = str(ROOT / "run_demo.sh")
# Short tasks keep each demo run to a few seconds; their ideal 2-worker schedule is 0.9 s.
DURATIONS = "0.3,0.1,0.4,0.1,0.5,0.2,0.2,0.3,0.1"


def demo_env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "WORKER_", "TMUX"))}
    env.update(AMQP_URL=url, DEMO_DIR=str(tmp_path / "demo"), TASK_QUEUE=f"demo-{tmp_path.name}", COLUMNS="100")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(extra)
    return env


def run_demo(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([DEMO, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_complete_report(output: str, tasks: int, workers: int = 2) -> None:
    report = output[output.index("[demo] report"):]
    assert f"{tasks} task(s) published, {tasks} done" in report
    counts = [int(n) for n in re.findall(r"^  worker-\d+ +(\d+) task\(s\)", report, re.M)]
    assert len(counts) == workers and sum(counts) == tasks, report
    assert all(count > 0 for count in counts), "every worker got work"
    assert re.search(r"^worker-1 +\|", report, re.M) and re.search(r"^worker-2 +\|", report, re.M), "timeline rows"
    ratio = float(re.search(r"ideal greedy schedule [\d.]+ s \(x([\d.]+)\)", report).group(1))
    assert 1.0 <= ratio < 1.5, report
    assert f"every task done exactly once ({tasks} of {tasks})" in report


def test_demo_inline_shows_fair_dispatch_and_reports(broker, tmp_path):
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "inline", "--durations", DURATIONS,
                      "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "using the broker that answers at amqp://guest:***@" in out
    # Both workers consume before the publisher sends its first task.
    assert out.index("all workers are consuming") < out.index("publisher  sent task 1")
    assert re.search(r"^worker-1 +waiting for tasks", out, re.M) and re.search(r"^worker-2 +started task", out, re.M)
    assert_complete_report(out, 9)
    dom = assert_page_shows_the_run(out, events_file(out))
    assert 'data-line="ideal"' in dom and 'data-line="lower bound"' in dom
    png = tmp_path / "page.png"
    screenshot(page_of_demo(out), png)
    assert not is_blank(png)


def test_demo_shows_flaky_tasks_retried_and_done(broker, tmp_path):
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "inline", "--durations", "0.2,0.1,0.3,0.1",
                      "--flaky", "2", "--seed", "4", "--idle-timeout", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("FAILED task") == 2 and out.count("will be retried in 1 s (retry 1 of 3)") == 2
    report = out[out.index("[demo] report"):]
    assert "4 task(s) published, 4 done" in report
    assert "2 failed attempt(s) of 2 task(s), each retried later:" in report
    assert report.count("1 failure(s), done on attempt 2") == 2
    assert "every task done exactly once (4 of 4)" in report
    assert drawn(assert_page_shows_the_run(out, events_file(out)))["failed"] == 2


def test_demo_with_more_workers_than_tasks_stops_the_idle_ones_and_ends(broker, tmp_path):
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "inline", "--workers", "3", "--durations", "0.2",
                      "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\[demo\] every task is done: stopping worker-\d, worker-\d, which got none to do", result.stdout)
    assert "every task done exactly once (1 of 1)" in report_of(result.stdout)


def report_of(output: str) -> str:
    return output[output.index("[demo] report"):]


def events_file(output: str) -> Path:
    """The run's events file, as the demo names it at its end."""
    return Path(re.search(r"^\[demo\] this run's events: (\S+)", output, re.M).group(1))


def test_demo_kills_a_worker_mid_task_and_the_task_is_redone_once(broker, tmp_path):
    env = demo_env(broker.url, tmp_path)
    result = run_demo(env, "--mode", "inline", "--durations", "1,1,1,1,1,1", "--kill-worker", "--idle-timeout", "1.5")
    assert result.returncode == 0, result.stdout + result.stderr
    killed = re.search(r"\[demo\] killed (worker-\d) with SIGKILL ([\d.]+) s into task (\d+) \(of 1 s\)", result.stdout)
    assert killed, result.stdout
    worker, task = killed.group(1), killed.group(3)
    events = read_events(events_file(result.stdout), ("started", "done", "killed"))
    assert [e["event"] for e in events if str(e["task_id"]) == task and e["worker"] == worker] == ["started", "killed"]
    redone = [e for e in events if str(e["task_id"]) == task and e["event"] == "done"]
    assert len(redone) == 1 and redone[0]["worker"] != worker and redone[0]["acked"], "redone by another, once"
    report = report_of(result.stdout)
    assert "6 task(s) published, 6 done" in report and "every task done exactly once (6 of 6)" in report
    assert f"{worker} killed {killed.group(2)[:-1]}" in report and f"task {task} redone by worker-" in report
    assert re.search(r"; 0 lost$", report, re.M)
    assert re.search(rf"^{worker} .*\|{task}x", report, re.M), "the killed attempt's partial bar"
    assert drawn(assert_page_shows_the_run(result.stdout, events_file(result.stdout)))["killed"] == 1


def test_demo_restarts_its_broker_mid_run_and_loses_nothing(tmp_path):
    skip_unless_the_demo_can_start_a_node()
    port = free_port_block(2)
    env = demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, PATH="/usr/bin:/bin",
                   RABBITMQ_BIN=str(RABBITMQ_BIN), RABBITMQ_MANAGEMENT_PORT="0")  # no UI: a node boots faster
    result = run_demo(env, "--mode", "inline", "--durations", "1.5,1.5,1.5,1.5", "--restart-broker",
                      "--idle-timeout", "2", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"\[demo\] killing the broker \(kill -9\) with [12] task\(s\) in progress", out)
    assert re.search(r"\[demo\] the broker is back after [\d.]+ s", out)
    assert "connection lost" in out and out.index("killing the broker") < out.index("connection lost")
    report = report_of(out)
    assert "4 task(s) published, 4 done" in report
    assert re.search(r"^broker down [\d.]+ s: [12] task\(s\) in flight at the crash redone; 0 lost$", report, re.M)
    assert re.search(r"^broker +#+", report, re.M), "the downtime on the timeline"
    assert 'class="downtime"' in page_of_demo(out).read_text(), "and on the page, as a band"


def test_demo_restarts_only_a_broker_it_started(broker, tmp_path):
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "inline", "--restart-broker")
    assert result.returncode == 1
    assert "--restart-broker: the broker at amqp://guest:***@" in result.stderr
    assert "was running before the demo" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "demo" / "run").exists(), "nothing was started"


def test_demo_in_tmux_runs_a_pane_per_process(broker, tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    result = run_demo(demo_env(broker.url, tmp_path), "--mode", "tmux", "--durations", DURATIONS,
                      "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for index, name in enumerate(["worker-1", "worker-2", "publisher"]):
        pane = out[out.index(f"---- {name} (tmux pane {index}) ----"):]
        assert f"[{name}]" in pane.splitlines()[1]
    assert "[publisher] 9 of 9 tasks confirmed" in out
    assert_complete_report(out, 9)
    sessions = subprocess.run(["tmux", "-L", "workqueue-demo", "ls"], capture_output=True, text=True)
    assert "demo-" not in sessions.stdout, "the demo's tmux session is closed"


def test_demo_opens_a_terminal_window_per_process(broker, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "terminal-calls"
    # A stand-in terminal emulator: records its arguments and runs the command it was given.
    (bin_dir / "x-terminal-emulator").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nshift 3\nexec "$@" </dev/null >/dev/null 2>&1\n')
    (bin_dir / "x-terminal-emulator").chmod(0o755)
    env = demo_env(broker.url, tmp_path, DISPLAY=":99", PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = run_demo(env, "--durations", DURATIONS, "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(terminals mode)" in result.stdout
    # Each window is its own process: they may write their calls in any order.
    titles = sorted(line.split()[1] for line in calls.read_text().splitlines())
    assert titles == ["publisher", "worker-1", "worker-2"]
    assert_complete_report(result.stdout, 9)


def test_demo_without_any_broker_says_what_to_install(tmp_path):
    port = free_port_block(1)
    env = demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, PATH="/usr/bin:/bin",
                   RABBITMQ_BIN=str(tmp_path / "none"), WORKQUEUE_NO_INSTALL="1")
    result = run_demo(env, "--mode", "inline")
    assert result.returncode == 1
    assert "run_demo.sh: RabbitMQ missing; not installing it, as told" in result.stderr
    assert "no RabbitMQ broker answers at amqp://guest:***@127.0.0.1" in result.stderr
    for platform in ("Linux (Debian/Ubuntu): sudo apt-get install rabbitmq-server", "macOS:", "Windows:"):
        assert platform in result.stderr
    assert not (tmp_path / "demo" / "run").exists(), "nothing was started"


def skip_unless_the_demo_can_start_a_node() -> None:
    """The demo starts a node of this machine's own RabbitMQ, whichever release the other tests run on."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip(f"needs rabbitmq-server installed on this machine, in {RABBITMQ_BIN}: the demo starts it")
    if os.environ.get("RABBITMQ_ROOT"):
        pytest.skip("the demo starts this machine's own RabbitMQ, not the one in RABBITMQ_ROOT: "
                    "this test proves nothing more than in the run without RABBITMQ_ROOT")


def test_ctrl_c_stops_workers_warmly_then_the_local_broker_it_started(tmp_path):
    skip_unless_the_demo_can_start_a_node()
    port = free_port_block(2)
    env = demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, PATH="/usr/bin:/bin",
                   RABBITMQ_BIN=str(RABBITMQ_BIN), RABBITMQ_MANAGEMENT_PORT=str(port + 1))
    output = tmp_path / "demo.out"
    with open(output, "w") as out:
        demo = subprocess.Popen([DEMO, "--mode", "inline", "--durations", "2,2,2,2", "--idle-timeout", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(re.findall(r"started task", output.read_text())) == 2, 90, "both workers busy")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 1, "not every task was done"
    finally:
        if demo.poll() is None:
            demo.kill()
    text = output.read_text()
    assert "starting a throwaway RabbitMQ node" in text
    assert f"management UI: http://localhost:{port + 1}/" in text
    assert text.count("SIGTERM: finishing the current task") == 2
    report = text[text.index("[demo] report"):]
    assert "4 task(s) published, 2 done" in report and "NOT DONE: task(s) 3-4" in report
    assert "[demo] stopping the broker this demo started (local node" in text
    wait_until(lambda: port_is_free(port), 10, "the demo's broker to be stopped")


def test_demo_help_documents_every_flag_and_environment_variable():
    result = subprocess.run([DEMO, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ["--workers", "--tasks", "--min-seconds", "--max-seconds", "--seed", "--durations", "--flaky",
                 "--idle-timeout", "--mode", "--keep-broker", "--start-broker", "--stop-broker", "--no-install",
                 "WORKQUEUE_NO_INSTALL",
                 "--kill-worker", "--restart-broker",
                 "AMQP_URL", "TASK_QUEUE", "RABBITMQ_IMAGE",
                 "RABBITMQ_BIN", "RABBITMQ_MANAGEMENT_PORT", "DEMO_DIR", "NO_COLOR", "report.py"]:
        assert word in result.stdout


@pytest.mark.parametrize("args, complaint", [
    (["--workers", "0"], "--workers must be a whole number >= 1: '0'"),
    (["--mode", "desktop"], "--mode must be terminals, tmux or inline"),
    (["--tasks"], "--tasks needs a value"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--min-seconds", "3", "--max-seconds", "1"], "--min-seconds 3 is more than --max-seconds 1"),
    (["--idle-timeout", "soon"], "argument --idle-timeout: not a number: 'soon'"),
    (["--kill-worker", "--workers", "1"], "--kill-worker needs --workers 2 or more"),
])
def test_demo_rejects_bad_flags_before_starting_anything(tmp_path, args, complaint):
    env = demo_env("amqp://guest:guest@127.0.0.1:1/%2F", tmp_path)
    result = run_demo(env, *args)
    assert result.returncode == 2
    assert complaint in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
