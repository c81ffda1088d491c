"""The demo's Docker path on a real Docker engine: a broker in a container, its crash and restart, the broker
left for a run by hand, and what happens when Docker cannot give a broker (fall back, fast, leave nothing)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time

from test_demo import (
    DEMO,
    assert_complete_report,
    demo_env,
    report_of,
    run_demo,
    skip_unless_the_demo_can_start_a_node,
)

from helpers import ROOT
from workqueue.brokers import free_port_block, port_is_free, wait_until
from workqueue.demo_broker import CONTAINER

DURATIONS = "0.3,0.1,0.4,0.1,0.5,0.2,0.2,0.3,0.1"


def docker_env(docker_engine, tmp_path, image: str | None = None, **extra: str) -> tuple[dict[str, str], int]:
    engine, tag = docker_engine
    port = free_port_block(2)
    extra = {"RABBITMQ_MANAGEMENT_PORT": str(port + 1), **extra}
    env = demo_env(f"amqp://guest:guest@127.0.0.1:{port}/%2F", tmp_path, DOCKER_HOST=engine.host,
                   RABBITMQ_IMAGE=image or tag, **extra)
    return env, port


def containers(engine) -> list[str]:
    return engine.docker("ps", "-aq").stdout.split()


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_demo_runs_its_broker_in_a_container_and_loses_nothing_when_it_is_killed_and_restarted(
        docker_engine, tmp_path):
    engine, tag = docker_engine
    env, port = docker_env(docker_engine, tmp_path)
    result = run_demo(env, "--mode", "inline", "--durations", "2,2,2,2,2,2", "--idle-timeout", "3",
                      "--restart-broker", timeout=240)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert f"starting RabbitMQ in Docker ({tag}, container {CONTAINER})" in output
    assert f"management UI: http://localhost:{port + 1}/" in output, "the image's UI, found by asking it"
    assert re.search(r"\[demo\] killing the broker \(kill -9\) with [12] task\(s\) in progress", output)
    assert "the broker is back after" in output
    report = report_of(output)
    assert "6 task(s) published, 6 done" in report
    assert re.search(r"^broker down [\d.]+ s: [12] task\(s\) in flight at the crash redone; 0 lost$", report, re.M)
    # docker-proxy accepts while the broker in the container boots: the workers say so in words.
    assert "IncompatibleProtocolError" not in output
    assert f"stopping the broker this demo started (Docker container {CONTAINER})" in output
    assert containers(engine) == [], "the container is removed at the end"
    assert_no_traceback(result)


def test_start_broker_leaves_a_container_on_loopback_for_a_run_by_hand_until_stop_broker(docker_engine, tmp_path):
    engine, _tag = docker_engine
    env, port = docker_env(docker_engine, tmp_path)
    started = run_demo(env, "--start-broker", timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "./run_demo.sh --stop-broker stops it" in started.stdout
        bindings = json.loads(engine.docker("inspect", "-f", "{{json .HostConfig.PortBindings}}", CONTAINER).stdout)
        assert {binding["HostIp"] for ports in bindings.values() for binding in ports} == {"127.0.0.1"}, bindings
        # By hand, with the system's python3 (without pika, the scripts run again in .venv by themselves).
        worker = subprocess.Popen(["python3", "consumer.py", "--idle-timeout", "1"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            publisher = subprocess.run(["python3", "publisher.py", "--durations", "0.1,0.1"], cwd=ROOT,
                                       env=env, capture_output=True, text=True, timeout=60)
            assert publisher.returncode == 0, publisher.stdout + publisher.stderr
            output, _ = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0 and "summary: 2 task(s) done" in output, output
    finally:
        stopped = run_demo(env, "--stop-broker")
    assert stopped.returncode == 0 and "stopped the broker" in stopped.stdout, stopped.stdout + stopped.stderr
    assert containers(engine) == []


def test_demo_falls_back_to_a_local_node_when_docker_cannot_pull_the_image(docker_engine, tmp_path):
    skip_unless_the_demo_can_start_a_node()
    engine, _tag = docker_engine
    # No management UI: the local node boots in half the time, and the UI is not what this test is about.
    env, _port = docker_env(docker_engine, tmp_path, image="workqueue-test/no-such-image:1",
                            RABBITMQ_MANAGEMENT_PORT="0")
    result = run_demo(env, "--mode", "inline", "--durations", DURATIONS, "--idle-timeout", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\[demo\] Docker could not start workqueue-test/no-such-image:1 \(.+\): trying a local node",
                     result.stdout), result.stdout
    assert "starting a throwaway RabbitMQ node" in result.stdout
    assert_complete_report(result.stdout, 9)
    assert containers(engine) == [], "no container left in Created"
    assert_no_traceback(result)


def test_demo_shows_a_dying_containers_log_at_once_then_falls_back(docker_engine, tmp_path):
    skip_unless_the_demo_can_start_a_node()
    engine, tag = docker_engine
    broken = "workqueue-test/rabbitmq:broken-config"
    engine.build(broken, f"FROM {tag}\nCOPY rabbitmq.conf /etc/rabbitmq/rabbitmq.conf\n",
                 {"rabbitmq.conf": "listeners.tcp.default = not-a-port\n"})
    env, _port = docker_env(docker_engine, tmp_path, image=broken, RABBITMQ_MANAGEMENT_PORT="0")
    start = time.monotonic()
    # --start-broker: the same choice of a broker as the demo's, without the run that the test above shows.
    result = run_demo(env, "--start-broker", timeout=180)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout
        exited = output.index("the RabbitMQ container exited (status")
        assert "not-a-port" in output[exited:output.index("trying a local node", exited)], "its log's last lines"
        assert output.index("starting a throwaway RabbitMQ node") > exited
        assert containers(engine) == []
        assert time.monotonic() - start < 90, "noticed at once, not after the 180 s wait"
    finally:
        stopped = run_demo(env, "--stop-broker")
    assert "stopped the broker" in stopped.stdout, stopped.stdout + stopped.stderr


def test_a_docker_run_that_fails_on_a_taken_port_leaves_no_container_and_says_why(docker_engine, tmp_path):
    engine, _tag = docker_engine
    env, port = docker_env(docker_engine, tmp_path, RABBITMQ_BIN=str(tmp_path / "none"), WORKQUEUE_NO_INSTALL="1")
    # Bound, not listening: a connection is refused (nothing answers), but docker-proxy cannot bind the port.
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    taken.bind(("127.0.0.1", port))
    try:
        result = run_demo(env, "--mode", "inline")
    finally:
        taken.close()
    assert result.returncode == 1
    assert re.search(r"\[demo\] Docker could not start \S+ \(.*(address already in use|port is already allocated)",
                     result.stdout, re.I), result.stdout
    assert containers(engine) == [], "no container left in Created"
    assert "no RabbitMQ broker answers" in result.stderr
    assert_no_traceback(result)
    assert port_is_free(port)


def test_ctrl_c_while_the_container_boots_removes_it(docker_engine, tmp_path):
    engine, _tag = docker_engine
    env, _port = docker_env(docker_engine, tmp_path)
    demo = subprocess.Popen([DEMO, "--mode", "inline"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: containers(engine), 60, "the container to be created")
        demo.send_signal(signal.SIGINT)
        output, errors = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, output + errors
    assert f"stopping the broker this demo started (Docker container {CONTAINER})" in output
    assert "Traceback" not in output + errors
    assert containers(engine) == []
