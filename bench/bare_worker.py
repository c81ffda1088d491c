#!/usr/bin/env python3
"""The baseline for a worker's own cost: a bare pika callback worker that does the demo's work (sleep) and acks.

No log lines, no events file, no checks: what is left is pika and the broker. It keeps, in memory, when
each task's ack was sent, and on SIGTERM writes them to --record as JSON ({task id: time}), then exits.
With --threaded it does the work as pika documents for long tasks (its basic_consumer_threaded example): on a
thread of its own, the ack handed back to the connection's thread through add_callback_threadsafe; a
persistent thread rather than one per task, to give that pattern its best figure.
Run from the project's folder: python -m bench.bare_worker ...
"""

import argparse
import functools
import json
import queue
import signal
import sys
import threading
import time

import pika


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--record", required=True, help="where to write {task id: time of its ack} on exit")
    parser.add_argument("--threaded", action="store_true", help="work on a thread of its own, ack handed back")
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    acked: dict[int, float] = {}
    stopping = []

    def on_message(ch, method, _properties, body):
        fields = json.loads(body)
        time.sleep(fields["seconds"])  # consumer.py's do_work
        ch.basic_ack(delivery_tag=method.delivery_tag)
        acked[fields["task_id"]] = time.time()

    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def ack(delivery_tag: int, task_id: int) -> None:  # on the connection's thread
        channel.basic_ack(delivery_tag=delivery_tag)
        acked[task_id] = time.time()

    def work_on_a_thread() -> None:
        while True:
            delivery_tag, fields = jobs.get()
            time.sleep(fields["seconds"])
            connection.add_callback_threadsafe(functools.partial(ack, delivery_tag, fields["task_id"]))

    def hand_over(_ch, method, _properties, body):
        jobs.put((method.delivery_tag, json.loads(body)))

    if args.threaded:
        threading.Thread(target=work_on_a_thread, daemon=True).start()

    def stop_when_asked():
        if stopping:
            channel.stop_consuming()
        else:
            connection.call_later(0.2, stop_when_asked)

    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    channel.basic_consume(queue=args.queue, on_message_callback=hand_over if args.threaded else on_message)
    connection.call_later(0.2, stop_when_asked)
    channel.start_consuming()
    connection.close()
    with open(args.record, "w") as record:
        json.dump(acked, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
