#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Set up (once) and run the whole test suite: lint, then the tests against throwaway RabbitMQ nodes.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'TXT'
Usage: ./run_tests.sh [--rabbitmq VERSION] [--no-install] [PYTEST ARGUMENTS...]

Makes .venv with the pinned requirements, lints, then runs the tests against throwaway RabbitMQ nodes of
their own (or the broker at AMQP_URL, if set). What the tests need and this machine lacks (RabbitMQ, Python's
venv module, tmux, shellcheck; on Debian headless Chromium, and as root Docker's engine and
debootstrap) is installed with the
system's package manager: on a terminal it asks first; without one it installs only as root or with
password-less sudo, and says so. No system-wide RabbitMQ service or Docker engine is left running or
enabled: the Docker tests start an engine of their own (socket, data and state under
/var/tmp/workqueue-docker) and stop it at their end. Extra arguments go to pytest, e.g. ./run_tests.sh -k retries

Options:
  --rabbitmq VERSION  run the tests on RabbitMQ VERSION (4.3, 4.0 or 3.10), installed in a Debian root of
                      its own under /var/tmp/workqueue-rabbitmq (made once; needs root and debootstrap);
                      default: this machine's RabbitMQ (env RABBITMQ_VERSION)
  --no-install        never install anything; say what is missing (env WORKQUEUE_NO_INSTALL=1)
  -h, --help          this help
TXT
}

who=run_tests.sh
version=${RABBITMQ_VERSION:-}
install_flags=""
[ -n "${WORKQUEUE_NO_INSTALL:-}" ] && install_flags=--no-install
while [ $# -gt 0 ]; do
  case $1 in
    --rabbitmq) [ $# -ge 2 ] || { echo "$who: error: --rabbitmq needs a version" >&2; exit 2; }; version=$2; shift 2 ;;
    --no-install) install_flags=--no-install; shift ;;
    -h | --help) usage; exit 0 ;;
    *) break ;;
  esac
done

# shellcheck source=workqueue/venv.sh
. ./workqueue/venv.sh
needs="tmux shellcheck"
if [ -z "${AMQP_URL:-}" ] && [ -z "$version" ]; then needs="rabbitmq $needs"; fi
# The demo's Docker path is tested on a real engine of the tests' own, with an image made from a Debian root:
# as root, on Debian or Ubuntu (elsewhere those tests are skipped, and say why).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then needs="$needs dockerd debootstrap"; fi
# report.py's page is checked in headless Chromium: Debian's chromium-headless-shell (Debian only; elsewhere
# those checks are skipped, and say why).
if grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then needs="$needs chromium-headless-shell"; fi
# shellcheck disable=SC2086 # lists of words
python3 -m workqueue.brokers install $needs --who "$who" $install_flags || exit 1
if [ -n "$version" ]; then
  RABBITMQ_ROOT=$(python3 -m workqueue.brokers root "$version")
  export RABBITMQ_ROOT
fi
make_venv requirements-dev.txt "$who" $install_flags

# The lint: Python, shell, and the sizes a reader is promised (scripts of a page, a README of a sitting).
"$py" -m ruff check .
# The scripts and what they import run on Python 3.9 or newer (the README's promise); the tests need 3.10.
"${py%/*}/vermin" --quiet --no-tips --violations -t=3.9- publisher.py consumer.py report.py workqueue/
shellcheck -x run_demo.sh run_tests.sh workqueue/venv.sh .ci/run
for file in publisher.py:120 consumer.py:120 README.md:200; do
  lines=$(wc -l < "${file%:*}")
  [ "$lines" -le "${file#*:}" ] || { echo "$who: error: ${file%:*} has $lines lines, more than ${file#*:}" >&2; exit 1; }
done
exec "$py" -m pytest "$@"
