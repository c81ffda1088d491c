"""Argument types shared by the command lines: standard library only, so that report.py needs no pika."""

from __future__ import annotations

import argparse


def bounded_int(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` to `high` (no upper bound if None); else a usage error."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}: {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}: {text!r}")
        return value
    return convert
