"""The engines without their command lines: a program of its own builds settings, hands in its own work, and
gets typed errors, never an exit."""

from __future__ import annotations

import pytest

from helpers import BrokerClient
from workqueue.errors import QueueMismatch, Unreachable
from workqueue.publishing import Publisher
from workqueue.settings import Broker, PublisherSettings, Queue, RetryPolicy, WorkerSettings
from workqueue.task import Task, new_task
from workqueue.worker import Worker


def test_a_program_publishes_and_works_tasks_with_settings_and_work_of_its_own(broker, queue):
    where = Broker(urls=(broker.url,))
    publisher = Publisher(PublisherSettings(where, Queue(queue)))
    publisher.publish((new_task(task_id, 0.0, image=f"{task_id}.png") for task_id in (1, 2, 3)), 3)
    assert (publisher.outcome.confirmed, publisher.outcome.failures, publisher.gave_up) == (3, 0, None)

    done: list[Task] = []

    def work(task: Task) -> None:
        if task.task_id == 2:
            raise ValueError("not this one")
        done.append(task)

    settings = WorkerSettings(where, Queue(queue), name="in-process", idle_timeout=0.5, retry=RetryPolicy(retries=0))
    worker = Worker(settings, work=work)
    worker.run()
    assert sorted(task.task_id for task in done) == [1, 3]
    assert all(task.message_id and task.message_id.endswith(f".{task.task_id}") for task in done)
    assert [task.data for task in sorted(done)] == [{"image": "1.png"}, {"image": "3.png"}], "the task's own data"
    assert "summary: 2 task(s) done" in worker.summary()
    with BrokerClient(broker.url) as client:
        assert client.depth(queue) == 0
        [(properties, _)] = client.drain(queue + ".dead")
    assert properties.headers["x-dead-reason"] == "failed 1 times (--retries 0); last error: ValueError: not this one"


def test_the_engines_raise_typed_errors_and_never_exit(broker, queue, unused_url):
    with BrokerClient(broker.url) as client:
        client.declare(queue, "classic")  # then declared as quorum: a mismatch the user must fix
    where = Broker(urls=(broker.url,))
    with pytest.raises(QueueMismatch, match="--queue-type classic"):
        Worker(WorkerSettings(where, Queue(queue)), work=lambda task: None).run()
    with pytest.raises(QueueMismatch, match="--queue-type classic"):
        Publisher(PublisherSettings(where, Queue(queue))).publish([new_task(1, 0.0)], 1)
    nowhere = Broker(urls=(unused_url,), connect_timeout=0.5)
    with pytest.raises(Unreachable, match="cannot reach RabbitMQ"):
        Publisher(PublisherSettings(nowhere, Queue(queue))).publish([new_task(1, 0.0)], 1)
