#!/usr/bin/env python3
"""Who did what, and how fair it was: a report from the --events file of a run.

    python3 report.py EVENTS_FILE [--workers N] [--width COLUMNS]

Give the workers and the publisher one events file (--events FILE), then read it with this once the
workers have exited. Exits 0 when every task the publisher confirmed was done, 1 otherwise. Needs no pika.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from workqueue.events import load
from workqueue.output import show_any_text
from workqueue.report import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", help="the file given to consumer.py (and publisher.py) as --events")
    parser.add_argument("--workers", type=int, help="workers the run had (default: those in the file)")
    parser.add_argument("--width", type=int, default=shutil.get_terminal_size().columns,
                        help="columns for the timeline (default: the terminal's width)")
    args = parser.parse_args(argv)
    try:
        events = load(args.events)
    except OSError as error:
        print(f"report.py: error: cannot read {args.events}: {error.strerror}", file=sys.stderr)
        return 1
    text, complete = report(events, args.workers, args.width)
    show_any_text()
    print(text)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
