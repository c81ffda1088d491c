#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The work-queue demo in one command: a broker, workers, a publisher, then a report of who did what.
# shellcheck disable=SC2317  # functions run from traps or by name (start_$mode) look unreachable
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./run_demo.sh [options]

Sets up everything on a fresh machine and shows fair dispatch: a Python virtual environment with pika,
a RabbitMQ broker, N workers (consumer.py) consuming before one publisher (publisher.py) sends its tasks,
then a report: per worker the tasks done, a timeline, and the makespan against the ideal schedule.

Options:
  --workers N          workers to start (default 2)
  --tasks N            tasks to publish (default 10)
  --min-seconds S      shortest random task duration (default 1)
  --max-seconds S      longest random task duration (default 5)
  --seed N             random seed, for the same durations every run
  --durations LIST     exact durations, e.g. 3,1,4.5 (overrides --tasks, --min/--max-seconds)
  --flaky N            N of the tasks fail their first attempt on purpose: watch them fail, wait on the
                       broker and succeed on a later retry (the report counts their failed attempts)
  --idle-timeout S     workers exit after S seconds without a task (default 6)
  --mode MODE          where the processes run: terminals (a window each), tmux (a pane each) or
                       inline (all here, lines prefixed by name); default: terminals on a desktop,
                       else tmux when it is installed and this is an interactive terminal, else inline
  --keep-broker        leave a broker this script started running afterwards
  --no-install         never install anything (RabbitMQ, Python's venv module) when it is missing; say
                       what to run instead (env WORKQUEUE_NO_INSTALL=1)
  -h, --help           this help

Environment:
  AMQP_URL             broker to use if it answers (default amqp://guest:guest@localhost:5672/%2F);
                       otherwise a broker is started on that URL's port
  TASK_QUEUE           queue name (default task_queue)
  RABBITMQ_IMAGE       Docker image for the broker (default rabbitmq:4-management)
  RABBITMQ_BIN         folder holding rabbitmq-server and rabbitmqctl (default /usr/lib/rabbitmq/bin)
  RABBITMQ_MANAGEMENT_PORT  port of the management UI of a broker started here (default 15672)
  DEMO_DIR             folder for the run's files and a local node's data (default .demo)
  NO_COLOR             set to turn off coloured names in inline mode

The broker, in this order: the one answering at AMQP_URL; else a Docker container named
workqueue-demo-rabbitmq (ports published on 127.0.0.1 only); else a throwaway local rabbitmq-server
node in $DEMO_DIR/rabbitmq, after installing RabbitMQ with the system's package manager if it is missing
(asking first on a terminal; without one, only as root or with password-less sudo; no system-wide service
is left running). A broker started here is stopped at the end unless --keep-broker is given.

Ctrl-C stops the workers warmly (each finishes and acks its task), then the broker if started here.
Exit status: 0 only when every published task was done.
After a manual run, the same report: python3 report.py EVENTS_FILE (the file given to --events).
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

workers=2
tasks=10
idle_timeout=6
mode=auto
keep_broker=0
publisher_flags=()
install_flags=""
[ -n "${WORKQUEUE_NO_INSTALL:-}" ] && install_flags=--no-install

say() { printf '[demo] %s\n' "$*"; }
die() { printf 'run_demo.sh: error: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'run_demo.sh: error: %s (see --help)\n' "$*" >&2; exit 2; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi; }
whole_number() {
  if [[ ! $2 =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ]; then usage_error "$1 must be a whole number >= $3: '$2'"; fi
}

while [ $# -gt 0 ]; do
  case $1 in
    --workers) need_value "$@"; whole_number "$1" "$2" 1; workers=$2; shift 2 ;;
    --tasks) need_value "$@"; whole_number "$1" "$2" 0; tasks=$2; shift 2 ;;
    --min-seconds | --max-seconds | --seed | --durations | --flaky)
      need_value "$@"; publisher_flags+=("$1" "$2"); shift 2 ;;
    --idle-timeout) need_value "$@"; idle_timeout=$2; shift 2 ;;
    --mode)
      need_value "$@"
      case $2 in terminals | tmux | inline) mode=$2 ;; *) usage_error "--mode must be terminals, tmux or inline" ;; esac
      shift 2 ;;
    --keep-broker) keep_broker=1; shift ;;
    --no-install) install_flags=--no-install; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done

