"""What the scripts print: one write per line, any text a terminal can show, and nothing lost to a closed stdout."""

from __future__ import annotations

import io
import os
import sys


def log(who: str, text: str) -> None:
    """Write "[who] text" as one line, in one write, and flush it.

    One write, also under PYTHONUNBUFFERED (where print writes the text and its newline apart): workers
    sharing a terminal or a pipe then never cut into each other's lines.
    """
    write(f"[{who}] {text}\n")


def write(text: str) -> None:
    """Write text to stdout and flush it; if nobody reads stdout any more, carry on without it."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError:  # BrokenPipeError: the reader of a pipe exited (`| head`); EIO: the terminal went
        stdout_gone()


def write_now(text: str) -> None:
    """Write text to stdout at once, from a signal handler too (no buffer of Python's in the way)."""
    try:
        os.write(sys.stdout.fileno(), text.encode(errors="backslashreplace"))
    except OSError:
        stdout_gone()


def stdout_gone() -> None:
    """Nobody reads stdout any more: what the program says from now on goes nowhere, and the work goes on. A
    closed stdout is no reason to stop a worker halfway, or to leave the tasks unaccounted for."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # what is still in Python's buffer goes there too, at exit
    os.close(devnull)


def show_any_text() -> None:
    """Have stdout escape what its encoding cannot show, instead of raising.

    Log lines carry a sender's text (a task's label, a bad value, a queue or worker name): on an ascii or
    latin-1 terminal, one character outside it would raise UnicodeEncodeError and end the program.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


class IdRuns:
    """Task ids as runs ("1-40, 45"), in the order they came, keeping at most `limit` runs: a line that names
    them stays short, and the memory they take stays bounded, however many tasks there are."""

    def __init__(self, limit: int = 12) -> None:
        self.limit = limit
        self.runs: list[list[int]] = []  # [first, last] each
        self.more = 0  # ids past the last run kept
        self.others = 0  # tasks with no id (the tutorial's text tasks)

    def add(self, task_id: int | None) -> None:
        if not isinstance(task_id, int):
            self.others += 1
        elif self.runs and self.runs[-1][1] + 1 == task_id:
            self.runs[-1][1] = task_id
        elif len(self.runs) < self.limit:
            self.runs.append([task_id, task_id])
        else:
            self.more += 1

    def __str__(self) -> str:
        parts = [str(first) if first == last else f"{first}-{last}" for first, last in self.runs]
        if self.more:
            parts.append(f"and {self.more:,} more")
        if self.others:
            parts.append(f"{self.others:,} text task(s)")
        return ", ".join(parts) or "none"
