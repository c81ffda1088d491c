#!/usr/bin/env python3
"""The baseline: tutorial two's worker (prefetch 1, the work inline in the callback, ack after).

It keeps the same books as consumer.py (two log lines and two events lines per task) and exits after
--idle-timeout seconds without a task, so both are measured doing the same things.
Run from the project's folder: python -m bench.tutorial_worker ...
"""

import argparse
import json
import sys
import time

import pika

from workqueue import events


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--prefetch", type=int, default=1, help="0 = no limit (round robin)")
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    if args.prefetch:
        channel.basic_qos(prefetch_count=args.prefetch)
    last_activity = time.monotonic()
    books = events.Writer(args.events)

    def callback(ch, method, properties, body):
        nonlocal last_activity
        task = json.loads(body)
        started = time.time()
        print(f" [x] Received {body.decode()}", flush=True)
        books.write(events.started(args.name, task["task_id"], task["seconds"], 1, properties.message_id, ""))
        time.sleep(task["seconds"])
        finished = time.time()
        print(" [x] Done", flush=True)
        ch.basic_ack(delivery_tag=method.delivery_tag)
        books.write(events.attempt("done", args.name, task["task_id"], task["seconds"], started, finished, True, 1,
                                   properties.message_id, f"task {task['task_id']}"))
        last_activity = time.monotonic()

    def stop_when_idle():
        if time.monotonic() - last_activity >= args.idle_timeout:
            channel.stop_consuming()
        else:
            connection.call_later(0.2, stop_when_idle)

    channel.basic_consume(queue=args.queue, on_message_callback=callback)
    connection.call_later(0.2, stop_when_idle)
    channel.start_consuming()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