url=${AMQP_URL:-amqp://guest:guest@localhost:5672/%2F}
queue=${TASK_QUEUE:-task_queue}
image=${RABBITMQ_IMAGE:-rabbitmq:4-management}
rabbitmq_bin=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
management_port=${RABBITMQ_MANAGEMENT_PORT:-15672}
container=workqueue-demo-rabbitmq
demo_dir=${DEMO_DIR:-$here/.demo}
run_dir=$demo_dir/run
events=$run_dir/events.jsonl

# ---------------------------------------------------------------- Python

# shellcheck source=venv.sh
. ./venv.sh
# shellcheck disable=SC2086 # no flag, or one
make_venv requirements.txt run_demo.sh $install_flags
py=$here/$py
export AMQP_URL=$url TASK_QUEUE=$queue PYTHONUNBUFFERED=1
# Check the flags passed on to the scripts once, here, before anything is started.
check_flags() {  # module, flags...
  "$py" -c 'import importlib, sys; sys.argv[0] = "run_demo.sh"; importlib.import_module(sys.argv.pop(1)).parse_args()' "$@" \
    || exit 2
}
check_flags publisher --count "$tasks" ${publisher_flags[@]+"${publisher_flags[@]}"}
check_flags consumer --idle-timeout "$idle_timeout"

# ---------------------------------------------------------------- the broker

# Exit 0 if a broker accepts an AMQP connection at $1, 3 if it refuses the login, 1 otherwise.
broker_answers() {
  "$py" - "$1" <<'PY'
import sys
import pika
import workqueue  # noqa: F401  (quiets pika's own logging)
try:
    pika.BlockingConnection(pika.URLParameters(sys.argv[1].split(",")[0])).close()
except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError):
    sys.exit(3)
except Exception:
    sys.exit(1)
PY
}

