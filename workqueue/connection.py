"""Connecting to RabbitMQ: URL lists, one backoff for every retry, and secrets kept out of every line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from workqueue.errors import Refused, Unreachable, UsageError
from workqueue.output import log

# Every way an open connection or channel can go away under us; a worker reconnects on these.
CONNECTION_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)
# Every way an attempt to connect can fail that another attempt may cure: refused, reset, a name that
# does not resolve (yet: a restarting container), a TLS handshake with a plain port. pika's asynchronous
# adapter wraps these in its connector errors, its blocking adapter lets some of them through as OSError.
CONNECT_ERRORS = (pika.exceptions.AMQPConnectionError, AMQPConnectorException, OSError)

# The longest one attempt to connect may take, in seconds: TCP, TLS and the AMQP handshake to a node that answers
# take milliseconds; a node that accepts and says nothing is given up for the next.
ATTEMPT_SECONDS = 5.0
# The least time, in seconds, that setting up (declaring queues, subscribing, confirms) may take.
MIN_SETUP_SECONDS = 5.0
# What may leave a set-up request unanswered for ever; an error on an unanswered set-up asks.
UNANSWERED = "(is the node frozen, or the queue a quorum queue left without a leader by a crash?); giving up"

# Either kind of pika connection: blocking (the worker) or asynchronous (the publisher).
Connection = TypeVar("Connection")

# pika logs its own view of every dropped connection; the scripts say it once, in their own words.
logging.getLogger("pika").setLevel(logging.CRITICAL)


class Backoff:
    """The pause before the next attempt, in seconds: `first`, doubled each time, at most `longest`.

    One policy for every retry: connecting, reconnecting after a connection that lasted no time, and
    publishing again after a connection that confirmed nothing. reset() after a success.
    """

    def __init__(self, first: float = 0.5, longest: float = 5.0) -> None:
        self.first, self.longest = first, longest
        self.pause = first

    def next(self) -> float:
        pause, self.pause = self.pause, min(self.pause * 2, self.longest)
        return pause

    def reset(self) -> None:
        self.pause = self.first


def setup_seconds(connect_timeout: float) -> float:
    """How long setting up may wait for the broker's answers: the connect timeout, at least MIN_SETUP_SECONDS."""
    return max(connect_timeout, MIN_SETUP_SECONDS)


def check_urls(text: str) -> tuple[str, ...]:
    """One or more comma-separated amqp:// or amqps:// URLs, checked; UsageError names what is wrong.

    A password's / # ? : must be percent-encoded: urlsplit ends the host part at the first / # or ?, so
    such a character would leave part of the password in the host, the path or the fragment.
    """
    urls = tuple(part.strip() for part in text.split(",") if part.strip())
    if not urls:
        raise UsageError("no URL given")
    for url in urls:
        if "@" in url.partition("://")[2] and "@" not in urlsplit(url).netloc:
            raise UsageError(f"the user name or password in {mask_url(url)!r} has a character that must be "
                             "percent-encoded (/ # ? @ : as %2F %23 %3F %40 %3A)")
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise UsageError(f"not an amqp:// or amqps:// URL with a host: {mask_url(url)!r}")
        if "/" in parts.path[1:]:
            # pika takes the vhost from the path up to the next "/", and a vhost "/lead" needs its "/" encoded.
            fixed = mask_url(url).replace(parts.path, "/" + parts.path[1:].replace("/", "%2F"), 1)
            raise UsageError(f"the vhost in {mask_url(url)!r} has a '/': write it as %2F ({fixed}; the vhost '/' "
                             "is %2F)")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
            pika.URLParameters(url)
        except Exception as error:  # pika raises ValueError, TypeError or KeyError on bad query options
            raise UsageError(f"bad URL {mask_url(url)!r}: {type(error).__name__}: "
                             f"{mask_text(str(error), url)}") from None
    return urls


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, fit for logs and errors, however badly it is written."""
    scheme, separator, rest = url.partition("://")
    user_info, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in user_info:
        return url
    return f"{scheme}://{user_info.partition(':')[0]}:***@{host}"


def mask_text(text: str, url: str) -> str:
    """Text (an error from a library) with the URL's password, or any part of it, taken out."""
    password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    for part in {password, *password.replace("#", "/").replace("?", "/").split("/")}:
        if len(part) >= 3:  # shorter pieces are no secret, and would be found in any word
            text = text.replace(part, "***")
    return text


