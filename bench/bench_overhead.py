#!/usr/bin/env python3
"""A worker's own cost per task: consumer.py against a bare pika worker (do_work, then ack; nothing else).

Zero-second tasks, prefetch 1, so everything a worker does around the work shows. consumer.py runs as
users run it: a log line at each start and end, an events file. This machine's speed drifts by 20 % within
a second, and two processes of the same program can differ by 5 %, so:
- each round starts three fresh workers, each subscribed to a queue of its own: the bare worker,
  consumer.py, and a second bare worker, the control;
- within a round they take bursts of tasks in turn, so that drift hits all three alike;
- a worker's speed in a round is one over the median time between two of its tasks' ends (a stall of the
  broker or the machine moves a mean, hardly a median), leaving out the first tenth of each burst, which
  overlaps its publishing.
The figure is the median over the rounds of consumer.py's speed over the bare worker's; "control" is the
second bare worker's over the first, the noise.
Goal: >= 0.95 on a quorum queue and >= 0.98 on a classic one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pika

from bench import common as c
from workqueue import events
from workqueue.task import encode, new_task

GOALS = {"quorum": 0.95, "classic": 0.98}
# The workers of a round: a name, and the worker script, or the bare worker's extra flags (a tuple).
WORKERS: dict[str, Path | tuple[str, ...]] = {"bare": (), "consumer.py": c.ROOT / "consumer.py", "control": ()}
# Part of each burst left out: its first tasks are consumed while the rest are still being published.
WARM_UP = 0.1


class Subscribed:
    """A worker process subscribed to a queue of its own, for one round: a consumer.py (of some version),
    which tells its tasks' ends in its events file, or the bare worker."""

    def __init__(self, name: str, script: Path | tuple[str, ...], url: str, queue_type: str, folder: Path) -> None:
        self.name = name
        self.script = script
        self.url = url
        self.queue = c.fresh_queue(url, queue_type)
        self.times = folder / f"{self.queue}.json"
        if isinstance(script, Path):
            command = [*c.consumer_command(url, self.queue, "w", str(self.times), script), "--queue-type",
                       queue_type, "--idle-timeout", "0"]
            self.log = (folder / f"{self.queue}.log").open("w")
        else:
            command = [c.PYTHON, "-m", "bench.bare_worker", "--url", url, "--queue", self.queue,
                       "--record", str(self.times), *script]
            self.log = subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=c.ROOT, stdout=self.log)
        self.bursts: list[list[int]] = []

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        c.delete_queue(self.url, self.queue)

    def finish_times(self) -> dict[int, float]:
        """{task id: when it ended}, once the worker has exited."""
        if isinstance(self.script, Path):
            return {e["task_id"]: e["finished"] for e in events.read(str(self.times)) if e and e["event"] == "done"}
        return {int(task_id): at for task_id, at in json.loads(self.times.read_text()).items()}

    def speed(self) -> float:
        """Tasks per second: one over the median time between two tasks' ends, over this round's bursts."""
        times = self.finish_times()
        gaps = []
        for burst in self.bursts:
            ends = sorted(times[task_id] for task_id in burst)
            kept = ends[int(len(ends) * WARM_UP):]
            gaps += [later - earlier for earlier, later in itertools.pairwise(kept)]
        return 1 / c.median(gaps)


def give_burst(channel, worker: Subscribed, first_id: int, tasks: int) -> None:
    """Queue `tasks` zero-second tasks for the worker, then wait until it has taken the last one."""
    ids = list(range(first_id, first_id + tasks))
    for task_id in ids:
        body, properties = encode(new_task(task_id, 0.0), f"bench.{task_id}")
        channel.basic_publish("", worker.queue, body, properties)
    worker.bursts.append(ids)
    while channel.queue_declare(worker.queue, durable=True, passive=True).method.message_count:
        time.sleep(0.005)
    time.sleep(0.02)  # the last task taken is done and acked within a millisecond


def one_round(url: str, queue_type: str, bursts: int, tasks: int, folder: Path,
              kinds: dict[str, Path | tuple[str, ...]] = WORKERS) -> dict[str, float]:
    """Each worker's speed in one round of fresh workers taking bursts in turn."""
    workers = [Subscribed(name, script, url, queue_type, folder) for name, script in kinds.items()]
    try:
        for worker in workers:
            c.wait_for_consumers(url, worker.queue, 1)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        next_id = 1
        for burst in range(bursts):
            turn = burst % len(workers)  # each goes first in turn: no place in the rotation is favoured
            for worker in workers[turn:] + workers[:turn]:
                give_burst(channel, worker, next_id, tasks)
                next_id += tasks
        connection.close()
    finally:
        for worker in workers:
            worker.stop()
    return {worker.name: worker.speed() for worker in workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=21, help="rounds, each with fresh workers (default %(default)s)")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per worker in a round (default %(default)s)")
    parser.add_argument("--tasks", type=int, default=400, help="tasks per burst (default %(default)s)")
    parser.add_argument("--queue-types", default="quorum,classic")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, c.broker_url() as url:
        for queue_type in args.queue_types.split(","):
            rounds = [one_round(url, queue_type, args.bursts, args.tasks, Path(folder)) for _ in range(args.rounds)]
            speeds = {name: [speed[name] for speed in rounds] for name in WORKERS}
            ratios = [speed["consumer.py"] / speed["bare"] for speed in rounds]
            control = [speed["control"] / speed["bare"] for speed in rounds]
            rows.append([queue_type, round(c.median(speeds["consumer.py"])), round(c.median(speeds["bare"])),
                         c.median(ratios), f"{min(ratios):.2f}-{max(ratios):.2f}", c.median(control),
                         f"{min(control):.2f}-{max(control):.2f}", f">= {GOALS[queue_type]}"])
    c.table(f"A worker's own cost: zero-second tasks, prefetch 1, {args.rounds} rounds of fresh workers, each taking "
            f"{args.bursts} bursts of {args.tasks} in turn; median of the rounds (control: a second bare worker "
            "against the first)",
            ["queue", "consumer.py tasks/s", "bare tasks/s", "ratio", "range", "control", "range", "goal"], rows)


if __name__ == "__main__":
    main()
