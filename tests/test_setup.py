"""What the README's two commands do on a machine that lacks something: install it, or say what to run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT


def fake_package_manager(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH with python3 and a stand-in apt-get that records its calls and installs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}, calls


def installer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workqueue.brokers", "install", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_nothing_is_installed_when_told_not_to(tmp_path):
    env, calls = fake_package_manager(tmp_path)
    for how in (["--no-install"], []):
        result = installer({**env, **({} if how else {"WORKQUEUE_NO_INSTALL": "1"})}, "tmux", "shellcheck", *how)
        assert result.returncode == 1
        assert "tmux, shellcheck missing; not installing it, as told" in result.stderr
        assert "apt-get install -y -qq --no-install-recommends tmux shellcheck" in result.stderr
    assert not calls.exists(), "the package manager was never called"


@pytest.mark.skipif(os.geteuid() != 0, reason="installing without a terminal needs root or password-less sudo")
def test_without_a_terminal_root_installs_and_says_so_in_one_line(tmp_path):
    env, calls = fake_package_manager(tmp_path)
    result = installer(env, "tmux", "rabbitmq", "--who", "run_tests.sh")
    assert result.stdout.strip() == ("run_tests.sh: tmux missing: installing it (no terminal, no password needed): "
                                     "apt-get install -y -qq --no-install-recommends tmux")
    assert calls.read_text().splitlines() == ["update -qq", "install -y -qq --no-install-recommends tmux"]
    # The stand-in installed nothing: said, and exit 1.
    assert result.returncode == 1 and "installed, but tmux still missing" in result.stderr


def test_help_says_what_to_run_when_there_is_no_package_manager(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    result = installer({"PATH": str(bin_dir)}, "tmux")
    assert result.returncode == 1
    assert "no package manager found" in result.stderr and "sudo apt-get install" in result.stderr
    assert "brew install" in result.stderr


def test_a_venv_without_pip_is_made_again(tmp_path):
    (tmp_path / "workqueue").mkdir()
    for name in ("workqueue/venv.sh", "requirements.txt", "workqueue/__init__.py", "workqueue/brokers.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    make = ". ./workqueue/venv.sh && make_venv requirements.txt demo && $py -c 'import pika'"
    result = subprocess.run(["bash", "-c", make], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[demo] .venv is not whole (no pip): making it again" in result.stderr
