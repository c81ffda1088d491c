"""RabbitMQ for the tests, the benchmarks and the demo: throwaway nodes, and installing what is missing.

Every file of a node (data, logs, config, Erlang cookie) lives in its own folder, it listens on
127.0.0.1 only, and it registers with a private epmd, so it can neither see nor disturb a system broker.
A node runs either this machine's RabbitMQ or another release, installed in a Debian root of its own
(`python3 -m workqueue.brokers root 4.3` makes one) and run there with chroot: RABBITMQ_ROOT selects it.

Standard library only: run_tests.sh and run_demo.sh call it with the system's python3 before .venv exists
(`python3 -m workqueue.brokers install rabbitmq venv`).
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# The Debian wrappers in /usr/sbin switch to the rabbitmq user and the system cookie; these do not.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Ports for throwaway nodes start here, clear of the well-known ones below.
LOWEST_NODE_PORT = 10000
# Where the kernel's ephemeral ports begin (Linux's default; macOS starts higher).
EPHEMERAL_PORTS_FROM = 32768
# A node's Erlang distribution port is its AMQP port plus this.
DISTRIBUTION_PORT_OFFSET = 20000
# A fresh node takes 5-8 s to boot on 2 cores; leave room for a loaded machine.
BOOT_TIMEOUT = 90.0
# The Debian release that packages each RabbitMQ release we test, for a root of its own.
DEBIAN_SUITES = {"4.3": "forky", "4.0": "trixie", "3.10": "bookworm"}
# Where roots are made: kept between runs, as a package cache would be.
ROOTS_FOLDER = Path(os.environ.get("RABBITMQ_ROOTS", "/var/tmp/workqueue-rabbitmq"))
# What a root needs of the host's file systems for Erlang to run in it.
ROOT_MOUNTS = ("proc", "sys", "dev", "dev/pts", "dev/shm")

INSTALL_HINT = (
    "no RabbitMQ broker for the tests: set AMQP_URL to a broker you can use, "
    "or install one (Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install rabbitmq), "
    "or install Docker"
)

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll condition() until it returns a truthy value; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports free_port_block has handed out in this process.
_ports_handed_out: set[int] = set()


def free_port_block(count: int) -> int:
    """A base port P such that P .. P+count-1 and their Erlang distribution ports (+20000) are free.

    Chosen below the ephemeral ports (32768 and up on Linux, 49152 on macOS), which the kernel gives to the
    local end of every outgoing connection: a port from there can be taken by some connection between this
    check and a node binding it (a cluster's node then fails to boot with eaddrinuse). Never the same port
    twice in a process, so nodes chosen before any of them binds cannot collide either.
    """
    highest = EPHEMERAL_PORTS_FROM - DISTRIBUTION_PORT_OFFSET - count
    for _ in range(500):
        base = random.randrange(LOWEST_NODE_PORT, highest)
        ports = {base + i for i in range(count)} | {base + i + DISTRIBUTION_PORT_OFFSET for i in range(count)}
        if not ports & _ports_handed_out and all(port_is_free(p) for p in ports):
            _ports_handed_out.update(ports)
            return base
    raise RuntimeError(f"no free block of {count} ports on 127.0.0.1 from {LOWEST_NODE_PORT} to {highest}")


def consumer_count(url: str, queue: str) -> int | None:
    """How many consumers the queue has, or None while it is not declared or the broker does not answer."""
    import pika  # here, not above: this module also runs before pika is installed, to install things

    try:
        connection = pika.BlockingConnection(pika.URLParameters(url.split(",")[0]))
    except pika.exceptions.AMQPError:
        return None
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None  # 404: not declared yet
    finally:
        if connection.is_open:
            connection.close()


def delete_queues(url: str, names: list[str]) -> list[str]:
    """Delete those of these queues that are empty (a missing one counts as deleted); the names left."""
    import pika

    left = []
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url.split(",")[0]))
    except pika.exceptions.AMQPError:
        return names
    try:
        for name in names:
            channel = connection.channel()
            try:
                # Not queue_delete(if_empty=True): quorum queues refuse that flag (540 NOT_IMPLEMENTED).
                if channel.queue_declare(name, passive=True).method.message_count:
                    left.append(name)
                else:
                    channel.queue_delete(name)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass  # 404: no such queue
    except pika.exceptions.AMQPError:
        return names
    finally:
        if connection.is_open:
            connection.close()
    return left


def wait_for_consumers(url: str, queue: str, count: int, timeout: float = 20) -> None:
    """Wait until `count` workers consume from the queue, so that dispatch is fair from the first task."""
    wait_until(lambda: (consumer_count(url, queue) or 0) >= count, timeout, f"{count} consumer(s) on {queue}", 0.2)


# ---------------------------------------------------------------- where RabbitMQ is installed


class Install:
    """A RabbitMQ to run nodes of: this machine's own (root None), or one in a Debian root, run with chroot."""

    def __init__(self, bin_folder: Path, root: Path | None = None) -> None:
        self.bin = bin_folder  # inside the root, if there is one
        self.root = root

    def __repr__(self) -> str:
        return f"RabbitMQ {self.version()}" + (f" in {self.root}" if self.root else "")

    def version(self) -> str:
        found = sorted((self.host_path(self.bin) / "../lib").glob("rabbitmq_server-*"))
        return found[-1].name.removeprefix("rabbitmq_server-") if found else "?"

    def host_path(self, path: Path) -> Path:
        """Where a path of the install's world is on this machine."""
        return self.root / path.relative_to("/") if self.root else path

    def inside(self, path: Path) -> Path:
        """Where a path of this machine is in the install's world."""
        return Path("/") / path.relative_to(self.root) if self.root else path

    def scratch(self, name: str) -> Path:
        """A new empty folder that nodes of this install can use, as a path of this machine."""
        base = self.root / "var/tmp/nodes" if self.root else Path(os.environ.get("TMPDIR", "/tmp"))
        folder = base / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        return folder

    def command(self, program: Path, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run a program of the install (a path in its world)."""
        if self.root is None:
            return [str(program), *args], env
        self.mount()
        # env -i: the root's programs see only what the node needs, never this machine's settings.
        return (["chroot", str(self.root), "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                 *(f"{name}={value}" for name, value in env.items() if name in NODE_VARIABLES),
                 str(program), *args], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def mount(self) -> None:
        """Bind this machine's /proc, /sys and /dev into the root, once; undone when this process exits."""
        if self.root is None or os.path.ismount(self.root / "proc"):
            return
        for name in ROOT_MOUNTS:
            subprocess.run(["mount", "--bind", f"/{name}", str(self.root / name)], check=True)
        atexit.register(unmount, self.root)


def unmount(root: Path) -> None:
    for name in reversed(ROOT_MOUNTS):
        subprocess.run(["umount", "--lazy", str(root / name)], capture_output=True)


def find_install() -> Install | None:
    """The RabbitMQ to run nodes of: the root named by RABBITMQ_ROOT, else this machine's, if any.

    RABBITMQ_BIN names the folder of this machine's rabbitmq-server, where it is not in a usual place.
    """
    if os.environ.get("RABBITMQ_BIN"):
        folder = Path(os.environ["RABBITMQ_BIN"])
        return Install(folder) if (folder / "rabbitmq-server").exists() else None
    if os.environ.get("RABBITMQ_ROOT"):
        root = Path(os.environ["RABBITMQ_ROOT"]).resolve()
        if not (root / RABBITMQ_BIN.relative_to("/") / "rabbitmq-server").exists():
            raise RuntimeError(f"RABBITMQ_ROOT={root} holds no RabbitMQ "
                               "(make one: python3 -m workqueue.brokers root 4.3)")
        return Install(RABBITMQ_BIN, root)
    for folder in (RABBITMQ_BIN, Path("/usr/local/opt/rabbitmq/sbin"), Path("/opt/homebrew/opt/rabbitmq/sbin")):
        if (folder / "rabbitmq-server").exists():
            return Install(folder)
    server = shutil.which("rabbitmq-server")
    if server and shutil.which("rabbitmqctl") and not server.startswith("/usr/sbin"):
        return Install(Path(server).parent)
    return None


# ---------------------------------------------------------------- nodes

# The environment a node runs with; in a root, nothing else of ours reaches it.
NODE_VARIABLES = {
    "HOME", "ERL_EPMD_PORT", "ERL_CRASH_DUMP", "RABBITMQ_NODENAME", "RABBITMQ_NODE_IP_ADDRESS", "RABBITMQ_NODE_PORT",
    "RABBITMQ_DIST_PORT", "RABBITMQ_CONF_ENV_FILE", "RABBITMQ_CONFIG_FILE", "RABBITMQ_ADVANCED_CONFIG_FILE",
    "RABBITMQ_CONFIG_FILES", "RABBITMQ_MOTD_FILE", "RABBITMQ_ENABLED_PLUGINS_FILE", "RABBITMQ_MNESIA_BASE",
    "RABBITMQ_LOG_BASE", "RABBITMQ_PID_FILE", "LANG", "LC_ALL",
}


class RabbitNode:
    """One private RabbitMQ node: start, stop cleanly, kill -9, restart on the same data."""

    def __init__(self, install: Install, name: str, port: int, epmd_port: int, config: str = "",
                 home: Path | None = None, advanced: str = "", folder: Path | None = None,
                 plugins: list[str] | None = None) -> None:
        self.install = install
        self.folder = folder or install.scratch(name)
        self.name = f"{name}@localhost"
        self.port = port
        self.process: subprocess.Popen | None = None
        (self.folder / "conf.d").mkdir(parents=True, exist_ok=True)
        (self.folder / "rabbitmq.conf").write_text(config)
        if advanced:
            (self.folder / "advanced.config").write_text(advanced)
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "enabled_plugins").write_text(f"[{','.join(plugins or [])}].\n")
        inside = install.inside(self.folder)
        self.env = {
            **os.environ,
            "HOME": str(install.inside(home) if home else inside),  # the Erlang cookie: a cluster shares it
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_CRASH_DUMP": str(inside / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(port + DISTRIBUTION_PORT_OFFSET),
            "RABBITMQ_CONF_ENV_FILE": str(inside / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(inside / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(inside / "advanced.config"),
            "RABBITMQ_CONFIG_FILES": str(inside / "conf.d"),
            "RABBITMQ_MOTD_FILE": str(inside / "motd"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(inside / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(inside / "mnesia"),
            "RABBITMQ_LOG_BASE": str(inside / "log"),
            "RABBITMQ_PID_FILE": str(inside / "beam.pid"),
            "LANG": "C.UTF-8",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        command, env = self.install.command(self.install.bin / "rabbitmq-server", [], self.env)
        with open(self.folder / "server.out", "ab") as log:
            self.process = subprocess.Popen(command, env=env, cwd=self.folder, stdin=subprocess.DEVNULL,
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
        command, env = self.install.command(self.install.bin / "rabbitmqctl", ["-n", self.name, *args], self.env)
        return subprocess.run(command, env=env, capture_output=True, text=True, check=check, timeout=120)

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

    def remove(self) -> None:
        """Stop the node and delete its folder: its data, logs and cookie."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class EpmdDaemon:
    """A private Erlang port mapper, so our nodes never register with a shared one."""

    def __init__(self, install: Install, port: int) -> None:
        self.port = port
        program = Path("/usr/bin/epmd") if install.root else Path(epmd_path())
        command, env = install.command(program, ["-port", str(port), "-address", "127.0.0.1"], dict(os.environ))
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
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


class Cluster:
    """Three nodes on this machine, joined into one cluster: share one cookie, boot in parallel, join."""

    def __init__(self, install: Install, size: int = 3, advanced: str = "") -> None:
        home = install.scratch("cluster-home")  # one Erlang cookie for all the nodes
        (home / ".erlang.cookie").write_text(os.urandom(16).hex())
        (home / ".erlang.cookie").chmod(0o400)
        base = free_port_block(size + 1)
        self.epmd = EpmdDaemon(install, base + size)
        self.nodes = [RabbitNode(install, f"wqc{base}r{i + 1}", base + i, base + size, home=home,
                                 advanced=advanced) for i in range(size)]

    def start(self) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        first.ctl("await_online_nodes", str(len(self.nodes)))

    def stop(self) -> None:
        for node in self.nodes:
            node.remove()
        self.epmd.stop()


class LocalNode:
    """A throwaway node with a private epmd, as a context manager: `with LocalNode(install) as node:`."""

    def __init__(self, install: Install, prefix: str) -> None:
        base = free_port_block(2)
        self.epmd = EpmdDaemon(install, base + 1)
        self.node = RabbitNode(install, f"{prefix}{base}", base, base + 1)

    def __enter__(self) -> RabbitNode:
        try:
            self.node.start()
        except BaseException:
            self.__exit__()
            raise
        return self.node

    def __exit__(self, *_exc) -> None:
        self.node.remove()
        self.epmd.stop()


class DockerBroker:
    """A RabbitMQ container with its AMQP port published on 127.0.0.1 only."""

    IMAGE = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:4-management")

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


# ---------------------------------------------------------------- installing what is missing

# What the tests and the demo may need, by the name each package manager gives it. A need a manager
# does not list is part of something else there (Fedora's and Homebrew's Python have venv).
PACKAGES = {
    "apt-get": {"rabbitmq": "rabbitmq-server", "venv": "python3-venv", "tmux": "tmux", "shellcheck": "shellcheck",
                "debootstrap": "debootstrap", "dockerd": "docker.io",
                "chromium-headless-shell": "chromium-headless-shell"},
    "dnf": {"rabbitmq": "rabbitmq-server", "tmux": "tmux", "shellcheck": "ShellCheck"},
    "brew": {"rabbitmq": "rabbitmq", "tmux": "tmux", "shellcheck": "shellcheck"},
}
# What each need is, for the lines that ask or tell.
NEEDS = {"rabbitmq": "RabbitMQ", "venv": "Python's venv module", "tmux": "tmux", "shellcheck": "shellcheck",
         "debootstrap": "debootstrap", "dockerd": "a Docker engine (dockerd)",
         "chromium-headless-shell": "headless Chromium (for the tests of report.py's page)"}


def is_missing(need: str) -> bool:
    if need == "rabbitmq":
        return find_install() is None
    if need == "venv":
        try:
            import ensurepip  # noqa: F401
            import venv  # noqa: F401
        except ImportError:
            return True
        return False
    return shutil.which(need) is None


def package_manager() -> str | None:
    return next((manager for manager in PACKAGES if shutil.which(manager)), None)


def as_root(command: list[str]) -> list[str]:
    return command if os.geteuid() == 0 else ["sudo", *command]


def install_commands(manager: str, packages: list[str]) -> list[list[str]]:
    if manager == "apt-get":
        return [as_root(["apt-get", "update", "-qq"]),
                as_root(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages])]
    if manager == "dnf":
        return [as_root(["dnf", "install", "-y", "-q", *packages])]
    return [["brew", "install", *packages]]  # Homebrew refuses to run as root, and needs no sudo


def install(needs: list[str], allowed: bool, who: str) -> bool:
    """Install what of `needs` is missing, with the system's package manager; whether nothing is missing now.

    On a terminal, asks once (default yes). Without one, installs when that needs no password (root,
    password-less sudo, Homebrew), saying so in a line. Never when not `allowed`. Else says what to run.
    """
    wanted = [need for need in needs if is_missing(need)]
    if not wanted:
        return True
    what = ", ".join(NEEDS[need] for need in wanted)
    manager = package_manager()
    if manager is None:
        print(f"{who}: {what} missing, and no package manager found (apt-get, dnf, brew). Install it yourself: "
              "Debian/Ubuntu: sudo apt-get install rabbitmq-server python3-venv tmux shellcheck; Fedora: sudo dnf "
              "install rabbitmq-server tmux ShellCheck; macOS: brew install rabbitmq tmux shellcheck",
              file=sys.stderr)
        return False
    packages = [PACKAGES[manager][need] for need in wanted if need in PACKAGES[manager]]
    commands = install_commands(manager, packages)
    shown = " ".join(commands[-1])
    if not allowed:
        print(f"{who}: {what} missing; not installing it, as told (--no-install or WORKQUEUE_NO_INSTALL). "
              f"Install it with: {shown}", file=sys.stderr)
        return False
    if sys.stdin.isatty():
        answer = input(f"{who}: {what} missing. Install it now with: {shown} ? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            print(f"{who}: not installed. Install it yourself with: {shown}", file=sys.stderr)
            return False
    elif os.geteuid() != 0 and manager != "brew" and subprocess.run(
            ["sudo", "-n", "true"], capture_output=True).returncode != 0:
        print(f"{who}: {what} missing, and installing it needs a password (no terminal to ask on). "
              f"Install it with: {shown}", file=sys.stderr)
        return False
    else:
        print(f"{who}: {what} missing: installing it (no terminal, no password needed): {shown}", flush=True)
    with no_services_started(manager):
        for command in commands:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if result.returncode != 0:
                print(f"{who}: {' '.join(command)} failed:\n{(result.stdout + result.stderr)[-2000:]}",
                      file=sys.stderr)
                return False
    still = [NEEDS[need] for need in wanted if is_missing(need)]
    if still:
        print(f"{who}: installed, but {', '.join(still)} still missing", file=sys.stderr)
    return not still


class no_services_started:
    """Debian starts (and enables) a service when its package is installed: not ours. The demo and the tests
    start throwaway nodes (and a Docker engine) of their own, so the system-wide ones stay off, also at the
    next boot."""

    # The services the packages we install may bring, started and enabled on a systemd machine.
    UNITS = ("rabbitmq-server", "docker.socket", "docker", "containerd")

    def __init__(self, manager: str) -> None:
        self.policy = Path("/usr/sbin/policy-rc.d") if manager == "apt-get" else None
        self.systemd = Path("/run/systemd/system").exists()
        # Units already there before the install are the user's: left as they are.
        self.before = {unit for unit in self.UNITS if self.systemd and subprocess.run(
            ["systemctl", "cat", unit], capture_output=True).returncode == 0}

    def __enter__(self) -> None:
        if self.policy and not self.policy.exists():
            # The Debian way to tell package scripts not to start services (exit 101: action forbidden).
            if os.geteuid() == 0:
                self.policy.write_text("#!/bin/sh\nexit 101\n")
                self.policy.chmod(0o755)
            else:
                subprocess.run(["sudo", "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {self.policy} && "
                                                    f"chmod 755 {self.policy}"], check=True)
        else:
            self.policy = None  # someone else's: leave it as it is

    def __exit__(self, *_exc) -> None:
        if self.policy:
            if os.geteuid() == 0:
                self.policy.unlink(missing_ok=True)
            else:
                subprocess.run(["sudo", "rm", "-f", str(self.policy)], check=True)
        if self.systemd:  # booted with systemd: a package we installed enabled and started its service
            for unit in self.UNITS:
                if unit not in self.before:
                    subprocess.run(as_root(["systemctl", "disable", "--now", unit]), capture_output=True)


# ---------------------------------------------------------------- another release, in a Debian root


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses, so that a root needs no other network."""
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"), *Path("/etc/apt").glob("sources.list*")]
    for path in sources:
        if path.is_file():
            for url in re.findall(r"(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+)", path.read_text()):
                if "security" not in url:
                    return url
    return "http://deb.debian.org/debian"


def make_root(version: str) -> Path:
    """A Debian root holding RabbitMQ `version` (made once, then kept); prints each step."""
    suite = DEBIAN_SUITES[version]
    root = ROOTS_FOLDER / version
    done = root / ".workqueue-root-complete"
    if done.exists():
        return root
    if os.geteuid() != 0:
        raise SystemExit(f"brokers.py: making a root for RabbitMQ {version} needs root (debootstrap, chroot)")
    ROOTS_FOLDER.mkdir(parents=True, exist_ok=True)
    # One maker at a time (CI makes the 4.3 root while the first test run, which may want it, goes on):
    # the second waits for the first, then finds the root made.
    with open(ROOTS_FOLDER / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            make_root_now(version, suite, root, done)
    return root


def make_root_now(version: str, suite: str, root: Path, done: Path) -> None:
    if root.exists():
        unmount(root)
        shutil.rmtree(root)
    if not install(["debootstrap"], allowed=True, who="brokers.py"):
        raise SystemExit(1)
    scripts = Path("/usr/share/debootstrap/scripts")
    # An older debootstrap has no script for a newer suite; sid's serves every suite after it.
    script = scripts / suite if (scripts / suite).exists() else scripts / "sid"
    root.mkdir(parents=True)
    step(f"making a Debian {suite} root in {root}",
         ["debootstrap", "--variant=minbase", suite, str(root), debian_mirror(), str(script)])
    # Erlang finds its port mapper at "localhost", which a fresh root cannot resolve without this.
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # No service may start inside the root: our nodes are started by hand, as throwaway ones.
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    Install(RABBITMQ_BIN, root).mount()
    try:
        apt = ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get",
               # A testing suite's Release file can be past its Valid-Until on a machine whose clock is ahead.
               "-o", "Acquire::Check-Valid-Until=false", "-qq"]
        step("updating its package lists", [*apt, "update"])
        step(f"installing rabbitmq-server from Debian {suite}",
             [*apt, "install", "-y", "--no-install-recommends", "rabbitmq-server"])
        subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
    finally:
        unmount(root)
    done.write_text(f"{suite}\n")


def step(what: str, command: list[str]) -> None:
    print(f"[rabbitmq] {what}", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"brokers.py: {what} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    print(f"[rabbitmq]   done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m workqueue.brokers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    root = commands.add_parser("root", help="make (once) a Debian root holding this RabbitMQ release; "
                                            "print its path, for RABBITMQ_ROOT")
    root.add_argument("version", choices=sorted(DEBIAN_SUITES))
    needs = commands.add_parser("install", help="install what of these is missing, with the system's package "
                                                "manager; exit 1 if anything is still missing")
    needs.add_argument("needs", nargs="+", choices=sorted(NEEDS))
    needs.add_argument("--no-install", action="store_true", default=bool(os.environ.get("WORKQUEUE_NO_INSTALL")),
                       help="only say what is missing and how to install it (env WORKQUEUE_NO_INSTALL)")
    needs.add_argument("--who", default="brokers.py", help="the name to start each line with")
    args = parser.parse_args(argv)
    if args.command == "install":
        return 0 if install(args.needs, not args.no_install, args.who) else 1
    print(make_root(args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
