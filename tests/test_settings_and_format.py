"""Pure logic, no broker: the task format, URL handling and the command-line contract."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pika.exceptions
import pytest

from helpers import PYTHON, ROOT
from workqueue import cli, events
from workqueue.connection import describe, mask_url
from workqueue.failures import earlier_deliveries
from workqueue.output import log
from workqueue.settings import RetryPolicy
from workqueue.task import BadTask, Task, decode, encode, new_task, run_prefix
from workqueue.topology import retry_queue


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / script), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)


def test_task_message_is_persistent_json_with_id_and_timestamp():
    body, properties = encode(new_task(3, 2.41), "run.3")
    assert json.loads(body) == {"task_id": 3, "seconds": 2.41}
    assert properties.delivery_mode == 2 and properties.content_type == "application/json"
    assert properties.message_id == "run.3" and properties.timestamp
    assert decode(body, properties.content_type) == Task(3, 2.41, "task 3")
    assert run_prefix() != run_prefix(), "message ids differ from one run to the next"


@pytest.mark.parametrize("task_id, seconds, fail_attempts", [(1, 0.0, 0), (3, 2.41, 0), (-7, 3600.0, 2),
                                                              (2**63 - 1, 1e-05, 1000), (12, 0.1 + 0.2, 0)])
def test_task_body_is_the_json_of_its_fields(task_id, seconds, fail_attempts):
    body, _ = encode(new_task(task_id, seconds, fail_attempts), "run.1")
    fields = {"task_id": task_id, "seconds": seconds, **({"fail_attempts": fail_attempts} if fail_attempts else {})}
    assert body == json.dumps(fields).encode(), "the same bytes json.dumps gives, formatted by hand"


STRANGE_TEXT = ['plain', 'with "quotes" and \\ backslash', "new\nline\ttab", "caf\u00e9 \u2603 \U0001F600", "\x00\x1f"]


@pytest.mark.parametrize("text", STRANGE_TEXT)
def test_event_lines_are_the_json_of_their_fields(text):
    """The per-task events are formatted by hand for speed: each line must be exactly json.dumps of its fields."""
    line = events.started(text, 5, 1.5, 2, text, text)
    fields = json.loads(line)
    assert line == json.dumps(fields) and fields["worker"] == fields["label"] == fields["message_id"] == text
    assert fields["event"] == "started" and fields["task_id"] == 5 and fields["attempt"] == 2
    line = events.attempt("failed", text, None, 0.0, 1.25, 2.5, False, 3, None, text, error=text, outcome="parked")
    assert line == json.dumps({"event": "failed", "worker": text, "task_id": None, "seconds": 0.0, "started": 1.25,
                               "finished": 2.5, "acked": False, "attempt": 3, "message_id": None, "label": text,
                               "error": text, "outcome": "parked"})
    line = events.published(2**63 - 1, 0.01, text)
    assert json.loads(line) == {"event": "published", "task_id": 2**63 - 1, "seconds": 0.01, "message_id": text,
                                "published": json.loads(line)["published"]}
    assert events.checked(line) is not None


def test_log_line_is_written_in_one_piece(monkeypatch):
    """Workers sharing a terminal or a pipe: one write per line, so that no line is cut by another's."""
    writes: list[str] = []
    monkeypatch.setattr(sys, "stdout", type("Recorder", (), {"write": lambda _, text: writes.append(text),
                                                             "flush": lambda _: None})())
    log("worker-1", "done task 3 in 0.50 s")
    assert writes == ["[worker-1] done task 3 in 0.50 s\n"]


@pytest.mark.parametrize("text, seconds", [("Hello World!", 0.0), ("First message.", 1.0), ("a...b..", 5.0)])
def test_tutorial_text_is_one_second_per_dot(text, seconds):
    assert decode(text.encode(), None).seconds == seconds


