#!/usr/bin/env bash
# Set up (once) and run the whole test suite: lint, then the tests against a throwaway RabbitMQ node.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k dead_letter
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the requirements changed since the last install.
stamp="$venv/.requirements-installed"
if [ ! -f "$stamp" ] || ! cat requirements.txt requirements-dev.txt | cmp -s - "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  cat requirements.txt requirements-dev.txt > "$stamp"
fi

"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
