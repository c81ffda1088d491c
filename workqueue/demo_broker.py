"""The demo's broker: the one that answers at AMQP_URL, else one the demo starts (a Docker container, else a
throwaway local node), and the record that makes sure whatever the demo started is stopped.

What a demo starts is written to DEMO_DIR/broker.json with the PIDs of the demos using it. Whichever way a
demo ends (its last task, Ctrl-C, a closed terminal, a closed stdout, an error), it takes itself off the
record, and the last demo using the broker stops it, unless it was kept (--keep-broker, --start-broker).
A demo that finds a recorded broker with no demo left using it and not kept (one an earlier demo could not
stop: kill -9) stops it before anything else, instead of adopting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pika.exceptions

from workqueue import brokers
from workqueue.connection import ATTEMPT_SECONDS, CONNECT_ERRORS, attempt_parameters, describe, mask_url
from workqueue.errors import WorkQueueError
from workqueue.output import log

# The container a Docker broker runs in: a fixed name, so that demos share one container, not a port.
CONTAINER = "workqueue-demo-rabbitmq"
DEFAULT_IMAGE = "rabbitmq:4-management"
# Seconds to wait for a container's broker and for a local node to answer once started; the management UI
# gets a moment more, once AMQP answers.
DOCKER_BOOT_SECONDS, LOCAL_BOOT_SECONDS, MANAGEMENT_SECONDS = 180, 120, 3
# Seconds a docker command may take: a pull of the image in `docker run` may take minutes.
DOCKER_SECONDS, PULL_SECONDS = 60, 900
# Lines of a dead container's log, or of a node's, shown with the error: at most this many, its first error
# lines among them.
LOG_LINES, ERROR_LINES = 15, 8
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def say(text: str) -> None:
    log("demo", text)


class Interrupted(WorkQueueError):
    """A signal asked the demo to stop while it was starting the broker."""


def probe(url: str) -> str | None:
    """None if a broker accepts an AMQP connection at the URL; else why not, in a few words.

    Raises WorkQueueError when it refuses the login or the vhost: no broker started here would help.
    """
    try:
        pika.BlockingConnection(attempt_parameters(url, "run_demo.sh", ATTEMPT_SECONDS)).close()
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError):
        raise WorkQueueError(f"the broker at {mask_url(url)} refused the login: check AMQP_URL") from None
    except CONNECT_ERRORS as error:
        return describe(error)
    return None


def refused(reason: str) -> bool:
    """Whether nothing listens there (the port is free to start a broker on), by probe()'s reason."""
    return "ConnectionRefusedError" in reason or "Connection refused" in reason


def is_process(pid: int, *words: bytes) -> bool:
    """Whether process `pid` runs and, where /proc tells, its command line holds one of `words`: a PID in a
    record may have been reused since (after a reboot, by another program), and must not be signalled then."""
    if not alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc (macOS): the PID is all there is to go by
    return any(word in command for word in words)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def stop_group(pid: int, seconds: float = 60) -> None:
    """SIGTERM the process group led by `pid` (a node's or epmd's), then SIGKILL what is left after `seconds`."""
    for signum, wait in ((signal.SIGTERM, seconds), (signal.SIGKILL, 10)):
        with contextlib.suppress(OSError):
            os.killpg(pid, signum)
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(pid):
            return