def test_integer_seconds_and_extra_fields_are_accepted_as_the_tasks_data():
    task = decode(b'{"task_id": 9, "seconds": 2, "owner": "x", "sizes": [1, 2]}', "application/json")
    assert task == Task(9, 2.0, "task 9", data={"owner": "x", "sizes": [1, 2]})
    body, properties = encode(new_task(9, 2.0, owner="x", sizes=[1, 2]), "run.9")
    assert decode(body, properties.content_type) == task, "a task's data goes out and comes back as it was"


@pytest.mark.parametrize("body", [b'{"task_id": true, "seconds": 1}', b'{"task_id": 1, "seconds": false}',
                                  b'{"task_id": 1, "seconds": Infinity}', b"null", b'"text"'])
def test_invalid_json_tasks_are_rejected(body):
    with pytest.raises(BadTask):
        decode(body, "application/json")


def test_password_is_masked():
    assert mask_url("amqp://user:s3cret@host:5672/%2F") == "amqp://user:***@host:5672/%2F"
    assert mask_url("amqp://host/") == "amqp://host/"
    # An @ in a password is read as the URL means it (the last @ ends the password), and masked whole.
    assert cli.url_list("amqp://u:s3c@ret@host/") == ("amqp://u:s3c@ret@host/",)
    assert mask_url("amqp://u:s3c@ret@host/") == "amqp://u:***@host/"


# Passwords with a character that a URL needs percent-encoded: each hides part of the password elsewhere.
UNENCODED_PASSWORDS = [("amqp://u:s3cr3t/xyz@host/", ["s3cr3t", "xyz"]),
                       ("amqp://u:pa55#w0rd@host/", ["pa55", "w0rd"]),
                       ("amqp://u:ss:w/rd%@host:5672/", ["ss:w", "rd%"])]


@pytest.mark.parametrize("url, secrets", UNENCODED_PASSWORDS)
def test_no_part_of_a_password_is_ever_shown(url, secrets):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        cli.url_list(url)
    assert "must be percent-encoded" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in secrets), caught.value
    assert not any(secret in mask_url(url) for secret in secrets)
    for how in (["--url", url], []):
        result = subprocess.run([PYTHON, str(ROOT / "consumer.py"), *how], capture_output=True, text=True,
                                timeout=30, env={"PATH": "/usr/bin:/bin", "AMQP_URL": url}, stdin=subprocess.DEVNULL)
        assert result.returncode == 2 and "percent-encoded" in result.stderr
        assert not any(secret in result.stderr + result.stdout for secret in secrets), result.stderr


@pytest.mark.parametrize("query", ["ssl_options=garbage", "ssl_options=%7B%27x%27%3A1%7D", "heartbeat=soon",
                                   "channel_max=-5"])
def test_bad_url_options_are_usage_errors(query):
    result = run_script("publisher.py", "--url", f"amqps://u:topsecret@host:5671/%2F?{query}")
    assert result.returncode == 2 and "bad URL" in result.stderr
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr


POISON_BODIES = [
    (b"[" * 100000, "application/json", "nested too deeply"),
    (b'{"task_id": 1, "seconds": 1' + b"0" * 400 + b"}", "application/json", "absurd"),
    (b'{"task_id": 1' + b"0" * 400 + b', "seconds": 1}', "application/json", "out of range"),
    (b'{"task_id": 1, "seconds": 1' + b"0" * 5000 + b"}", "application/json", "malformed JSON"),
    (b'{"task_id": 1, "seconds": -' + b"9" * 400 + b"}", "application/json", "negative"),
    (b'{"task_id": 1, "seconds": 1, "fail_attempts": "x"}', "application/json", "fail_attempts"),
]


@pytest.mark.parametrize("body, content_type, reason", POISON_BODIES)
def test_poison_bodies_are_bad_tasks_with_a_reason(body, content_type, reason):
    with pytest.raises(BadTask, match=reason) as caught:
        decode(body, content_type)
    assert len(str(caught.value)) < 200, "a reason stays short, however big the message"


