#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The work-queue demo in one command: a broker, workers, a publisher, then a report of who did what.
# This sets up Python (.venv with pika), then hands over to workqueue/demo.py. ./run_demo.sh --help says more.
set -euo pipefail
cd "$(dirname "$0")"

install_flags=""
[ -n "${WORKQUEUE_NO_INSTALL:-}" ] && install_flags=--no-install
for arg in "$@"; do
  [ "$arg" = --no-install ] && install_flags=--no-install
done

# A signal while .venv is set up ends the set-up (bash would otherwise wait for it and go on); the Python
# that follows installs handlers of its own.
trap 'exit 130' INT TERM HUP
# shellcheck source=workqueue/venv.sh
. ./workqueue/venv.sh
# shellcheck disable=SC2086 # no flag, or one
make_venv requirements.txt run_demo.sh $install_flags
exec "$py" -m workqueue.demo "$@"
