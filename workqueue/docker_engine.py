"""A Docker engine of the tests' own, and a RabbitMQ image made without a registry, for the demo's Docker path.

The engine is Debian's dockerd, started by hand (no systemd needed) with its own socket, data root, exec root
and pid file, and `--iptables=false --ip-forward=false`: it leaves the host's firewall and forwarding as they
are (ports published on 127.0.0.1 still work, through docker-proxy). The only host change, the docker0
bridge, is undone when it stops, if it made it. It shares that bridge's name with an engine the host may
already run: the tests expect a machine without one, as CI's is.

The image is the Debian root of a RabbitMQ release (brokers.make_root), imported as it is, with the two
files the official image also sets: a rabbitmq.conf that lets guest log in from the bridge (the host's
connections do not arrive on the container's loopback) and the management plugin. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# Socket, data root (the images, kept between runs as a cache), exec root, pid file and log of the engine.
STATE_FOLDER = Path(os.environ.get("WORKQUEUE_DOCKER_STATE", "/var/tmp/workqueue-docker"))
# dockerd answers in about 1.5 s on 2 cores; a loaded machine gets more.
ENGINE_SECONDS = 60
RABBITMQ_CONF = """\
listeners.tcp.default = 5672
loopback_users.guest = false
management.tcp.port = 15672
log.console = true
log.file = false
"""
# The image's files beyond the root's: the config above, and the management plugin, as the official image has.
DOCKERFILE = """\
FROM {base}
COPY --chown=rabbitmq:rabbitmq rabbitmq.conf enabled_plugins /etc/rabbitmq/
"""


class EngineError(RuntimeError):
    """The engine could not be started, or could not make the image; the message says why."""


class DockerEngine:
    """dockerd of our own; `env` is the environment whose `docker` commands reach it (DOCKER_HOST)."""

    def __init__(self, state: Path = STATE_FOLDER) -> None:
        self.state = state
        self.host = f"unix://{state}/docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": self.host}
        self.process: subprocess.Popen | None = None
        self.had_bridge = Path("/sys/class/net/docker0").exists()

    def docker(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env={**self.env, **env}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def answers(self) -> bool:
        return self.docker("info", timeout=30).returncode == 0

    def start(self) -> None:
        """Start dockerd; EngineError if it does not answer within ENGINE_SECONDS (with its log's end)."""
        self.state.mkdir(parents=True, exist_ok=True)
        log = self.state / "dockerd.log"
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                ["dockerd", "--host", self.host, "--data-root", str(self.state / "data"),
                 "--exec-root", str(self.state / "exec"), "--pidfile", str(self.state / "dockerd.pid"),
                 "--iptables=false", "--ip-forward=false"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + ENGINE_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"dockerd did not answer on {self.host}:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Remove every container, stop dockerd, and delete the docker0 bridge if it made it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.remove_containers()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if not self.had_bridge and Path("/sys/class/net/docker0").exists():
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)
        # What a stopped dockerd may leave mounted under its state folder, deepest first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.state}/")), reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True)

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, timeout=60).returncode == 0

    def rabbitmq_image(self, root: Path, version: str) -> str:
        """The tag of an image that runs the RabbitMQ of this Debian root (made once, kept in the data root).

        Raises EngineError when making it fails.
        """
        tag = f"workqueue-test/rabbitmq:{version}-management"
        if self.has_image(tag):
            return tag
        base = f"workqueue-test/rabbitmq-root:{version}"
        # --one-file-system: not what a running node of the tests has bound into the root (/proc, /dev).
        tar = subprocess.Popen(["tar", "--numeric-owner", "--one-file-system", "--exclude=./var/tmp/nodes",
                                "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV LANG=C.UTF-8 HOME=/var/lib/rabbitmq",
             "--change", "USER rabbitmq", "--change", "WORKDIR /var/lib/rabbitmq",
             "--change", "EXPOSE 5672 15672", "--change", 'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]',
             "-", base], stdin=tar.stdout, env=self.env, capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        if tar.wait() or imported.returncode:
            raise EngineError(f"docker import of {root} failed: {imported.stderr.strip()}")
        self.build(tag, DOCKERFILE.format(base=base), {"rabbitmq.conf": RABBITMQ_CONF,
                                                       "enabled_plugins": "[rabbitmq_management].\n"})
        return tag

    def build(self, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> None:
        """docker build of a Dockerfile and these files (no registry needed when FROM a local image)."""
        with tempfile.TemporaryDirectory() as context:
            for name, text in {"Dockerfile": dockerfile, **(files or {})}.items():
                (Path(context) / name).write_text(text)
            # The classic builder: BuildKit is a separate package on Debian, and not needed here.
            built = self.docker("build", "-q", "-t", tag, context, timeout=300, DOCKER_BUILDKIT="0")
        if built.returncode:
            raise EngineError(f"docker build of {tag} failed: {built.stderr.strip()[-1000:]}")

    def remove_containers(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            ids = self.docker("ps", "-aq", timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, timeout=60)
