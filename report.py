#!/usr/bin/env python3
"""Who did what, and how fair it was: a report from the --events file of a run.

    python3 report.py EVENTS_FILE [--workers N] [--width COLUMNS] [--html PAGE]

Give the workers and the publisher one events file (--events FILE), then read it with this once the
workers have exited. With --html, also a page of the run, self-contained (an SVG timeline: a bar per attempt,
the broker's down time, the makespan against the ideal), to open in a browser. Exits 0 when every task the
publisher confirmed was done, 1 otherwise. Needs no pika.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from workqueue.events import read
from workqueue.flags import bounded_int
from workqueue.output import show_any_text, write
from workqueue.page import page
from workqueue.report import Report, Run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", help="the file given to consumer.py (and publisher.py) as --events")
    parser.add_argument("--workers", type=bounded_int(1), help="workers the run had (default: those in the file)")
    parser.add_argument("--width", type=bounded_int(1), default=shutil.get_terminal_size().columns,
                        help="columns for the timeline (default: the terminal's width)")
    parser.add_argument("--html", metavar="PAGE", type=Path,
                        help="also write the run as a page (HTML with an SVG timeline) to this file")
    args = parser.parse_args(argv)
    try:
        made = Report(Run().add_all(read(args.events)), args.workers, args.width)
    except OSError as error:
        print(f"report.py: error: cannot read {args.events}: {error.strerror}", file=sys.stderr)
        return 1
    text, complete = made.text()
    problem = None
    if args.html:
        try:
            args.html.write_text(page(made, f"Work queue run: {Path(args.events).name}", text), encoding="utf-8")
            text += f"\ntimeline page: {args.html.resolve().as_uri()}"
        except OSError as error:
            problem = f"report.py: error: cannot write {args.html}: {error.strerror}"
    show_any_text()
    write(text + "\n")  # into a closed pipe (| head) too, quietly: the exit status still tells
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
