#!/usr/bin/env python3
"""Put tasks on the durable work queue: persistent messages, each one confirmed by the broker.

    python3 publisher.py       # ten tasks of 1-5 s each, for the workers of consumer.py

The work-queue pattern's sending side is three steps, each a method of workqueue/publishing.py, one hop
from here:
- declare_queue(): the durable work queue, declared exactly as RabbitMQ's tutorial two declares it;
- on_queue_declareok(): publisher confirms on: the broker confirms each message once it has it safely;
- publish_more(): each task a persistent message (delivery_mode 2: written to disk, it survives a broker
  restart), up to 1,000 of them awaiting their confirm at once; on_confirm() settles them.
A task the broker does not confirm is named, and the exit status is 1. After a lost connection the
publisher reconnects and sends again what was not confirmed. --help lists every setting.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator

try:
    from workqueue import cli
    from workqueue.publishing import Publisher
    from workqueue.settings import TaskPlan
    from workqueue.task import Task, new_task
except ModuleNotFoundError as missing:  # pika, the scripts' one package: run again in .venv, which has it
    from workqueue.bootstrap import run_in_venv
    run_in_venv("publisher.py", missing)


def make_tasks(plan: TaskPlan) -> Iterator[Task]:
    """The tasks to send: put your own here, each with a unique whole-number id. The demo's are durations,
    random or exact, made as they are sent (500,000 tasks need no list in memory); --flaky draws tasks that fail
    their first attempt on purpose, with random numbers of their own, so that the durations stay the same.
    A job of your own sends its data as fields of the task: new_task(7, 0, image="a.png") reaches the worker's
    do_work as task.data["image"]."""
    rng, flaky_left = random.Random(plan.seed), min(plan.flaky, plan.total)
    flaky_rng = random.Random(None if plan.seed is None else f"flaky {plan.seed}")  # not the durations' numbers
    if plan.durations is not None:
        durations = iter(plan.durations)
    else:
        durations = (round(rng.uniform(plan.min_seconds, plan.max_seconds), 2) for _ in range(plan.count))
    for task_id, seconds in enumerate(durations, start=1):
        # Flaky with the chance that leaves exactly --flaky of them in the end (selection sampling: no ids kept).
        flaky = flaky_rng.random() * (plan.total - task_id + 1) < flaky_left
        flaky_left -= flaky
        yield new_task(task_id, seconds, fail_attempts=int(flaky))


def main(argv: list[str] | None = None) -> int:
    settings, plan = cli.publisher_settings(argv)      # flags and environment variables; --help lists them
    publisher = Publisher(settings)
    cli.interrupt_on_signals(publisher)                # Ctrl-C: send no more, wait a little for confirms
    with cli.CommandLine("publisher.py") as command:   # an error the user must fix: one line, exit 1
        publisher.publish(make_tasks(plan), plan.total)  # declare the queue, publish, await the confirms
    all_confirmed = publisher.account_for_every_task(command.error)  # names each task not confirmed
    return command.exit_code(failed=not all_confirmed)


if __name__ == "__main__":
    sys.exit(main())
