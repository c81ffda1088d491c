"""What the scripts print: one write per line, and any text a terminal can show."""

from __future__ import annotations

import io
import sys


def log(who: str, text: str) -> None:
    """Write "[who] text" as one line, in one write, and flush it.

    One write, also under PYTHONUNBUFFERED (where print writes the text and its newline apart): workers
    sharing a terminal or a pipe then never cut into each other's lines.
    """
    sys.stdout.write(f"[{who}] {text}\n")
    sys.stdout.flush()


def show_any_text() -> None:
    """Have stdout escape what its encoding cannot show, instead of raising.

    Log lines carry a sender's text (a task's label, a bad value, a queue or worker name): on an ascii or
    latin-1 terminal, one character outside it would raise UnicodeEncodeError and end the program.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