class Record:
    """DEMO_DIR/broker.json: the broker a demo started, and the demos using it; used under an exclusive lock,
    which a `with` inside another `with` of the same Record holds on to."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "broker.json"
        self.lock_path = folder / "broker.lock"
        self.lock_file = None
        self.depth = 0

    def __enter__(self) -> Record:
        if self.depth == 0:
            self.lock_file = open(self.lock_path, "a")  # noqa: SIM115 (held until the outermost __exit__)
            fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        self.depth += 1
        return self

    def __exit__(self, *_exc) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.lock_file.close()

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def write(self, entry: dict | None) -> None:
        if entry is None:
            self.path.unlink(missing_ok=True)
        else:
            self.path.write_text(json.dumps(entry))


def running(entry: dict) -> bool:
    """Whether the recorded broker still runs."""
    if entry["kind"] == "docker":
        return bool(shutil.which("docker")) and subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", entry["container"]],
            capture_output=True, text=True, timeout=DOCKER_SECONDS).stdout.strip() == "true"
    return is_process(entry["node"], b"rabbitmq", b"beam")


def stop_recorded(entry: dict) -> None:
    if entry["kind"] == "docker":
        subprocess.run(["docker", "rm", "-f", entry["container"]], capture_output=True, timeout=DOCKER_SECONDS)
        return
    if is_process(entry["node"], b"rabbitmq", b"beam"):
        stop_group(entry["node"])
    if is_process(entry["epmd"], b"epmd"):
        stop_group(entry["epmd"], 10)


class Broker:
    """The broker of the run: one that answers, or one this demo starts; `stop()` at the end, however it ends."""

    def __init__(self, url: str, folder: Path, keep: bool, no_install: bool,
                 interrupted: Callable[[], bool] = lambda: False) -> None:
        self.urls = url.split(",")
        self.url = self.urls[0]
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port or 5672
        self.folder = folder
        self.keep = keep
        self.no_install = no_install
        self.interrupted = interrupted
        self.record = Record(folder)
        self.started: str | None = None  # "docker" or "local", while this demo is on the record
        self.node: brokers.RabbitNode | None = None
        self.epmd: brokers.EpmdDaemon | None = None
        self.answered = False  # the broker started here has answered (a node still booting has not)
        self.asking = False  # installing RabbitMQ, maybe asking first
        self.management_port = int(os.environ.get("RABBITMQ_MANAGEMENT_PORT", "15672"))

    # ---------------------------------------------------------------- finding or starting one

    def find_or_start(self) -> str:
        """Make sure a broker answers; returns the URL that answers. Raises WorkQueueError, Interrupted.

        Under the record's lock from start to end: a second demo started at the same moment waits, then finds
        and adopts the broker the first one started, rather than starting another on the same port.
        """
        with self.record as record:
            self.forget_or_adopt(record)
            self.url = self.find_or_start_one()
            return self.url

    def find_or_start_one(self) -> str:
        reasons = {}
        for url in self.urls:
            reasons[url] = probe(url)
            if reasons[url] is None:
                say(f"using the broker that answers at {mask_url(url)}")
                self.show_management(urlsplit(url).hostname)
                return url
        reason = reasons[self.url]
        if self.host not in LOCAL_HOSTS:
            raise WorkQueueError(f"no broker answers at {mask_url(self.url)} ({reason}), and it is not on this "
                                 "machine, so none is started for it")
        if not refused(reason):
            raise WorkQueueError(f"something at {self.host}:{self.port} accepts connections but no broker answers "
                                 f"there ({reason}): stop it, or point AMQP_URL at another port")
        if self.interrupted():
            raise Interrupted("interrupted before a broker was started")
        if not (self.start_docker() or self.start_local() or (self.install() and self.start_local())):
            self.no_broker_help()
        self.show_management("localhost")
        return self.url

    def forget_or_adopt(self, record: Record) -> None:
        """What an earlier or another demo recorded: adopt a broker still in use or kept, stop one left behind."""
        entry = record.read()
        if entry is None:
            return
        if not running(entry):
            record.write(None)
            return
        users = [pid for pid in entry["users"] if alive(pid)]
        if users or entry.get("kept"):
            entry["users"] = [*users, os.getpid()]
            record.write(entry)
            self.started = entry["kind"]
            return
        say(f"stopping the broker an earlier demo started and left running ({self.describe_entry(entry)})")
        stop_recorded(entry)
        record.write(None)

    @staticmethod
    def describe_entry(entry: dict) -> str:
        if entry["kind"] == "docker":
            return f"Docker container {entry['container']}"
        return f"local node, PID {entry['node']}"

    def put_on_record(self, kind: str, **details) -> None:
        with self.record as record:
            record.write({"kind": kind, "users": [os.getpid()], "kept": self.keep, "url": self.url, **details})
        self.started = kind

    def start_docker(self) -> bool:
        """A RabbitMQ container; False (having said why in a line) when Docker cannot give one."""
        if not shutil.which("docker"):
            return False
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=DOCKER_SECONDS)
        if info.returncode:
            # Docker 20.10's client says why on stdout, among its own information; later ones on stderr.
            said = [line for line in (info.stderr + info.stdout).splitlines() if "Cannot connect" in line]
            reason = said[0].strip().removeprefix("ERROR: ") if said else reason_of(info.stderr)
            say(f"Docker's engine does not answer ({reason.partition('errors pretty printing')[0]}): "
                "trying a local node")
            return False
        image = os.environ.get("RABBITMQ_IMAGE", DEFAULT_IMAGE)
        say(f"starting RabbitMQ in Docker ({image}, container {CONTAINER})")
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, timeout=DOCKER_SECONDS)  # unrecorded
        ports = ["-p", f"127.0.0.1:{self.port}:5672"]
        if self.management_port and brokers.port_is_free(self.management_port):
            ports += ["-p", f"127.0.0.1:{self.management_port}:15672"]
        # On the record before `docker run`: a Ctrl-C in the middle of it still ends in its removal.
        self.put_on_record("docker", container=CONTAINER)
        result = subprocess.run(["docker", "run", "-d", "--name", CONTAINER, *ports, image],
                                capture_output=True, text=True, timeout=PULL_SECONDS)
        if result.returncode:
            # A run that failed after creating the container (a port taken) leaves it in "Created".
            self.forget_container()
            say(f"Docker could not start {image} ({reason_of(result.stderr)}): trying a local node")
            return False
        try:
            self.wait_until_it_answers(DOCKER_BOOT_SECONDS, "the RabbitMQ container")
        except ContainerExited as exited:
            say(f"{exited}: trying a local node")
            self.forget_container()
            return False
        return True

    def forget_container(self) -> None:
        """Remove the container that gave no broker, and take it off the record (kept or not: it is dead)."""
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, timeout=DOCKER_SECONDS)
        with self.record as record:
            record.write(None)
        self.started = None

    def start_local(self) -> bool:
        install = brokers.find_install()
        if install is None or install.root:
            return False
        node_dir = self.folder / "rabbitmq"
        shutil.rmtree(node_dir, ignore_errors=True)
        config, plugins = "", []
        if self.management_port and brokers.port_is_free(self.management_port) \
                and list(install.bin.glob("../lib/rabbitmq_server-*/plugins/rabbitmq_management-*")):
            plugins = ["rabbitmq_management"]
            config = f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
        say(f"starting a throwaway RabbitMQ node (data in {node_dir}, port {self.port})")
        # A private port mapper and every file in node_dir: this node can neither see nor disturb another broker.
        epmd_port = self.port - 30000 if self.port + 30000 > 65000 else self.port + 30000
        self.epmd = brokers.EpmdDaemon(install, epmd_port)
        self.node = brokers.RabbitNode(install, "workqueue-demo", self.port, epmd_port, config=config,
                                       folder=node_dir, plugins=plugins)
        self.node.launch()
        self.put_on_record("local", node=self.node.process.pid, epmd=self.epmd.process.pid)
        self.wait_until_it_answers(LOCAL_BOOT_SECONDS, f"the local RabbitMQ node ({node_dir}/server.out)")
        return True

    def wait_until_it_answers(self, seconds: float, what: str) -> None:
        """Until the broker started here answers, watching it: raises ContainerExited (with its log's last
        lines) or WorkQueueError the moment it exits, Interrupted on a signal, WorkQueueError after `seconds`."""
        deadline = time.monotonic() + seconds
        self.answered = False
        while probe(self.url) is not None:
            if self.interrupted():
                raise Interrupted("interrupted while the broker was starting")
            if self.started == "docker":
                self.check_container()
            elif self.node and self.node.process.poll() is not None:
                log_file = self.node.folder / "server.out"
                raise WorkQueueError(f"the local RabbitMQ node exited while booting; the end of {log_file}:\n"
                                     + tail(log_file.read_text(errors="replace")))
            if time.monotonic() > deadline:
                raise WorkQueueError(f"{what} did not accept connections within {seconds} s")
            time.sleep(0.5)
        self.answered = True

    def check_container(self) -> None:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", CONTAINER],
                               capture_output=True, text=True, timeout=DOCKER_SECONDS).stdout.split()
        if state and state[0] in ("exited", "dead"):
            logs = subprocess.run(["docker", "logs", "--tail", "1000", CONTAINER],
                                  capture_output=True, text=True, timeout=DOCKER_SECONDS)
            raise ContainerExited(f"the RabbitMQ container exited (status {state[1]}) before it answered; "
                                  f"the end of its log:\n{tail(logs.stdout + logs.stderr)}")

    def show_management(self, host: str | None) -> None:
        """Print the management UI's address if one answers there (whatever the image or broker)."""
        if not self.management_port:
            return
        address = f"http://{'localhost' if host in LOCAL_HOSTS else host}:{self.management_port}/"
        deadline = time.monotonic() + MANAGEMENT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(address, timeout=1):
                    say(f"management UI: {address} (login guest / guest)")
                    return
            except OSError:
                if time.monotonic() > deadline or not self.started:
                    return
                time.sleep(0.3)

    def install(self) -> bool:
        self.asking = True  # it may ask on the terminal, a wait that only a signal can end
        try:
            return brokers.install(["rabbitmq"], allowed=not self.no_install, who="run_demo.sh")
        finally:
            self.asking = False

    def no_broker_help(self) -> None:
        raise WorkQueueError(f"""no RabbitMQ broker answers at {mask_url(self.url)}, and none could be started here.
Install one of these, then run ./run_demo.sh again:
  Linux (Debian/Ubuntu): sudo apt-get install rabbitmq-server    (or Docker: https://docs.docker.com/engine/install/)
  Linux (Fedora/RHEL):   sudo dnf install rabbitmq-server
  macOS:                 brew install rabbitmq                    (or Docker Desktop)
  Windows:               Docker Desktop, or the installer from https://www.rabbitmq.com/docs/install-windows
Or point AMQP_URL at a broker you can use.""")

    # ---------------------------------------------------------------- crashing it, stopping it

    def can_restart(self) -> bool:
        """Whether crash_and_restart() can: a container on the record, or a node this very demo launched (a
        node another demo launched is that demo's child process: this one cannot start it again)."""
        return self.started == "docker" or self.node is not None

    def crash_and_restart(self) -> None:
        """kill -9 the broker this demo started, then start it again on the same data."""
        if self.started == "docker":
            subprocess.run(["docker", "kill", CONTAINER], capture_output=True, timeout=DOCKER_SECONDS)
            subprocess.run(["docker", "start", CONTAINER], capture_output=True, timeout=DOCKER_SECONDS)
            self.wait_until_it_answers(DOCKER_BOOT_SECONDS, "the RabbitMQ container")
        else:
            self.node.kill()
            self.node.launch()
            with self.record as record:
                entry = record.read() or {}
                record.write({**entry, "node": self.node.process.pid})
            self.wait_until_it_answers(LOCAL_BOOT_SECONDS, "the local RabbitMQ node")

    def stop(self) -> None:
        """Take this demo off the record; the last demo using a broker not kept stops it. Says which."""
        if not self.started:
            return
        self.started = None
        with self.record as record:
            entry = record.read()
            if entry is None:
                return
            entry["users"] = [pid for pid in entry["users"] if pid != os.getpid() and alive(pid)]
            if entry.get("kept"):
                record.write(entry)
                say(f"the broker keeps running at {mask_url(entry['url'])}: ./run_demo.sh --stop-broker stops it")
                return
            if entry["users"]:
                record.write(entry)
                say(f"the broker keeps running for the demo still using it (PID {entry['users'][0]}), "
                    "which stops it at its end")
                return
            say(f"stopping the broker this demo started ({self.describe_entry(entry)})")
            if self.node and entry["kind"] == "local" and not self.answered:
                # Still booting: its start script stops it with rabbitmqctl, which waits for the node to
                # answer first (a minute or more); a node that never answered has nothing to flush.
                with contextlib.suppress(OSError):
                    os.killpg(self.node.process.pid, signal.SIGKILL)
                self.node.process.wait(timeout=30)
                self.epmd.stop()
            elif self.node and entry["kind"] == "local":
                self.node.stop()
                self.epmd.stop()
            else:
                stop_recorded(entry)
            record.write(None)


