"""The work-queue demo in one command: a broker, workers, a publisher, then a report of who did what.

run_demo.sh sets up Python and .venv, then hands over to this (python -m workqueue.demo); ./run_demo.sh --help
says how to use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from workqueue import brokers as rabbitmq
from workqueue import cli, events, topology
from workqueue.connection import mask_url
from workqueue.demo_broker import Broker, Interrupted, alive, stop_kept
from workqueue.errors import UsageError, WorkQueueError
from workqueue.output import log, show_any_text, write
from workqueue.settings import DEFAULT_QUEUE, DEFAULT_URL, RetryPolicy

# The project folder: the scripts the demo runs are there.
HERE = Path(__file__).resolve().parent.parent
PROGRAM = "run_demo.sh"
USAGE = """\
Usage: ./run_demo.sh [options]

Sets up everything on a fresh machine and shows fair dispatch: a Python virtual environment with pika,
a RabbitMQ broker, N workers (consumer.py) consuming before one publisher (publisher.py) sends its tasks,
then a report: per worker the tasks done, a timeline, and the makespan against the ideal schedule.

Options:
  --workers N          workers to start (default 2)
  --tasks N            tasks to publish (default 10)
  --min-seconds S      shortest random task duration (default 1)
  --max-seconds S      longest random task duration (default 5)
  --seed N             random seed, for the same durations every run
  --durations LIST     exact durations, e.g. 3,1,4.5 (overrides --tasks, --min/--max-seconds)
  --flaky N            N of the tasks fail their first attempt on purpose: watch them fail, wait on the
                       broker and succeed on a later retry (the report counts their failed attempts)
  --idle-timeout S     workers exit S seconds after their last task (default 6); once every task is
                       done, a worker that got none is stopped then too; 0: they wait for more
  --kill-worker        kill a worker with SIGKILL in the middle of a task (needs 2 workers or more): look
                       for the task started by the killed worker, then done by another, once, nothing lost
  --restart-broker     once every task is confirmed and some are in progress, kill the broker (kill -9)
                       and start it again, for a broker this demo started: look for the workers reconnecting
                       and the tasks in flight at the crash done again, nothing lost
  --mode MODE          where the processes run: terminals (a window each), tmux (a pane each) or
                       inline (all here, lines prefixed by name); default: terminals on a desktop,
                       else tmux when it is installed and this is an interactive terminal, else inline
  --keep-broker        leave a broker this script started running afterwards
  --start-broker       only start a broker (as the demo would) and leave it running, for running the
                       scripts by hand; says how to stop it
  --stop-broker        stop the broker that --start-broker or --keep-broker left running
  --no-install         never install anything (RabbitMQ, Python's venv module) when it is missing; say
                       what to run instead (env WORKQUEUE_NO_INSTALL=1)
  -h, --help           this help

Environment:
  AMQP_URL             broker to use if it answers (default amqp://guest:guest@localhost:5672/%2F);
                       otherwise a broker is started on that URL's port
  TASK_QUEUE           queue name (default task_queue)
  RABBITMQ_IMAGE       Docker image for the broker (default rabbitmq:4-management)
  RABBITMQ_BIN         folder holding rabbitmq-server and rabbitmqctl (default /usr/lib/rabbitmq/bin)
  RABBITMQ_MANAGEMENT_PORT  port of the management UI of a broker started here (default 15672; 0: none,
                       for a node that boots faster)
  DEMO_DIR             folder for the run's files and a local node's data (default .demo)
  NO_COLOR             set to turn off coloured names in inline mode

The broker, in this order: the one answering at AMQP_URL (any URL of a list); else a Docker container named
workqueue-demo-rabbitmq (ports published on 127.0.0.1 only); else a throwaway local rabbitmq-server node in
$DEMO_DIR/rabbitmq, after installing RabbitMQ with the system's package manager if it is missing (asking
first on a terminal; without one, only as root or with password-less sudo; no system-wide service is left
running). When Docker cannot give a broker (no engine, no image, a port taken, a container that dies), one
line says why and the local node is next. A broker started here is stopped at the end, however the demo
ends, unless --keep-broker or --start-broker is given; the next demo stops one a killed demo left behind.
Each run's files are in $DEMO_DIR/runs/<time>-<pid>; a queue with consumers not the demo's own is not
shared (the run uses a queue of its own).

Ctrl-C stops the workers warmly (each finishes and acks its task), then the broker if started here.
Exit status: 0 only when every published task was done.
After a manual run, the same report: python3 report.py EVENTS_FILE (the file given to --events).
"""
# The tmux server of the demo's panes, apart from the user's own tmux sessions.
TMUX_SOCKET = "workqueue-demo"
# Desktop terminal programs, in the order they are tried.
TERMINALS = ("x-terminal-emulator", "gnome-terminal", "konsole", "xfce4-terminal", "xterm")
# Seconds to wait: for the workers to consume, for a process to start.
CONSUMERS_SECONDS, START_SECONDS = 60, 30
# Runs whose files are kept in DEMO_DIR/runs (the older ones are deleted as new ones start).
RUNS_KEPT = 10
# Seconds the workers get to finish their task after Ctrl-C.
STOP_SECONDS = 60
# The first line of a launcher: the shell writes its own PID to the file named next, then becomes the process.
RECORD_PID_THEN_EXEC = 'echo $$ > "$0"; exec "$@"'
MODES = ("terminals", "tmux", "inline")


def say(text: str) -> None:
    log("demo", text)


# ---------------------------------------------------------------- flags


def usage(text: str) -> UsageError:
    return UsageError(f"{text} (see --help)")


def parse_args(argv: list[str]) -> dict:
    """The demo's own flags; those passed on to the scripts are checked by the scripts' own parsers."""
    settings = {"workers": 2, "tasks": 10, "idle_timeout": "6", "mode": "auto", "keep_broker": False,
                "publisher_flags": [], "no_install": bool(os.environ.get("WORKQUEUE_NO_INSTALL")),
                "kill_worker": False, "restart_broker": False, "start_broker": False, "stop_broker": False}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag in ("-h", "--help"):
            print(USAGE, end="")
            sys.exit(0)
        if flag == "--keep-broker":
            settings["keep_broker"] = True
            continue
        if flag in ("--no-install", "--kill-worker", "--restart-broker", "--start-broker", "--stop-broker"):
            settings[flag[2:].replace("-", "_")] = True
            continue
        if flag not in ("--workers", "--tasks", "--min-seconds", "--max-seconds", "--seed", "--durations",
                        "--flaky", "--idle-timeout", "--mode"):
            raise usage(f"unknown option '{flag}'")
        if not args or not args[0]:
            raise usage(f"{flag} needs a value")
        value = args.pop(0)
        if flag in ("--workers", "--tasks"):
            low = 1 if flag == "--workers" else 0
            if not value.isdigit() or int(value) < low:
                raise usage(f"{flag} must be a whole number >= {low}: '{value}'")
            settings[flag[2:]] = int(value)
        elif flag == "--mode":
            if value not in MODES:
                raise usage("--mode must be terminals, tmux or inline")
            settings["mode"] = value
        elif flag == "--idle-timeout":
            settings["idle_timeout"] = value
        else:
            settings["publisher_flags"] += [flag, value]
    if settings["kill_worker"] and settings["workers"] < 2:
        raise usage("--kill-worker needs --workers 2 or more: another worker must redo the task")
    # The scripts check the flags passed on to them, here, before anything is started.
    try:
        cli.publisher_settings(["--count", str(settings["tasks"]), *settings["publisher_flags"]], prog=PROGRAM)
        cli.worker_settings(["--idle-timeout", settings["idle_timeout"]], prog=PROGRAM)
    except SystemExit:
        sys.exit(2)
    return settings


# ---------------------------------------------------------------- the processes


def desktop_terminal() -> str | None:
    if sys.platform == "darwin":
        return "osascript"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return next((program for program in TERMINALS if shutil.which(program)), None)


def colour(index: int) -> tuple[str, str]:
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[1;{31 + index % 6}m", "\033[0m"
    return "", ""


class Processes:
    """The workers and the publisher, each in a window, a tmux pane, or here with its lines prefixed.

    Each runs from a small launcher script that records its PID and exit status, whatever window it is in.
    """

    def __init__(self, mode: str, run_dir: Path) -> None:
        self.mode = mode
        self.run_dir = run_dir
        self.names: list[str] = []
        self.tmux_session: str | None = None
        self.printers: list[threading.Thread] = []

    def start(self, name: str, index: int, command: list[str]) -> None:
        script = self.run_dir / f"{name}.sh"
        pid_file, exit_file = self.run_dir / f"{name}.pid", self.run_dir / f"{name}.exit"
        script.write_text(
            "#!/usr/bin/env bash\n"
            f"cd {shlex.quote(str(HERE))}\n"
            f"bash -c {shlex.quote(RECORD_PID_THEN_EXEC)} {shlex.quote(str(pid_file))} "
            f"{shlex.join(command)}\n"
            f"echo $? > {shlex.quote(str(exit_file))}\n"
            # A window of its own stays open a moment, so that its last lines can be read.
            f'[ -t 0 ] && read -r -t 15 -p "({name} has exited; Enter closes this window)" || true\n')
        self.names.append(name)
        getattr(self, f"start_{self.mode}")(name, index, str(script))

    def start_inline(self, name: str, index: int, script: str) -> None:
        # A process group of its own: Ctrl-C reaches only the demo, which then asks each worker, warmly, to stop.
        process = subprocess.Popen(["bash", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")
        start, end = colour(index)

        def print_lines() -> None:
            for line in process.stdout:
                # One write a line: the lines of the processes never run into each other.
                write(f"{start}{name:<10}{end} {line.rstrip().removeprefix(f'[{name}] ')}\n")
        printer = threading.Thread(target=print_lines, daemon=True)
        printer.start()
        self.printers.append(printer)

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", TMUX_SOCKET, *args], capture_output=True, text=True)

    def start_tmux(self, name: str, _index: int, script: str) -> None:
        if self.tmux_session is None:
            self.tmux_session = f"demo-{os.getpid()}"
            self.tmux("new-session", "-d", "-s", self.tmux_session, "-x", "200", "-y", "50", f"bash {script}")
            self.tmux("set-option", "-t", self.tmux_session, "remain-on-exit", "on")
        else:
            self.tmux("split-window", "-t", self.tmux_session, f"bash {script}")
            self.tmux("select-layout", "-t", self.tmux_session, "tiled")
        self.tmux("select-pane", "-t", self.tmux_session, "-T", name)

    def start_terminals(self, name: str, _index: int, script: str) -> None:
        program = desktop_terminal()
        commands = {
            "osascript": ["osascript", "-e", f'tell application "Terminal" to do script "bash \'{script}\'"'],
            "gnome-terminal": ["gnome-terminal", "--title", name, "--", "bash", script],
            "konsole": ["konsole", "-p", f"tabtitle={name}", "-e", "bash", script],
            "xfce4-terminal": ["xfce4-terminal", "--title", name, "-x", "bash", script],
        }
        subprocess.Popen(commands.get(program, [program, "-T", name, "-e", "bash", script]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)

    def pid(self, name: str) -> int | None:
        try:
            return int((self.run_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def exited(self, name: str) -> bool:
        return (self.run_dir / f"{name}.exit").exists()

    def exit_status(self, name: str) -> int:
        try:
            return int((self.run_dir / f"{name}.exit").read_text())
        except (OSError, ValueError):
            return 1

    def wait_started(self, name: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while self.pid(name) is None:
            if time.monotonic() > deadline:
                raise WorkQueueError(f"{name} did not start (its window or pane may have failed to open)")
            time.sleep(0.1)

    def workers(self) -> list[str]:
        return [name for name in self.names if name != "publisher"]

    def wait(self, names: list[str]) -> None:
        while any(self.running(name) for name in names):
            time.sleep(0.2)

    def stop_workers(self) -> None:
        """One SIGTERM each: finish and ack the current task, then exit."""
        for name in self.workers():
            self.signal(name, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while any(self.running(name) for name in self.workers()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def signal(self, name: str, signum: int) -> None:
        pid = self.pid(name)
        if pid:
            with contextlib.suppress(OSError):  # already gone
                os.kill(pid, signum)

    def show_tmux_panes(self) -> None:
        for index, name in enumerate(self.names):
            print(f"---- {name} (tmux pane {index}) ----")
            pane = self.tmux("capture-pane", "-p", "-t", f"{self.tmux_session}:0.{index}", "-S", "-1000").stdout
            print("\n".join(line for line in pane.splitlines() if line))

    def close(self) -> None:
        for printer in self.printers:
            printer.join(timeout=5)
        if self.tmux_session:
            self.tmux("kill-session", "-t", self.tmux_session)


def choose_mode(mode: str) -> str:
    if mode == "auto":
        if desktop_terminal():
            return "terminals"
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
        return "tmux" if shutil.which("tmux") and interactive else "inline"
    if mode == "tmux" and not shutil.which("tmux"):
        raise WorkQueueError("--mode tmux: tmux is not installed")
    if mode == "terminals" and not desktop_terminal():
        raise WorkQueueError("--mode terminals: no desktop terminal found")
    return mode


# ---------------------------------------------------------------- the run


class Demo:
    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.url = os.environ.get("AMQP_URL") or DEFAULT_URL
        self.queue = os.environ.get("TASK_QUEUE") or DEFAULT_QUEUE
        self.own_queue = False  # a queue of this run's own, deleted at its end
        self.folder = Path(os.environ.get("DEMO_DIR") or HERE / ".demo")
        # A folder per run: demos run at the same time in one checkout keep apart.
        self.run_dir = self.folder / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.events = self.run_dir / "events.jsonl"
        keep = settings["keep_broker"] or settings["start_broker"]
        self.broker = Broker(self.url, self.folder, keep, settings["no_install"], lambda: self.interrupted)
        self.processes: Processes | None = None
        self.interrupted = False
        self.finishing = False  # in main()'s clean-up: a signal must not cut it short

    def prepare_folders(self) -> None:
        """The run's folder, before anything is started: a folder that cannot be written is one line."""
        try:
            self.run_dir.mkdir(parents=True)
            for old in sorted((self.folder / "runs").iterdir())[:-RUNS_KEPT]:
                owner = old.name.rpartition("-")[2]
                if not (owner.isdigit() and alive(int(owner))):  # not the folder of a demo still running
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as error:
            raise WorkQueueError(f"cannot write in {self.folder} ({error.strerror}): set DEMO_DIR to a folder "
                                 "you can write") from None

    def stop_leftovers(self) -> None:
        """The workers and publishers of earlier runs whose demo is gone without stopping them (kill -9): left
        running, they would take this run's tasks. Each is asked to stop warmly, then killed after a while."""
        left = {}
        for pid_file in (self.folder / "runs").glob("*/*.pid"):
            run, name = pid_file.parent, pid_file.stem
            owner = run.name.rpartition("-")[2]
            if run == self.run_dir or (owner.isdigit() and alive(int(owner))) or (run / f"{name}.exit").exists():
                continue
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                # Only a process that is surely one of ours: a PID can be reused (Linux's /proc tells).
                if alive(pid) and any(script in Path(f"/proc/{pid}/cmdline").read_bytes()
                                      for script in (b"consumer.py", b"publisher.py")):
                    os.kill(pid, signal.SIGTERM)
                    left[pid] = name
        if left:
            say(f"stopping {', '.join(sorted(left.values()))}, left running by an earlier demo")
            deadline = time.monotonic() + STOP_SECONDS
            while any(alive(pid) for pid in left) and time.monotonic() < deadline:
                time.sleep(0.2)
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def run(self) -> int:
        # From the first moment: whatever the demo starts, a signal (Ctrl-C, SIGTERM, the terminal closing)
        # ends in stop(), which stops it.
        for signum in cli.STOP_SIGNALS:
            signal.signal(signum, self.on_interrupt)
        self.prepare_folders()
        self.stop_leftovers()
        if self.settings["stop_broker"]:
            say(stop_kept(self.folder))
            return 0
        url = self.broker.find_or_start()
        if self.interrupted:
            raise Interrupted("interrupted before the workers were started")
        if self.settings["start_broker"]:
            return self.leave_broker_running(url)
        if self.settings["restart_broker"] and not self.broker.can_restart():
            raise WorkQueueError(f"--restart-broker: the broker at {mask_url(self.url)} was running before the demo, "
                                 "which restarts only a broker it started (stop that one, or point AMQP_URL elsewhere)")
        self.choose_queue(url)
        mode = choose_mode(self.settings["mode"])
        os.environ.update(AMQP_URL=self.url, TASK_QUEUE=self.queue, PYTHONUNBUFFERED="1")
        self.processes = processes = Processes(mode, self.run_dir)
        workers = self.settings["workers"]
        say(f"starting {workers} worker(s) ({mode} mode) on queue '{self.queue}'")
        for index in range(1, workers + 1):
            processes.start(f"worker-{index}", index, [
                sys.executable, "consumer.py", "--name", f"worker-{index}", "--idle-timeout",
                self.settings["idle_timeout"], "--events", str(self.events), "--connect-timeout", "30"])
        for name in processes.workers():
            processes.wait_started(name)
        try:
            rabbitmq.wait_until(lambda: (rabbitmq.consumer_count(url, self.queue) or 0) >= workers or
                                self.interrupted, CONSUMERS_SECONDS, "the workers", 0.2)
        except AssertionError:
            raise WorkQueueError(f"the workers did not all start consuming within {CONSUMERS_SECONDS} s") from None
        consuming_since = time.monotonic()
        if not self.interrupted:
            say("all workers are consuming; publishing")
            processes.start("publisher", 0, [sys.executable, "publisher.py", "--count", str(self.settings["tasks"]),
                                             *self.settings["publisher_flags"], "--events", str(self.events)])
            if self.settings["kill_worker"] or self.settings["restart_broker"]:
                threading.Thread(target=Director(self, consuming_since).run, daemon=True).start()
            if mode == "tmux" and sys.stdin.isatty() and sys.stdout.isatty():
                self.watch_in_tmux()
            self.wait_for_the_workers()
            processes.wait_started("publisher")
            processes.wait(["publisher"])
        return self.finish()

    def leave_broker_running(self, url: str) -> int:
        how = ("./run_demo.sh --stop-broker stops it" if self.broker.started else
               "it was running already, so nothing was started and --stop-broker leaves it alone")
        say(f"the broker is at {mask_url(url)}: run python3 consumer.py in two terminals, then python3 publisher.py; "
            f"{how}")
        self.broker.started = None  # kept: stop() leaves it on the record, as it is
        return 0

    def choose_queue(self, url: str) -> None:
        """TASK_QUEUE, unless another demo of this DEMO_DIR uses it or consumers are on it already (a worker of
        an earlier run): those would take some of this run's tasks, which its report would count as not done."""
        # Held until this process ends, however it ends: the kernel lets go of a dead process's lock.
        self.queue_lock = open(self.folder / f"queue-{self.queue.replace('/', '_')}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(self.queue_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            others = rabbitmq.consumer_count(url, self.queue) or 0
            why = f"already has {others} consumer(s), not this demo's (a worker of an earlier run?)" if others else ""
        except BlockingIOError:
            why = "is in use by another demo run from this folder"
        if why:
            name = f"{self.queue}-demo-{os.getpid()}"
            say(f"'{self.queue}' {why}: this run uses a queue of its own, '{name}', deleted at its end")
            self.queue, self.own_queue = name, True

    def delete_own_queue(self) -> None:
        """The run's own queue and the queues the workers made for it, those that are empty."""
        if not self.own_queue:
            return
        names = [self.queue, topology.dead_letter_queue(self.queue),
                 *(topology.retry_queue(self.queue, delay) for delay in RetryPolicy().delays())]
        left = rabbitmq.delete_queues(self.broker.url, names)  # the URL that answered, of a list
        if left:
            say(f"left {', '.join(left)} on the broker: not empty")

    def wait_for_the_workers(self) -> None:
        """Until every worker has exited. A worker leaves --idle-timeout seconds after its last task, and one that
        got no task waits for its first: once the publisher has exited and every task it got confirmed is done or
        parked, such a worker is asked to stop (SIGTERM), as long after as the idle timeout."""
        processes, idle = self.processes, float(self.settings["idle_timeout"])
        settled_at = None
        while running := [name for name in processes.workers() if processes.running(name)]:
            if settled_at is None and processes.exited("publisher") and self.all_settled():
                settled_at = time.monotonic()
                if not idle:
                    say("every task is done; the workers wait for more (--idle-timeout 0): Ctrl-C stops them")
            elif settled_at is not None and idle and time.monotonic() - settled_at > idle + 1:
                say(f"every task is done: stopping {', '.join(running)}, which got none to do")
                for name in running:
                    processes.signal(name, signal.SIGTERM)
                processes.wait(running)
            time.sleep(0.2)

    def all_settled(self) -> bool:
        """Whether every task the publisher got confirmed is done (acked) or parked, by the events file."""
        published, settled = set(), set()
        for event in events.read(str(self.events)) if self.events.exists() else ():
            if event and event["event"] == "published":
                published.add(event.get("message_id"))
            elif event and (event["event"] == "parked" or (event["event"] == "done" and event.get("acked", True))):
                settled.add(event.get("message_id"))
        return published <= settled

    def watch_in_tmux(self) -> None:
        """Watch from inside tmux; the session is closed for you once every worker has exited."""
        def close_when_done() -> None:
            self.processes.wait(self.processes.workers())
            time.sleep(2)
            self.processes.tmux("kill-session", "-t", self.processes.tmux_session)
        threading.Thread(target=close_when_done, daemon=True).start()
        subprocess.run(["tmux", "-L", TMUX_SOCKET, "attach", "-t", self.processes.tmux_session],
                       env={**os.environ, "TMUX": ""})  # TMUX="": also from inside tmux

    def on_interrupt(self, signum: int, _frame) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        write("\n")
        if self.processes is None:
            say(f"{signal.Signals(signum).name}: stopping")
            if self.broker.asking and not self.finishing:
                # The question whether to install RabbitMQ waits on the terminal for ever: end it now. Every
                # other wait before the workers start has an end, and sees the flag.
                raise Interrupted(f"{signal.Signals(signum).name} before the workers were started")
            return
        say(f"{signal.Signals(signum).name}: the workers finish their current task, then stop")
        # The waiting loops see the flag; the workers are asked here, each once.
        threading.Thread(target=self.stop_everything, daemon=True).start()

    def stop_everything(self) -> None:
        self.processes.stop_workers()
        self.processes.signal("publisher", signal.SIGTERM)

    def finish(self) -> int:
        processes = self.processes
        if self.interrupted:
            processes.stop_workers()
        if processes.mode == "tmux" and not sys.stdout.isatty() and processes.tmux_session:
            processes.show_tmux_panes()
        processes.close()
        write("\n")
        say("report")
        status = subprocess.run([sys.executable, "report.py", str(self.events), "--workers",
                                 str(self.settings["workers"]), "--html", str(self.run_dir / "timeline.html")],
                                cwd=HERE).returncode
        if processes.exit_status("publisher") != 0:
            say(f"the publisher did not get every task confirmed (exit {processes.exit_status('publisher')})")
            status = 1
        say(f"this run's events: {self.events} (python3 report.py reads them again)")
        return 1 if status else 0


class Director:
    """Kills a worker in the middle of a task, or crashes the broker mid-run: the scenarios on the flags.

    It watches the events file, so it works whatever window the processes run in; what it does, it says
    in a line and writes as an event, for the report.
    """

    # Poll the events file this often, in seconds.
    POLL = 0.05
    # A quorum queue crashed within about a second of its creation can come back without a leader
    # (RabbitMQ 3.10): the broker is crashed no sooner than this after the workers declared the queue.
    QUEUE_SETTLE_SECONDS = 3.0

    def __init__(self, demo: Demo, consuming_since: float) -> None:
        self.demo = demo
        self.processes = demo.processes
        self.consuming_since = consuming_since
        self.writer = events.Writer(str(demo.events))
        self.to_kill = demo.settings["kill_worker"]
        self.to_restart = demo.settings["restart_broker"]

    def run(self) -> None:
        while (self.to_kill or self.to_restart) and not self.demo.interrupted:
            if not any(self.processes.running(name) for name in self.processes.workers()):
                break
            in_progress = self.in_progress()
            if self.to_kill and self.kill_a_worker(in_progress):
                self.to_kill = False
            elif self.to_restart and in_progress and self.all_confirmed() and \
                    time.monotonic() - self.consuming_since >= self.QUEUE_SETTLE_SECONDS:
                self.restart_broker(len(in_progress))
                self.to_restart = False
            time.sleep(self.POLL)
        if self.to_kill:
            say("--kill-worker: no task ran long enough to kill its worker in the middle of it")
        if self.to_restart:
            say("--restart-broker: no moment came with every task confirmed and some in progress")

    def in_progress(self) -> list[dict]:
        """Attempts started and not yet finished, by workers still running."""
        begun: dict[tuple, dict] = {}
        for event in events.read(str(self.demo.events)):
            if event is None or event["event"] not in ("started", "done", "failed", "killed"):
                continue
            key = (event["worker"], event.get("message_id"), event.get("attempt"))
            if event["event"] == "started":
                begun[key] = event
            else:
                begun.pop(key, None)
        return [e for e in begun.values() if self.processes.running(str(e["worker"]))]

    def kill_a_worker(self, in_progress: list[dict]) -> bool:
        """SIGKILL a worker well into its task, with time left in it; whether one was killed."""
        now = time.time()
        for event in in_progress:
            into = now - event["started"]
            if into >= 0.3 * event["seconds"] and event["seconds"] - into >= 0.1:
                self.processes.signal(event["worker"], signal.SIGKILL)
                self.writer.write({**event, "event": "killed", "at": time.time()})
                say(f"killed {event['worker']} with SIGKILL {into:.1f} s into {event['label']} (of "
                    f"{event['seconds']:g} s): not acked, so the broker hands it to another worker")
                return True
        return False

    def all_confirmed(self) -> bool:
        return self.processes.exited("publisher") and self.processes.exit_status("publisher") == 0

    def restart_broker(self, in_flight: int) -> None:
        say(f"killing the broker (kill -9) with {in_flight} task(s) in progress, then starting it again")
        down = time.time()
        try:
            self.demo.broker.crash_and_restart()
        except WorkQueueError as error:
            say(f"--restart-broker: {error}")
            return
        up = time.time()
        self.writer.write({"event": "broker_down", "down": down, "up": up})
        say(f"the broker is back after {up - down:.1f} s, with every confirmed task on its disk: "
            "the workers reconnect and redo what was in flight")


def main(argv: list[str] | None = None) -> int:
    show_any_text()
    with cli.CommandLine(PROGRAM) as command:
        demo = Demo(parse_args(sys.argv[1:] if argv is None else argv))
        try:
            return demo.run()
        except Interrupted:
            return 130
        finally:
            demo.finishing = True
            if demo.processes and demo.processes.tmux_session:
                demo.processes.tmux("kill-session", "-t", demo.processes.tmux_session)
            demo.delete_own_queue()
            demo.broker.stop()
    return command.exit_code()


if __name__ == "__main__":
    sys.exit(main())
