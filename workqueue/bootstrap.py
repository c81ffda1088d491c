"""What the scripts do when this Python lacks pika, their one package: run again with the Python of the
project's .venv (run_demo.sh makes it, with pika), or say in one line what to run. Standard library only."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

# The .venv that run_demo.sh and run_tests.sh make beside the scripts, and its Python.
VENV = Path(__file__).resolve().parent.parent / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
# Set in the environment of the run again, so that a .venv without pika cannot make a loop.
AGAIN = "WORKQUEUE_RUN_IN_VENV"
MAKE_VENV = ("./run_demo.sh --start-broker makes .venv with it (and starts a broker), or: "
             "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt")


def run_in_venv(program: str, missing: ModuleNotFoundError) -> NoReturn:
    """Replace this process with the same command under .venv's Python, when that can help; else exit with
    one line that says what is missing and what to run (exit status 1)."""
    if (missing.name or "").partition(".")[0] != "pika":
        sys.exit(f"{program}: error: {missing}")
    # sys.prefix, not the executable: a venv's python is a symlink to the very python3 that lacks pika.
    if VENV_PYTHON.exists() and not os.environ.get(AGAIN) and Path(sys.prefix).resolve() != VENV.resolve():
        os.environ[AGAIN] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.exit(f"{program}: error: pika is missing from {sys.executable}: {MAKE_VENV}")
