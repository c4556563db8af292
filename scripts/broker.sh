#!/usr/bin/env bash
# A local Kafka-protocol broker for trying `baton up --kafka` and running the
# benchmark: Tansu (https://tansu.io), one static binary that speaks Kafka's
# wire protocol and keeps everything in memory. No JVM, no ZooKeeper, no
# Docker; nothing survives a stop. scripts/setup.sh installs it to
# .tools/bin/tansu.
#
#   scripts/broker.sh start [PORT]   start it on 127.0.0.1:PORT (default 9092)
#                                    in the background; prints the bootstrap
#                                    address, e.g. 127.0.0.1:9092
#   scripts/broker.sh stop [PORT]    stop it (without PORT: every broker this
#                                    script started)
#   scripts/broker.sh status [PORT]  say whether it runs (exit 0) or not (exit 1)
#
# Its pid and log are in .tools/run/tansu-PORT.{pid,log}. Create topics
# explicitly, with the partitions you mean (e.g. confluent_kafka's AdminClient
# in .tools/venv/bin/python): Tansu also creates a missing topic, with 4
# partitions, for any client whose metadata request allows it, which
# librdkafka producers do unless `allow.auto.create.topics=false`.
#
# Environment: BATON_TANSU=/path/to/tansu uses that binary instead of
# .tools/bin/tansu; BATON_BROKER_START_TIMEOUT_S (default 20) bounds the wait
# for the port to accept connections.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU="${BATON_TANSU:-$PWD/.tools/bin/tansu}"
RUN="$PWD/.tools/run"
DEFAULT_PORT=9092
START_TIMEOUT_S="${BATON_BROKER_START_TIMEOUT_S:-20}"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

fail() {
    printf 'error: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

check_port() {
    case "$1" in
        '' | *[!0-9]*) fail "not a port number: $1" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        fail "not a port number: $1"
    fi
}

pid_file() { printf '%s/tansu-%s.pid' "$RUN" "$1"; }
log_file() { printf '%s/tansu-%s.log' "$RUN" "$1"; }

# The pid of our broker on PORT if it is running, else nothing (and a stale
# pid file is removed).
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [ -f "$file" ] || return 1
    pid="$(cat "$file" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && ps -o args= -p "$pid" 2>/dev/null | grep -q tansu; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# Does something accept TCP connections on 127.0.0.1:PORT? (bash's /dev/tcp)
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

show_log_tail() {
    local log
    log="$(log_file "$1")"
    if [ -s "$log" ]; then
        echo "last lines of $log:" >&2
        tail -n 20 "$log" | sed 's/^/  | /' >&2
    fi
}

start() {
    local port="$1" pid log waited
    check_port "$port"
    if pid="$(running_pid "$port")"; then
        echo "Tansu already runs on 127.0.0.1:$port (pid $pid)" >&2
        echo "127.0.0.1:$port"
        return 0
    fi
    if ! { [ -x "$TANSU" ] && "$TANSU" --version >/dev/null 2>&1; }; then
        fail "no working Tansu at $TANSU" "run scripts/setup.sh first: it installs it to .tools/bin/tansu"
    fi
    if port_open "$port"; then
        fail "127.0.0.1:$port is already in use by another process" \
            "stop it, or pick another port: scripts/broker.sh start PORT"
    fi
    mkdir -p "$RUN"
    log="$(log_file "$port")"
    # Its own session (setsid), so Ctrl-C in this terminal does not stop it;
    # stdin closed, everything it says goes to the log.
    local launcher=()
    command -v setsid >/dev/null && launcher=(setsid)
    "${launcher[@]}" "$TANSU" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$(pid_file "$port")"
    waited=0
    until port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file "$port")"
            show_log_tail "$port"
            fail "Tansu exited before listening on 127.0.0.1:$port (log: $log)"
        fi
        if [ "$waited" -ge $((START_TIMEOUT_S * 10)) ]; then
            kill "$pid" 2>/dev/null || true
            rm -f "$(pid_file "$port")"
            show_log_tail "$port"
            fail "Tansu did not accept connections on 127.0.0.1:$port within ${START_TIMEOUT_S}s (log: $log)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "Tansu $("$TANSU" --version 2>/dev/null | sed 's/^tansu //') runs on 127.0.0.1:$port (pid $pid, in memory; log: .tools/run/tansu-$port.log)" >&2
    echo "127.0.0.1:$port"
}

stop_one() {
    local port="$1" pid waited=0
    if ! pid="$(running_pid "$port")"; then
        echo "no broker of this script runs on 127.0.0.1:$port" >&2
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge 50 ]; then
            echo "Tansu (pid $pid) ignored SIGTERM for 5s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$(pid_file "$port")"
    echo "stopped Tansu on 127.0.0.1:$port (pid $pid)" >&2
}

known_ports() {
    local file
    for file in "$RUN"/tansu-*.pid; do
        [ -e "$file" ] || continue
        file="${file##*/tansu-}"
        echo "${file%.pid}"
    done
}

stop() {
    if [ $# -gt 0 ]; then
        check_port "$1"
        stop_one "$1"
        return
    fi
    local port any=0
    for port in $(known_ports); do
        any=1
        stop_one "$port"
    done
    [ "$any" = 1 ] || echo "no broker of this script runs" >&2
}

status() {
    local port pid ports any=0
    if [ $# -gt 0 ]; then
        check_port "$1"
        ports="$1"
    else
        ports="$(known_ports)"
    fi
    for port in $ports; do
        if pid="$(running_pid "$port")"; then
            any=1
            echo "running: 127.0.0.1:$port (pid $pid, log: .tools/run/tansu-$port.log)"
        elif [ $# -gt 0 ]; then
            echo "not running: 127.0.0.1:$port"
        fi
    done
    if [ "$any" = 0 ]; then
        [ $# -gt 0 ] || echo "not running: no broker of this script runs"
        return 1
    fi
}

[ $# -ge 1 ] || usage
command="$1"
shift
[ $# -le 1 ] || usage
case "$command" in
    start) start "${1:-$DEFAULT_PORT}" ;;
    stop) stop "$@" ;;
    status) status "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
esac