def describe(error: BaseException | None) -> str:
    """A short, password-free description of a pika error, naming its root cause."""
    if error is None:
        return "no reason given"
    # pika wraps the socket's error in connector and workflow errors.
    while True:
        inner = (getattr(error, "exception", None) or (getattr(error, "exceptions", None) or [None])[-1]
                 or (error.args[0] if error.args else None))
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = str(error).strip()
    if isinstance(error, pika.exceptions.IncompatibleProtocolError) and "StreamLostError" in text:
        # pika's name for a connection closed before the broker said a word: not a protocol of another kind.
        return ("the connection was closed before the AMQP handshake: a broker still starting up (a container's "
                "docker-proxy accepts connections before the broker in it does)")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def attempt_parameters(url: str, who: str, seconds: float) -> pika.URLParameters:
    """pika's parameters for one attempt at `url`, which must end within `seconds`: one attempt, whatever the
    URL's connection_attempts and retry_delay say (connect() does the retrying), and no longer than that for
    the TCP connection and the AMQP handshake (pika's own stack_timeout is 15 s)."""
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": who}
    parameters.connection_attempts = 1
    parameters.retry_delay = 0
    parameters.socket_timeout = parameters.stack_timeout = max(seconds, 0.1)
    return parameters


def connect(urls: tuple[str, ...], timeout: float, who: str,
            opener: Callable[[pika.ConnectionParameters], Connection] = pika.BlockingConnection,
            stop_requested: Callable[[], bool] = lambda: False) -> Connection | None:
    """Connect to the first broker of `urls` that answers, retrying for up to `timeout` seconds.

    Each attempt may take ATTEMPT_SECONDS at most (a port that accepts and never speaks AMQP), so that a URL
    list moves on to the next node; none goes past `timeout`. `opener` makes the connection:
    pika.BlockingConnection, or open_async for pika's asynchronous adapter. Returns None only if
    stop_requested() turns true while retrying. Raises Refused for a refused login or vhost (no number of
    attempts fixes them), Unreachable once `timeout` has passed.
    """
    start = time.monotonic()
    deadline = start + timeout
    backoff = Backoff()
    attempt = 0
    while True:
        attempt += 1
        for number, url in enumerate(urls):
            seconds = min(deadline - time.monotonic(), ATTEMPT_SECONDS)
            try:
                return opener(attempt_parameters(url, who, seconds))
            except pika.exceptions.ProbableAuthenticationError:
                raise Refused(f"the broker at {mask_url(url)} refused the user name or password "
                              "(check --url / AMQP_URL)") from None
            except pika.exceptions.ProbableAccessDeniedError:
                raise Refused(f"the broker at {mask_url(url)} denied access to the virtual host "
                              "(check the vhost in --url / AMQP_URL and the user's permissions)") from None
            except CONNECT_ERRORS as error:
                reason = describe(error)
            if number + 1 < len(urls) and not stop_requested():
                log(who, f"broker unreachable at {mask_url(url)} ({reason}); trying the next: "
                         f"{mask_url(urls[number + 1])}")
        where = ", ".join(mask_url(url) for url in urls)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = max(timeout, round(time.monotonic() - start))
            raise Unreachable(f"cannot reach RabbitMQ at {where} after {waited:g} s ({reason}); "
                              "start a broker (./run_demo.sh starts one) or fix --url / AMQP_URL")
        if stop_requested():
            return None
        pause = min(backoff.next(), remaining)
        log(who, f"broker unreachable at {where} ({reason}); attempt {attempt}, retrying in {pause:.1f} s")
        time.sleep(pause)


def open_async(parameters: pika.ConnectionParameters, blocked_timeout: float | None = None) -> pika.SelectConnection:
    """Open a connection on pika's asynchronous adapter, waiting until it is open; raise if it fails.

    With blocked_timeout (seconds), pika closes the connection (ConnectionBlockedTimeout) once the broker
    has blocked it that long.
    """
    if blocked_timeout:
        parameters.blocked_connection_timeout = blocked_timeout
    failure: list[BaseException] = []
    connection = pika.SelectConnection(
        parameters,
        on_open_callback=lambda opened: opened.ioloop.stop(),
        on_open_error_callback=lambda failed, error: (failure.append(error), failed.ioloop.stop()))
    connection.ioloop.start()
    if failure:
        raise failure[0]
    return connection
