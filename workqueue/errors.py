"""The errors the engines raise: each is something the user must fix, told in one line.

The engines never print an error or exit the process; the command line (cli.py) turns these into one
line on stderr and an exit code. Every message here is already free of passwords.
"""

from __future__ import annotations


class WorkQueueError(Exception):
    """Something the user must fix; the command line prints str(error) as one line and exits `exit_code`."""

    exit_code = 1


class UsageError(WorkQueueError):
    """A setting that cannot work, found before anything is sent or taken (exit 2, as argparse's errors)."""

    exit_code = 2


class Unreachable(WorkQueueError):
    """No broker of the URL list answered within the connect timeout."""


class Refused(WorkQueueError):
    """The broker said no for good: a login, a permission, a queue held elsewhere. No reconnect can fix it."""


class QueueMismatch(Refused):
    """A queue exists with other arguments than the ones declared (406 PRECONDITION_FAILED)."""


class Unanswered(WorkQueueError):
    """The broker left a request unanswered past its deadline (a frozen node, a queue with no leader)."""
