"""Pure logic, no broker: the task format, URL handling and the command-line contract."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

import workqueue as wq
from helpers import PYTHON, ROOT


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / script), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)


def test_task_message_is_persistent_json_with_id_and_timestamp():
    body, properties = wq.task_message(3, 2.41)
    assert json.loads(body) == {"task_id": 3, "seconds": 2.41}
    assert properties.delivery_mode == 2 and properties.content_type == "application/json"
    assert properties.message_id and properties.timestamp
    assert wq.task_message(3, 2.41)[1].message_id != properties.message_id
    assert wq.parse_task(body, properties.content_type) == wq.Task(3, 2.41, "task 3")


@pytest.mark.parametrize("text, seconds", [("Hello World!", 0.0), ("First message.", 1.0), ("a...b..", 5.0)])
def test_tutorial_text_is_one_second_per_dot(text, seconds):
    assert wq.parse_task(text.encode(), None).seconds == seconds


def test_integer_seconds_and_extra_fields_are_accepted():
    task = wq.parse_task(b'{"task_id": 9, "seconds": 2, "owner": "x"}', "application/json")
    assert task == wq.Task(9, 2.0, "task 9")


@pytest.mark.parametrize("body", [b'{"task_id": true, "seconds": 1}', b'{"task_id": 1, "seconds": false}',
                                  b'{"task_id": 1, "seconds": Infinity}', b"null", b'"text"'])
def test_invalid_json_tasks_are_rejected(body):
    with pytest.raises(wq.BadTask):
        wq.parse_task(body, "application/json")


def test_password_is_masked():
    assert wq.mask_url("amqp://user:s3cret@host:5672/%2F") == "amqp://user:***@host:5672/%2F"
    assert wq.mask_url("amqp://host/") == "amqp://host/"


def test_several_urls_are_accepted_and_bad_ones_named_without_password():
    assert wq.url_list("amqp://a:1@h1:5672/%2F, amqp://a:1@h2:5673/%2F") == [
        "amqp://a:1@h1:5672/%2F", "amqp://a:1@h2:5673/%2F"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"amqp://u:\*\*\*@h:99999") as caught:
        wq.url_list("amqp://u:hunter2@h:99999/")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("script, args, complaint", [
    ("publisher.py", ["--count", "-1"], "argument --count: must be >= 0"),
    ("publisher.py", ["--min-seconds", "3", "--max-seconds", "2"], "--min-seconds 3 is more than --max-seconds 2"),
    ("publisher.py", ["--durations", "1,x"], "not a number of seconds: 'x'"),
    ("publisher.py", ["--durations", "1,,2"], "expected numbers separated by commas"),
    ("publisher.py", ["--durations", "nan"], "seconds must be from 0 to"),
    ("publisher.py", ["--url", "http://u:topsecret@host/"], "not an amqp:// or amqps:// URL"),
    ("consumer.py", ["--prefetch", "0"], "argument --prefetch: must be >= 1"),
    ("consumer.py", ["--idle-timeout", "-2"], "argument --idle-timeout: must be a number >= 0"),
    ("consumer.py", ["--queue-type", "stream"], "argument --queue-type: invalid choice"),
    ("consumer.py", ["--url", "amqp://u:topsecret@host:notaport/"], "bad URL"),
])
def test_bad_flags_are_usage_errors_with_exit_2(script, args, complaint):
    result = run_script(script, *args)
    assert result.returncode == 2
    assert complaint in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr


@pytest.mark.parametrize("script, variables", [
    ("publisher.py", ["TASK_COUNT", "TASK_MIN_SECONDS", "TASK_MAX_SECONDS", "TASK_SEED", "TASK_DURATIONS",
                      "TASK_EVENTS", "BLOCKED_TIMEOUT"]),
    ("consumer.py", ["WORKER_NAME", "WORKER_PREFETCH", "WORKER_IDLE_TIMEOUT", "WORKER_MAX_DELIVERIES",
                     "WORKER_EVENTS"]),
])
def test_help_documents_every_flag_and_its_environment_variable(script, variables):
    result = run_script(script, "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    for variable in variables + ["AMQP_URL", "TASK_QUEUE", "TASK_QUEUE_TYPE", "CONNECT_TIMEOUT"]:
        assert f"env {variable}" in help_text


def test_environment_values_are_checked_like_flags():
    result = subprocess.run([PYTHON, str(ROOT / "publisher.py")], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "TASK_COUNT": "many"})
    assert result.returncode == 2 and "argument --count: not a whole number: 'many'" in result.stderr