class ContainerExited(WorkQueueError):
    """The demo's container exited before its broker answered."""


def stop_kept(folder: Path) -> str:
    """Stop the broker the record names, kept or not; what was done, in a line."""
    with Record(folder) as record:
        entry = record.read()
        if entry is None or not running(entry):
            record.write(None)
            return "no broker started by the demo is running"
        users = [pid for pid in entry["users"] if alive(pid) and pid != os.getpid()]
        if users:
            entry["kept"] = False
            record.write(entry)
            return f"the demo using it (PID {users[0]}) stops the broker at its end"
        stop_recorded(entry)
        record.write(None)
        return f"stopped the broker at {mask_url(entry['url'])} ({Broker.describe_entry(entry)})"


def reason_of(stderr: str) -> str:
    """The line of docker's error output that says why: its first error line, else its last line."""
    lines = [line.strip().removeprefix("docker: ") for line in stderr.splitlines()
             if line.strip() and not line.startswith("WARNING")]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no reason given"])[0 if errors else -1]


def tail(text: str) -> str:
    """What a dead broker's log says about why, indented: its first error lines (a broker's own explanation
    comes first; what follows is the stack of the crash), then its last lines."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\berror\b|failed", line, re.I)][:ERROR_LINES]
    shown = list(dict.fromkeys(errors + lines[-(LOG_LINES - len(errors)):]))
    return "\n".join(f"  {line[:300]}" for line in shown)
