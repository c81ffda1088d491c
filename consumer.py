#!/usr/bin/env python3
"""A worker: takes tasks from the durable work queue one at a time, does each, and acks it only then.

Run two of them, each in a terminal, then publisher.py:

    python3 consumer.py        # terminal 1
    python3 consumer.py        # terminal 2
    python3 publisher.py       # terminal 3

The work-queue pattern is four steps, each a method of workqueue/worker.py, one hop from here:
- declare_queues(): the durable work queue, declared exactly as RabbitMQ's tutorial two declares it;
- subscribe(): basic_qos(prefetch_count=1) (--prefetch changes it), then basic_consume: the broker hands this
  worker one task at a time, and the next only once it has acked the last, so a busy worker is never handed
  more (fair dispatch);
- on_delivery(): runs do_work(task), below, on the task;
- ack(): basic_ack, only after the work: a worker that dies mid-task loses nothing, another does the task.
The rest of workqueue/ keeps that true in a real job system: reconnecting, heartbeats during long tasks,
retries and a dead-letter queue for what fails, warm stops. --help lists every setting.
"""

from __future__ import annotations

import sys
import time

try:
    from workqueue import cli
    from workqueue.output import log
    from workqueue.task import Task
    from workqueue.worker import Worker
except ModuleNotFoundError as missing:  # pika, the scripts' one package: run again in .venv, which has it
    from workqueue.bootstrap import run_in_venv
    run_in_venv("consumer.py", missing)


def do_work(task: Task) -> None:
    """The work itself: put your job here. The demo's job is to sleep for task.seconds; a job of your own
    reads its data from task.data, the task's other fields as the publisher sent them (see make_tasks).

    Whatever it raises fails this attempt only: the worker logs the error, retries the task later
    (--retries, after --retry-delay seconds, doubling), and carries on with the next task. A task is acked,
    and so forgotten by the broker, only once this returns. Delivery is at least once: a task whose worker
    died mid-task is done again, so make real work safe to repeat (task.message_id tells copies apart).
    """
    time.sleep(task.seconds)
    if task.attempt <= task.fail_attempts:  # the demo's --flaky tasks ask to fail their first attempt
        raise RuntimeError(f"failing on purpose: attempt {task.attempt} of the first {task.fail_attempts} "
                           "that this task asks to fail")


def main(argv: list[str] | None = None) -> int:
    settings = cli.worker_settings(argv)              # flags and environment variables; --help lists them
    worker = Worker(settings, work=do_work)
    cli.stop_warmly_on_signals(worker)                # Ctrl-C: finish and ack the current task, then exit
    with cli.CommandLine("consumer.py") as command:   # an error the user must fix: one line, exit 1
        worker.run()                                  # declare the queue, subscribe, consume until idle
    log(worker.name, worker.summary())
    return command.exit_code()


if __name__ == "__main__":
    sys.exit(main())
