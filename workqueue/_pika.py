"""Where this project steps outside pika's documented contract: the only module that does, each step fenced.

Each step below says what it does that pika's public API cannot, why that is safe, and which test pins it.
The private ones run only on a pika release they were tested with (TESTED_PIKA); on any other, each falls
back to pika's public API, and `fallback_note()` is the one line that says so (the scripts print it at start).

- FramePublisher: a window of tasks written to the socket in one go (Connection._adapter_emit_data).
  Fallback: basic_publish per task, about half the speed. Pinned by test_publisher_frames_are_pikas_own.
- consumer_cancelled: whether the broker cancelled a consumer, as soon as pika has read the frame
  (BlockingChannel._consumer_infos). Fallback: "cannot tell". Pinned by
  test_task_outlasting_the_consumer_timeout_is_taken_back_not_claimed.
- abort: ends a connection from another thread (its socket, _impl._transport._sock), so that a deadline
  can end a blocking call that the broker never answers. Fallback: the call waits for pika's heartbeat.
  Pinned by test_set_up_that_the_broker_never_answers_gives_up_with_one_line.
- KeptProperties: pika's class for a message's properties (pika.spec.props) made one that keeps the bytes
  and reads any bytes: a header pika cannot turn into Python no longer drops the connection, and a copy keeps
  every header as its sender wrote it. Fallback: pika's class, and such a message is left to the queue's
  delivery limit. Pinned by test_parked_and_retried_copies_keep_every_header_value_and_type.
- negotiated: the frame and channel limits agreed with the broker (BlockingConnection._impl.params).
  Fallback: the limits asked for. Pinned by test_a_copy_too_big_for_a_frame_is_sent_without_the_senders_largest_header.
- cancel_keeping_deliveries: a consumer cancelled without handing back what crosses the cancel
  (BlockingChannel._consumer_infos, Channel._on_deliver). Fallback: basic_cancel, whose hand-backs count as
  deliveries. Pinned by test_a_delivery_that_crosses_a_workers_cancel_is_run_not_handed_back.
- ConnectionKeeper: public methods only, but a BlockingConnection served by two threads in turn, which
  pika's thread-safety contract does not cover; see its docstring for why it holds.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec

from workqueue import headers

# The pika releases whose private names this module was tested with (requirements.txt pins one).
TESTED_PIKA = ("1.4.4",)
PRIVATE_OK = pika.__version__ in TESTED_PIKA
# While a task runs, how often (seconds) a helper thread serves the worker's connection: heartbeats.
KEEPALIVE_INTERVAL = 0.25


def fallback_note() -> str | None:
    """The one line to print when this pika is not one the private steps were tested with, else None."""
    if PRIVATE_OK:
        return None
    return (f"pika {pika.__version__} is not a release this was tested with ({', '.join(TESTED_PIKA)}): using "
            "pika's public API only: publishing is slower, a consumer timeout is noticed one task late, a "
            "header pika cannot read drops the connection, copies may change a header's type, and a worker "
            "that leaves may hand a task back")


# ---------------------------------------------------------------- publishing a window of tasks at once


class FramePublisher:
    """Publishes messages to one queue on an asynchronous channel, a window of them in one write.

    basic_publish marshals the same Basic.Publish frame for every message, then hands each of a message's
    frames to its transport, which sends each in a syscall of its own: 90,000 sends for 30,000 tasks, and
    more time in pika than in the rest of the publisher. Here the Basic.Publish frame is made once, the
    content header and body frames exactly as pika's Connection._send_message makes them (the body cut
    into frames of at most frame_max - 8 bytes, none for an empty body), and a window leaves in one
    write through Connection._adapter_emit_data, the method every pika frame goes out through.
    """

    def __init__(self, channel: pika.channel.Channel, routing_key: str) -> None:
        self.channel = channel
        self.connection = channel.connection
        self.routing_key = routing_key
        # mandatory: a message that no queue takes comes back (basic.return) instead of vanishing.
        publish = pika.spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
        self.method = pika.frame.Method(channel.channel_number, publish).marshal()
        # The frame size the broker and pika agreed on (connection.tune), less a frame's own 8 bytes.
        self.max_body = self.connection.params.frame_max - pika.spec.FRAME_HEADER_SIZE - pika.spec.FRAME_END_SIZE
        self.window: list[bytes] = []
        self.fast = PRIVATE_OK

    def add(self, body: bytes, properties: pika.BasicProperties) -> None:
        """Queue a message for the next send()."""
        if not self.fast:
            self.channel.basic_publish("", self.routing_key, body, properties, mandatory=True)
            return
        number = self.channel.channel_number
        self.window += (self.method, pika.frame.Header(number, len(body), properties).marshal())
        for start in range(0, len(body), self.max_body):
            self.window.append(pika.frame.Body(number, body[start:start + self.max_body]).marshal())

    def send(self) -> None:
        """Write every message added since the last send, in one go."""
        if self.window:
            self.connection._adapter_emit_data(b"".join(self.window))
            self.window = []


# ---------------------------------------------------------------- properties as the sender wrote them


class KeptProperties(pika.BasicProperties):
    """Basic properties that keep the bytes they were decoded from (`raw`), and that decode whatever bytes.

    pika decodes a message's properties while it reads frames, before any callback of ours: properties it
    cannot turn into Python (a timestamp header in milliseconds, as Java and JavaScript senders write by
    mistake) end the connection, on every delivery of that message, for ever. Decoded here, pika's reading
    is tried first; what it cannot read is read by headers.read_table, which gives Unreadable for a value
    Python cannot hold. `raw` lets a copy keep every byte the sender wrote (headers.copy_properties).
    Installed as pika's class for basic properties (pika.spec.props), so that the frame reader makes these:
    the only change made to pika, by this module's import.
    """

    raw = b""

    def decode(self, encoded: bytes, offset: int = 0) -> KeptProperties:
        self.raw = bytes(encoded[offset:])
        try:
            return super().decode(encoded, offset)
        except Exception:  # whatever pika raises on bytes it cannot read: read here what can be
            self.__init__()  # every property None
        try:
            fields = headers.split_properties(self.raw)
        except ValueError:
            return self
        for name, _bit, kind in headers.PROPERTIES:
            value = fields.get(name)
            if value is None:
                continue
            if kind == "short":
                setattr(self, name, headers.short_text(value))
            elif kind == "octet":
                setattr(self, name, value[0])
            elif kind == "long":
                setattr(self, name, int.from_bytes(value, "big"))
            else:
                with contextlib.suppress(Exception):  # a decoder that pika calls must never raise
                    self.headers = headers.read_table(value)
        return self


class RawProperties(pika.BasicProperties):
    """Basic properties given as their encoded bytes, published as they are (headers.copy_properties makes them).

    basic_publish marshals a content header through its properties' encode(); this one returns the bytes.
    """

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> list[bytes]:
        return [self.raw]


def raw_properties(properties: pika.BasicProperties) -> bytes:
    """The encoded bytes of a delivery's properties: as they came, where KeptProperties kept them; else pika's
    encoding of what it decoded (which may have changed a header's type or value), or, if pika cannot write
    back what it read, the properties with only a header that says so."""
    raw = getattr(properties, "raw", None)
    if raw:
        return raw
    try:
        return b"".join(properties.encode())
    except Exception as error:  # pika read the sender's headers but cannot write them again
        stripped = copy.copy(properties)
        stripped.headers = {"x-unsendable-headers": f"{type(error).__name__}: {error}"[:200]}
        return b"".join(stripped.encode())


if PRIVATE_OK:
    pika.spec.props[pika.BasicProperties.INDEX] = KeptProperties


# ---------------------------------------------------------------- limits agreed with the broker


def negotiated(connection, parameters: pika.ConnectionParameters) -> tuple[int, int]:
    """(frame_max, channel_max) as the broker and pika agreed them (connection.tune) for a BlockingConnection;
    pika keeps them on a copy of the parameters, inside its connection. Without it, what we asked for."""
    agreed = getattr(getattr(connection, "_impl", None), "params", None) if PRIVATE_OK else None
    source = agreed if isinstance(agreed, pika.ConnectionParameters) else parameters
    return source.frame_max, source.channel_max


# ---------------------------------------------------------------- leaving without handing a task back


def cancel_keeping_deliveries(channel, consumer_tag: str) -> list[tuple]:
    """Cancel a BlockingChannel consumer; return the deliveries pika holds for it, and those that cross the
    cancel on the wire, as (method, properties, body) each, for the caller to run and ack.

    pika's basic_cancel rejects them (requeue), and a quorum queue counts every reject as a delivery: a
    worker leaving in a rolling deploy would bring the tasks it was handed closer to being parked. With
    prefetch 1 and a task in hand, nothing can cross; this is for a worker that leaves while idle or holds
    several (--prefetch). pika passes a delivery for a consumer being cancelled to its channel's
    _on_deliver, which rejects it: for the time of the cancel that method is ours, and keeps it instead.
    Fallback: pika's basic_cancel, and what it rejects counts.
    """
    info = channel._consumer_infos.get(consumer_tag) if PRIVATE_OK else None
    impl = getattr(channel, "_impl", None)
    if info is None or info.cancelled_by_broker or impl is None or not hasattr(impl, "_on_deliver"):
        channel.basic_cancel(consumer_tag)  # cancelled by the broker already: what it held, it took back
        return []
    crossed: list[tuple] = []
    pikas_own = impl._on_deliver

    def on_deliver(method_frame, header_frame, body) -> None:
        if method_frame.method.consumer_tag == consumer_tag:
            crossed.append((method_frame.method, header_frame.properties, body))
        else:
            pikas_own(method_frame, header_frame, body)

    info.auto_ack = True  # BlockingChannel then returns the deliveries it holds, instead of rejecting them
    impl._on_deliver = on_deliver
    try:
        held = channel.basic_cancel(consumer_tag)
    finally:
        del impl._on_deliver  # pika's own again
    return list(held) + crossed


# ---------------------------------------------------------------- a consumer the broker cancelled


def consumer_cancelled(channel, consumer_tag: str) -> bool | None:
    """Whether the broker has cancelled this BlockingChannel consumer; None if this pika cannot tell.

    RabbitMQ 4 cancels the consumer of a task that outlasts its consumer_timeout and leaves the channel
    open; an ack sent then settles nothing. pika marks such a consumer as soon as it reads the frame, but
    calls a cancel callback only after the delivery's callback has returned: too late to hold back the
    ack. So this reads pika's mark.
    """
    infos = getattr(channel, "_consumer_infos", None) if PRIVATE_OK else None
    if not isinstance(infos, dict):
        return None
    info = infos.get(consumer_tag)
    if info is None:
        return True  # gone from pika's books: cancelled, and already dispatched
    cancelled = getattr(info, "cancelled_by_broker", None)
    return cancelled if isinstance(cancelled, bool) else None


# ---------------------------------------------------------------- ending a wait the broker never answers


def abort(connection: pika.BlockingConnection) -> bool:
    """End the connection's socket from any thread; whether it could. The blocking call waiting on it then
    raises a connection error on its own thread: shutdown(2) wakes the poll that pika waits in, and pika
    reads the end of the stream. A socket is safe to shut down from another thread; pika's state is not
    touched here."""
    sock = getattr(getattr(getattr(connection, "_impl", None), "_transport", None), "_sock", None) \
        if PRIVATE_OK else None
    if not isinstance(sock, socket.socket):
        return False
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
    return True


class Deadline:
    """`with Deadline(connection, seconds):` ends the block's waits on the broker after `seconds`.

    pika's BlockingConnection waits for each reply without limit, and a broker can leave a request
    unanswered for ever (a frozen node, a quorum queue left without a leader by a crash). Past the
    deadline a watchdog thread aborts the connection, the waiting call raises, and `expired` is true:
    the caller then raises its own error, naming what the broker did not answer.
    """

    def __init__(self, connection: pika.BlockingConnection, seconds: float | None) -> None:
        """`seconds` None: no deadline at all."""
        self.connection = connection
        self.seconds = seconds
        self.expired = False
        self.watchdog = None if seconds is None else threading.Timer(seconds, self.expire)

    def expire(self) -> None:
        self.expired = True
        abort(self.connection)

    def __enter__(self) -> Deadline:
        if self.watchdog:
            self.watchdog.daemon = True
            self.watchdog.start()
        return self

    def __exit__(self, *_exc) -> None:
        if self.watchdog:
            self.watchdog.cancel()


# ---------------------------------------------------------------- heartbeats while a task runs


class ConnectionKeeper:
    """Keeps a worker's connection alive (heartbeats) while its thread is busy with a task.

    Work done on the thread that uses a BlockingConnection blocks pika's I/O: heartbeats stop and the broker
    drops the connection in the middle of a long task (pika issues 1104 and 636). pika's documented way
    out runs the work on a thread of its own and hands each ack back through add_callback_threadsafe; it
    costs two thread switches per task. Here the task runs on the connection's own thread, and while it
    runs a helper thread serves the connection (process_data_events(0)) every KEEPALIVE_INTERVAL seconds.

    pika's contract is one thread per BlockingConnection. The two threads never use it at once: they take
    turns through a lock, and the worker's thread gives up its turn only for the work itself, between two
    pika calls. While the worker's thread is inside a delivery callback, pika's dispatch is held (its
    nested-dispatch guard), so the helper's process_data_events only moves bytes and heartbeats: it never
    runs one of our callbacks. A task shorter than the interval costs no thread switch at all.
    test_long_task_keeps_its_connection_under_a_1s_heartbeat pins it.
    """

    def __init__(self, connection: pika.BlockingConnection, after_serving=None) -> None:
        """`after_serving()`, if given, runs on the helper's thread after each time it served the connection, in its
        turn: it may use the connection then."""
        self.connection = connection
        self.after_serving = after_serving
        self.turn = threading.Lock()
        self.turn.acquire()  # the worker's turn, except while a task runs
        self.busy_since: float | None = None
        self.error: pika.exceptions.AMQPError | None = None
        self.closed = False
        threading.Thread(target=self._serve, name="connection-keeper", daemon=True).start()

    def __enter__(self) -> None:
        """`with keeper:` around the work: the helper serves the connection meanwhile."""
        self.busy_since = time.monotonic()
        self.turn.release()

    def __exit__(self, *exc_info) -> None:
        """Take the connection back; raise on the worker's thread if it was lost meanwhile."""
        self.turn.acquire()
        self.busy_since = None
        if self.error and exc_info[0] is None:
            raise self.error

    def close(self) -> None:
        self.closed = True

    def _serve(self) -> None:
        while not self.closed:
            time.sleep(KEEPALIVE_INTERVAL)
            busy_since = self.busy_since
            if busy_since is None or self.error or time.monotonic() - busy_since < KEEPALIVE_INTERVAL:
                continue
            if not self.turn.acquire(blocking=False):
                continue  # the task has just finished and its thread has the connection back
            try:
                if self.connection.is_open:
                    self.connection.process_data_events(time_limit=0)
                    if self.after_serving:
                        self.after_serving()
            except pika.exceptions.AMQPError as error:
                self.error = error  # the worker's thread raises it once the task is done
            finally:
                self.turn.release()
