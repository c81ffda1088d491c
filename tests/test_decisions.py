"""The decisions that need no broker, as plain functions: what to do with a delivery, which delay, what a
confirm settles, how long to wait before the next attempt."""

from __future__ import annotations

from workqueue.connection import Backoff
from workqueue.failures import Park, Retry, Run, after_failure, decide
from workqueue.publishing import runs_text, settle
from workqueue.settings import RetryPolicy
from workqueue.task import Task

TASK = b'{"task_id": 7, "seconds": 0.5}'
JSON = "application/json"


def test_a_good_task_is_run_and_its_attempt_counts_the_failures_before():
    assert decide(TASK, {}, JSON, "quorum", 5) == Run(Task(7, 0.5, "task 7"), 0)
    run = decide(TASK, {"x-task-failures": 2, "x-delivery-count": 1}, JSON, "quorum", 5)
    assert run == Run(Task(7, 0.5, "task 7", attempt=3), 1)
    assert decide(TASK, {"x-delivery-count": 9}, JSON, "classic", 5) == Run(Task(7, 0.5, "task 7"), None), \
        "a classic queue counts no deliveries: a sender's header is not trusted"


def test_a_task_delivered_too_often_is_parked_before_its_body_is_read():
    decision = decide(b"[" * 100000, {"x-acquired-count": 5}, JSON, "quorum", 5)
    assert isinstance(decision, Park)
    assert decision.reason.startswith("delivered 5 times without an ack")
    assert decision.headers == {"x-dead-reason": decision.reason, "x-deliveries": 6}


def test_a_message_that_is_no_task_is_parked_with_the_reason():
    decision = decide(b'{"task_id": 1}', {}, JSON, "classic", 5)
    assert decision == Park("missing field(s): seconds", {"x-dead-reason": "missing field(s): seconds"})


def test_a_failed_attempt_is_retried_with_a_growing_delay_then_parked():
    policy = RetryPolicy(retries=2, delay=1.0, max_delay=60.0)
    first = after_failure(Task(7, 0.5, "task 7"), "ValueError: x", policy, 0)
    assert first == Retry(1.0, {"x-task-failures": 1, "x-last-error": "ValueError: x"})
    assert after_failure(Task(7, 0.5, "task 7", attempt=2), "E", policy, 0).delay == 2.0
    last = after_failure(Task(7, 0.5, "task 7", attempt=3), "ValueError: " + "x" * 900, policy, 2)
    assert isinstance(last, Park) and last.reason.startswith("failed 3 times (--retries 2); last error: ValueError")
    assert last.headers["x-task-failures"] == 3 and last.headers["x-deliveries"] == 3
    assert len(last.headers["x-last-error"]) == 500, "an error kept in a header is cut short"


def test_a_confirm_settles_its_own_tag_or_every_tag_up_to_it():
    in_flight = {1: "a", 2: "b", 3: "c", 5: "e"}
    assert settle(in_flight, 2, multiple=False) == ["b"]
    assert settle(in_flight, 3, multiple=True) == ["a", "c"]
    assert settle(in_flight, 9, multiple=True) == ["e"] and in_flight == {}
    assert settle({}, 4, multiple=False) == [], "a tag settled before is settled once"


def test_task_ids_are_shown_as_runs():
    assert runs_text([[7, 7], [1, 3], [4, 4], [9, 12]]) == "1-4, 7, 9-12"
    assert runs_text([]) == ""


def test_each_retry_waits_twice_as_long_up_to_the_longest():
    backoff = Backoff(first=0.5, longest=5.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.5
