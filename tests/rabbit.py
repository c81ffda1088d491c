"""Throwaway RabbitMQ nodes for the tests, isolated from any other broker on the machine.

Every file of a node (data, logs, config, Erlang cookie) lives in its own folder, it listens on
127.0.0.1 only, and it registers with a private epmd, so it can neither see nor disturb a system broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# The Debian wrappers in /usr/sbin switch to the rabbitmq user and the system cookie; these do not.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# A fresh node takes 5-8 s to boot on 2 cores; leave room for a loaded machine.
BOOT_TIMEOUT = 90.0

INSTALL_HINT = (
    "no RabbitMQ broker for the tests: set AMQP_URL to a broker you can use, "
    "or install one (Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install rabbitmq), "
    "or install Docker"
)


def find_server() -> tuple[Path, Path] | None:
    """The rabbitmq-server and rabbitmqctl to run a private node with, if installed."""
    for folder in (RABBITMQ_BIN, Path("/usr/local/opt/rabbitmq/sbin"), Path("/opt/homebrew/opt/rabbitmq/sbin")):
        if (folder / "rabbitmq-server").exists():
            return folder / "rabbitmq-server", folder / "rabbitmqctl"
    server = shutil.which("rabbitmq-server")
    ctl = shutil.which("rabbitmqctl")
    return (Path(server), Path(ctl)) if server and ctl and not server.startswith("/usr/sbin") else None


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int) -> int:
    """A base port P such that P .. P+count-1 and their Erlang distribution ports (+20000) are free."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + count + 20000 >= 65535:
            continue
        ports = [base + i for i in range(count)] + [base + i + 20000 for i in range(count)]
        if all(port_is_free(p) for p in ports):
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll condition() until it returns a truthy value; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class RabbitNode:
    """One private RabbitMQ node: start, stop cleanly, kill -9, restart on the same data."""

    def __init__(self, folder: Path, name: str, port: int, epmd_port: int,
                 server: Path, ctl: Path, config: str = "", home: Path | None = None) -> None:
        self.folder = folder
        self.name = f"{name}@localhost"
        self.port = port
        self.server = server
        self.ctl_path = ctl
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "conf.d").mkdir(exist_ok=True)
        (folder / "rabbitmq.conf").write_text(config)
        (folder / "rabbitmq-env.conf").write_text("")
        (folder / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(home or folder),  # the Erlang cookie: nodes of one cluster share it
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(port + 20000),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
            "RABBITMQ_CONFIG_FILES": str(folder / "conf.d"),
            "RABBITMQ_MOTD_FILE": str(folder / "motd"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "beam.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        with open(self.folder / "server.out", "ab") as log:
            self.process = subprocess.Popen(
                [str(self.server)], env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        def started() -> bool:
            if self.process and self.process.poll() is not None:
                tail = (self.folder / "server.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"RabbitMQ node {self.name} exited while booting:\n{tail}")
            # await_startup exits 69 at once while the node is not yet registered: retry it.
            return self.ctl("await_startup", "--timeout", "30", check=False).returncode == 0
        wait_until(started, BOOT_TIMEOUT, f"RabbitMQ node {self.name} to boot", interval=0.3)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.ctl_path), "-n", self.name, *args], env=self.env,
                              capture_output=True, text=True, check=check, timeout=120)

    def beam_pid(self) -> int:
        return int((self.folder / "beam.pid").read_text().strip())

    def kill(self) -> None:
        """kill -9 the Erlang VM: a crash, with no chance to flush or say goodbye."""
        os.kill(self.beam_pid(), signal.SIGKILL)
        if self.process:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM to the wrapper stops the node in about a second)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


class EpmdDaemon:
    """A private Erlang port mapper, so our nodes never register with a shared one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen([epmd_path(), "-port", str(port), "-address", "127.0.0.1"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def epmd_path() -> str:
    found = shutil.which("epmd")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")):
        return str(candidate)
    raise RuntimeError("epmd not found: the Erlang runtime that RabbitMQ needs is not installed")


class DockerBroker:
    """A RabbitMQ container with its AMQP port published on 127.0.0.1 only."""

    IMAGE = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3")

    def __init__(self, port: int) -> None:
        self.port = port
        self.container = f"workqueue-test-{os.getpid()}"
        subprocess.run(["docker", "run", "-d", "--name", self.container, "-p", f"127.0.0.1:{port}:5672",
                        self.IMAGE], check=True, capture_output=True, timeout=300)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, timeout=60)