@pytest.mark.parametrize("text, seconds", [("[urgent] Hello.", 1.0), ("{not json} ..", 2.0), ("[" * 100000, 0.0)])
def test_text_that_looks_like_json_is_the_tutorials_text(text, seconds):
    task = decode(text.encode(), None)
    assert task.task_id is None and task.seconds == seconds


def test_several_urls_are_accepted_and_bad_ones_named_without_password():
    assert cli.url_list("amqp://a:1@h1:5672/%2F, amqp://a:1@h2:5673/%2F") == (
        "amqp://a:1@h1:5672/%2F", "amqp://a:1@h2:5673/%2F")
    with pytest.raises(argparse.ArgumentTypeError, match=r"amqp://u:\*\*\*@h:99999") as caught:
        cli.url_list("amqp://u:hunter2@h:99999/")
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
    ("consumer.py", ["--max-deliveries", "21"], "argument --max-deliveries: must be <= 20"),
    ("consumer.py", ["--retries", "-1"], "argument --retries: must be >= 0"),
    ("consumer.py", ["--events", "/no/such/folder/events.jsonl"], "argument --events: cannot write to"),
    ("publisher.py", ["--events", "/no/such/folder/events.jsonl"], "argument --events: cannot write to"),
    ("publisher.py", ["--events", "/tmp"], "argument --events: '/tmp' is a folder"),
])
def test_bad_flags_are_usage_errors_with_exit_2(script, args, complaint):
    result = run_script(script, *args)
    assert result.returncode == 2
    assert complaint in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr


@pytest.mark.parametrize("script, variables", [
    ("publisher.py", ["TASK_COUNT", "TASK_MIN_SECONDS", "TASK_MAX_SECONDS", "TASK_SEED", "TASK_DURATIONS",
                      "TASK_FLAKY", "TASK_EVENTS", "BLOCKED_TIMEOUT"]),
    ("consumer.py", ["WORKER_NAME", "WORKER_PREFETCH", "WORKER_IDLE_TIMEOUT", "WORKER_MAX_DELIVERIES",
                     "WORKER_RETRIES", "WORKER_RETRY_DELAY", "WORKER_RETRY_MAX_DELAY", "BLOCKED_TIMEOUT",
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


def test_retry_delays_double_up_to_the_cap():
    policy = RetryPolicy(retries=4, delay=1.0, max_delay=5.0)
    assert [policy.delay_before(k) for k in (1, 2, 3, 4, 200)] == [1, 2, 4, 5, 5]
    assert policy.delays() == [1, 2, 4, 5]
    assert retry_queue("q", 0.25) == "q.retry.0.25s"


@pytest.mark.parametrize("headers, queue_type, earlier", [
    ({}, "quorum", 0),
    ({"x-delivery-count": 2}, "quorum", 2),
    ({"x-delivery-count": 1, "x-acquired-count": 3}, "quorum", 3),  # RabbitMQ 4: a timeout counts only here
    ({"x-delivery-count": "lots", "x-acquired-count": True}, "quorum", 0),  # a sender's, not the broker's
    ({"x-delivery-count": 7}, "classic", None),  # a classic queue counts nothing: any such header is a sender's
])
def test_earlier_deliveries_read_both_counts_and_trust_no_odd_value(headers, queue_type, earlier):
    assert earlier_deliveries(headers, queue_type) == earlier


def test_a_connection_closed_before_the_handshake_is_described_in_words_not_as_another_protocol():
    """pika calls a connection closed before the broker spoke (docker-proxy accepting for a container that is
    still booting) an IncompatibleProtocolError; the log line says what happened instead."""
    closed = pika.exceptions.IncompatibleProtocolError("StreamLostError: ('Transport indicated EOF',)")
    text = describe(pika.exceptions.AMQPConnectionError(closed))
    assert "IncompatibleProtocolError" not in text
    assert text.startswith("the connection was closed before the AMQP handshake: a broker still starting up")
    other = pika.exceptions.IncompatibleProtocolError("something else")
    assert describe(other) == "IncompatibleProtocolError: something else", "other causes keep their name"