masked_url=$("$py" -c "import sys, workqueue; print(workqueue.mask_url(sys.argv[1]))" "$url")
read -r broker_host broker_port < <("$py" -c "
import sys; from urllib.parse import urlsplit
parts = urlsplit(sys.argv[1].split(',')[0]); print(parts.hostname, parts.port or 5672)" "$url")

started_broker=""  # docker or local: what cleanup must stop
server_pid=""
epmd_pid=""
management=""

wait_for_broker() {  # $1: seconds; fails early if a local node died while booting
  local deadline=$((SECONDS + $1)) status
  while true; do
    status=0
    broker_answers "$url" || status=$?
    [ "$status" -eq 0 ] && return 0
    [ "$status" -eq 3 ] && die "the broker at $masked_url refused the login: check AMQP_URL"
    if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 20 "$demo_dir/rabbitmq/server.log" >&2 || true
      die "the local RabbitMQ node exited while booting (log: $demo_dir/rabbitmq/server.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

port_is_free() {
  "$py" -c "
import socket, sys
with socket.socket() as s:
    s.bind(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null
}

start_docker_broker() {
  command -v docker >/dev/null && docker info >/dev/null 2>&1 || return 1
  say "starting RabbitMQ in Docker ($image, container $container)"
  # The fixed name lets a second run replace the container an earlier run left behind.
  docker rm -f "$container" >/dev/null 2>&1 || true
  local ports=(-p "127.0.0.1:$broker_port:5672")
  if port_is_free "$management_port"; then
    ports+=(-p "127.0.0.1:$management_port:15672")
    [[ $image == *management* ]] && management="http://localhost:$management_port/ (login guest / guest)"
  fi
  docker run -d --name "$container" "${ports[@]}" "$image" >/dev/null || die "docker run $image failed"
  started_broker=docker
  wait_for_broker 180 || die "the RabbitMQ container did not accept connections within 180 s (docker logs $container)"
}

find_rabbitmq_server() {
  local folder
  for folder in "$rabbitmq_bin" /opt/homebrew/opt/rabbitmq/sbin /usr/local/opt/rabbitmq/sbin; do
    if [ -x "$folder/rabbitmq-server" ] && [ -x "$folder/rabbitmqctl" ]; then echo "$folder"; return 0; fi
  done
  return 1
}

start_local_broker() {
  local bin node_dir epmd_port plugins=""
  bin=$(find_rabbitmq_server) || return 1
  command -v epmd >/dev/null || return 1
  node_dir=$demo_dir/rabbitmq
  rm -rf "$node_dir"
  mkdir -p "$node_dir/conf.d"
  say "starting a throwaway RabbitMQ node (data in $node_dir, port $broker_port)"
  if compgen -G "$bin/../lib/rabbitmq_server-*/plugins/rabbitmq_management-*" >/dev/null \
      && port_is_free "$management_port"; then
    plugins=rabbitmq_management
    printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$management_port" > "$node_dir/rabbitmq.conf"
    management="http://localhost:$management_port/ (login guest / guest)"
  fi
  printf '[%s].\n' "$plugins" > "$node_dir/enabled_plugins"
  : > "$node_dir/rabbitmq-env.conf"
  # A private port mapper and every file in node_dir: this node can neither see nor disturb another broker.
  epmd_port=$((broker_port + 30000 > 65000 ? broker_port - 30000 : broker_port + 30000))
  epmd -port "$epmd_port" -address 127.0.0.1 >/dev/null 2>&1 &
  epmd_pid=$!
  (
    export HOME=$node_dir ERL_EPMD_PORT=$epmd_port ERL_CRASH_DUMP=$node_dir/erl_crash.dump \
      RABBITMQ_NODENAME=workqueue-demo@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT=$broker_port RABBITMQ_DIST_PORT=$((broker_port + 20000 > 65000 ? broker_port - 20000 : broker_port + 20000)) \
      RABBITMQ_CONF_ENV_FILE=$node_dir/rabbitmq-env.conf RABBITMQ_CONFIG_FILE=$node_dir/rabbitmq \
      RABBITMQ_ADVANCED_CONFIG_FILE=$node_dir/advanced.config RABBITMQ_CONFIG_FILES=$node_dir/conf.d \
      RABBITMQ_MOTD_FILE=$node_dir/motd RABBITMQ_ENABLED_PLUGINS_FILE=$node_dir/enabled_plugins \
      RABBITMQ_MNESIA_BASE=$node_dir/mnesia RABBITMQ_LOG_BASE=$node_dir/log RABBITMQ_PID_FILE=$node_dir/beam.pid
    cd "$node_dir"
    exec nohup "$bin/rabbitmq-server" </dev/null >"$node_dir/server.log" 2>&1
  ) &
  server_pid=$!
  started_broker=local
  wait_for_broker 120 || die "the local RabbitMQ node did not accept connections within 120 s ($node_dir/server.log)"
}

no_broker_help() {
  cat >&2 <<EOF
run_demo.sh: error: no RabbitMQ broker answers at $masked_url, and none could be started here.
Install one of these, then run ./run_demo.sh again:
  Linux (Debian/Ubuntu): sudo apt-get install rabbitmq-server    (or Docker: https://docs.docker.com/engine/install/)
  Linux (Fedora/RHEL):   sudo dnf install rabbitmq-server
  macOS:                 brew install rabbitmq                    (or Docker Desktop)
  Windows:               Docker Desktop, or the installer from https://www.rabbitmq.com/docs/install-windows
Or point AMQP_URL at a broker you can use.
EOF
  exit 1
}

# ---------------------------------------------------------------- processes

names=()        # worker names, then "publisher"
stopping=0
tmux_socket=workqueue-demo
tmux_session=""

pid_of() { cat "$run_dir/$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
exit_status() { cat "$run_dir/$1.exit" 2>/dev/null || echo 1; }

# Each process runs from a small script that records its PID and exit status, whatever window it is in.
write_launcher() {  # name, then the command
  local name=$1 script=$run_dir/$1.sh
  shift
  {
    echo "#!/usr/bin/env bash"
    printf 'cd %q\n' "$here"
    # shellcheck disable=SC2016  # expanded by the inner shell, which becomes the process itself
    printf 'bash -c %q' 'echo $$ > "$0"; exec "$@"'
    printf ' %q' "$run_dir/$name.pid" "$@"
    printf '\necho $? > %q\n' "$run_dir/$name.exit"
    # A window of its own stays open a moment, so that its last lines can be read.
    printf '[ -t 0 ] && read -r -t 15 -p "(%s has exited; Enter closes this window)" || true\n' "$name"
  } > "$script"
  echo "$script"
}

colour_of() { # $1: index
  if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then printf '\033[1;%sm' $((31 + $1 % 6)); fi
}

start_inline() {  # name, index, script
  local colour reset=""
  colour=$(colour_of "$2")
  [ -n "$colour" ] && reset=$'\033[0m'
  # Job control gives the process its own process group: Ctrl-C reaches only this script, which
  # then asks each worker once, warmly, to stop.
  set -m
  { bash "$3" 2>&1 | while IFS= read -r line; do
      printf '%s%-10s%s %s\n' "$colour" "$1" "$reset" "${line#"[$1] "}"
    done; } &
  set +m
}

start_tmux() {  # name, index, script
  if [ -z "$tmux_session" ]; then
    tmux_session=demo-$$
    tmux -L "$tmux_socket" new-session -d -s "$tmux_session" -x 200 -y 50 "bash $3"
    tmux -L "$tmux_socket" set-option -t "$tmux_session" remain-on-exit on >/dev/null
  else
    tmux -L "$tmux_socket" split-window -t "$tmux_session" "bash $3"
    tmux -L "$tmux_socket" select-layout -t "$tmux_session" tiled >/dev/null
  fi
  tmux -L "$tmux_socket" select-pane -t "$tmux_session" -T "$1"
}

terminal_program() {
  local program
  [ "$(uname -s)" = Darwin ] && { echo osascript; return 0; }
  [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || return 1
  for program in x-terminal-emulator gnome-terminal konsole xfce4-terminal xterm; do
    command -v "$program" >/dev/null && { echo "$program"; return 0; }
  done
  return 1
}

start_terminals() {  # name, index, script
  local program
  program=$(terminal_program)
  case $program in
    osascript) osascript -e "tell application \"Terminal\" to do script \"bash '$3'\"" >/dev/null ;;
    gnome-terminal) gnome-terminal --title "$1" -- bash "$3" ;;
    konsole) konsole -p tabtitle="$1" -e bash "$3" & ;;
    xfce4-terminal) xfce4-terminal --title "$1" -x bash "$3" ;;
    *) "$program" -T "$1" -e bash "$3" & ;;
  esac
}

start_process() {  # name, index, command...
  local name=$1 index=$2 script
  shift 2
  script=$(write_launcher "$name" "$@")
  names+=("$name")
  "start_$mode" "$name" "$index" "$script"
}

wait_for_pid_file() {
  local deadline=$((SECONDS + 30))
  until [ -s "$run_dir/$1.pid" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "$1 did not start (its window or pane may have failed to open)"
    sleep 0.1
  done
}

wait_for_consumers() {  # every worker consuming, so that dispatch is fair from the first task
  "$py" - "$url" "$queue" "$workers" <<'PY' || die "the workers did not all start consuming within 60 s"
import sys, time
import pika
import workqueue  # noqa: F401
url, queue, wanted = sys.argv[1].split(",")[0], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            if connection.channel().queue_declare(queue, passive=True).method.consumer_count >= wanted:
                sys.exit(0)
        finally:
            if connection.is_open:
                connection.close()
    except pika.exceptions.AMQPError:
        pass  # the queue is not declared yet
    time.sleep(0.2)
sys.exit(1)
PY
}

workers_running() {
  local name
  for name in "${names[@]}"; do
    [ "$name" = publisher ] && continue
    running "$name" && return 0
  done
  return 1
}

wait_for_workers() {
  while workers_running; do sleep 0.2; done
}

stop_workers() {  # one SIGTERM each: finish and ack the current task, then exit
  local name pid deadline=$((SECONDS + 60))
  for name in "${names[@]}"; do
    pid=$(pid_of "$name")
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  while workers_running && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
}

show_tmux_panes() {
  local index=0 name
  for name in "${names[@]}"; do
    echo "---- $name (tmux pane $index) ----"
    tmux -L "$tmux_socket" capture-pane -p -t "$tmux_session:0.$index" -S -1000 | sed -e '/^$/d'
    index=$((index + 1))
  done
}

cleanup() {
  if [ -n "$tmux_session" ]; then
    tmux -L "$tmux_socket" kill-session -t "$tmux_session" 2>/dev/null || true
  fi
  if [ "$stopping" = 1 ] && workers_running; then stop_workers; fi
  if [ "$keep_broker" = 1 ] && [ -n "$started_broker" ]; then
    case $started_broker in
      docker) say "the broker keeps running: docker rm -f $container stops it" ;;
      local) say "the broker keeps running: kill $server_pid $epmd_pid stops it" ;;
    esac
  elif [ "$started_broker" = docker ]; then
    say "removing the Docker container $container"
    docker rm -f "$container" >/dev/null 2>&1 || true
  elif [ "$started_broker" = local ]; then
    say "stopping the RabbitMQ node started here"
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    kill -TERM "$epmd_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

on_interrupt() {
  trap '' INT TERM
  stopping=1
  echo
  say "interrupted: the workers finish their current task, then stop"
  stop_workers
  if running publisher; then kill -TERM "$(pid_of publisher)" 2>/dev/null || true; fi
  finish
}

finish() {
  local status=0
  if [ "$mode" = tmux ] && [ ! -t 1 ] && [ -n "$tmux_session" ]; then show_tmux_panes; fi
  echo
  say "report"
  "$py" report.py "$events" --workers "$workers" || status=1
  if [ "$(exit_status publisher)" != 0 ]; then
    say "the publisher did not get every task confirmed (exit $(exit_status publisher))"
    status=1
  fi
  exit "$status"
}

# ---------------------------------------------------------------- the run

status=0
broker_answers "$url" || status=$?
if [ "$status" -eq 0 ]; then
  say "using the broker that answers at $masked_url"
elif [ "$status" -eq 3 ]; then
  die "the broker at $masked_url refused the login: check AMQP_URL"
elif [[ ! $broker_host =~ ^(localhost|127\.0\.0\.1|::1)$ ]]; then
  die "no broker answers at $masked_url (it is not local, so none is started for it)"
else
  start_docker_broker || start_local_broker || {
    # shellcheck disable=SC2086 # no flag, or one
    RABBITMQ_BIN=$rabbitmq_bin python3 rabbitmq.py install rabbitmq --who run_demo.sh $install_flags \
      && start_local_broker
  } || no_broker_help
fi
[ -n "$management" ] && say "management UI: $management"

if [ "$mode" = auto ]; then
  if terminal_program >/dev/null; then mode=terminals
  elif command -v tmux >/dev/null && [ -t 0 ] && [ -t 1 ] && [ -z "${CI:-}" ]; then mode=tmux
  else mode=inline
  fi
fi
[ "$mode" = tmux ] && ! command -v tmux >/dev/null && die "--mode tmux: tmux is not installed"
[ "$mode" = terminals ] && ! terminal_program >/dev/null && die "--mode terminals: no desktop terminal found"

rm -rf "$run_dir"
mkdir -p "$run_dir"
trap on_interrupt INT TERM
say "starting $workers worker(s) ($mode mode) on queue '$queue'"
for ((i = 1; i <= workers; i++)); do
  start_process "worker-$i" "$i" "$py" consumer.py --name "worker-$i" --idle-timeout "$idle_timeout" \
    --events "$events" --connect-timeout 30
done
for ((i = 1; i <= workers; i++)); do wait_for_pid_file "worker-$i"; done
wait_for_consumers
say "all workers are consuming; publishing"
start_process publisher 0 "$py" publisher.py --count "$tasks" ${publisher_flags[@]+"${publisher_flags[@]}"} \
  --events "$events"

if [ "$mode" = tmux ] && [ -t 0 ] && [ -t 1 ]; then
  # Watch from inside tmux; the session is closed for you once every worker has exited.
  ( wait_for_workers; sleep 2; tmux -L "$tmux_socket" kill-session -t "$tmux_session" 2>/dev/null ) &
  TMUX="" tmux -L "$tmux_socket" attach -t "$tmux_session" || true  # TMUX="": also from inside tmux
fi
wait_for_workers
wait_for_pid_file publisher
while running publisher; do sleep 0.2; done
finish
