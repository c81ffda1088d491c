#!/usr/bin/env python3
"""The baseline for a worker's own cost: a bare pika callback worker that runs consumer.py's do_work and acks.

No log lines, no events file, no checks: what is left is pika and the broker. It keeps, in memory, when
each task's ack was sent, and on SIGTERM writes them to --record as JSON ({task id: time}), then exits.
Run from the project's folder: python -m bench.bare_worker ...
"""

import argparse
import json
import signal
import sys
import time

import pika

import workqueue as wq
from consumer import do_work


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--record", required=True, help="where to write {task id: time of its ack} on exit")
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    acked: dict[int, float] = {}
    stopping = []

    def on_message(ch, method, _properties, body):
        fields = json.loads(body)
        do_work(wq.Task(fields["task_id"], fields["seconds"], ""))
        ch.basic_ack(delivery_tag=method.delivery_tag)
        acked[fields["task_id"]] = time.time()

    def stop_when_asked():
        if stopping:
            channel.stop_consuming()
        else:
            connection.call_later(0.2, stop_when_asked)

    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    channel.basic_consume(queue=args.queue, on_message_callback=on_message)
    connection.call_later(0.2, stop_when_asked)
    channel.start_consuming()
    connection.close()
    with open(args.record, "w") as record:
        json.dump(acked, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
