# shellcheck shell=bash
# Sourced by run_demo.sh and run_tests.sh (from the project folder): a Python virtual environment in .venv,
# with a requirements file.

# make_venv REQUIREMENTS WHO [--no-install]: create .venv if it is missing or not whole, then install
# REQUIREMENTS into it when they changed since their last install. WHO starts each message (on stderr,
# so that a script's own output stays its own). Sets `py`.
make_venv() {
  local requirements=$1 who=$2 install_flags=${3:-} stamp=.venv/.installed-$1
  command -v python3 >/dev/null || { echo "$who: error: python3 is not installed" >&2; exit 1; }
  # A .venv made without ensurepip has no pip, and every later run would fail: it is made again.
  if [ -d .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "[$who] .venv is not whole (no pip): making it again" >&2
    rm -rf .venv
  fi
  if [ ! -d .venv ]; then
    # shellcheck disable=SC2086 # no flag, or one
    python3 -m workqueue.brokers install venv --who "$who" $install_flags || exit 1
    echo "[$who] creating the virtual environment .venv" >&2
    python3 -m venv .venv || { rm -rf .venv; echo "$who: error: could not create .venv" >&2; exit 1; }
  fi
  py=.venv/bin/python
  if [ ! -f "$stamp" ] || ! cat requirements.txt "$requirements" | cmp -s - "$stamp"; then
    echo "[$who] installing $requirements into .venv" >&2
    "$py" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
      || { echo "$who: error: pip install -r $requirements failed" >&2; exit 1; }
    cat requirements.txt "$requirements" > "$stamp"
    # The test requirements include the demo's: the demo then has nothing to install.
    if grep -q -- "-r requirements.txt" "$requirements"; then
      cat requirements.txt requirements.txt > .venv/.installed-requirements.txt
    fi
  fi
}
