#!/usr/bin/env bash
# Stop what cluster/local/up.sh started, and nothing else: every process in the session of each
# recorded leader (Ray's workers leave the leader's process group but stay in its session).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${BIONER_CLUSTER_DIR:-$ROOT/outputs/cluster}

session() { ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ { print $1 }'; }

stop_session() {  # name pidfile command-pattern
  local pid
  [ -f "$2" ] || { echo "$1: not running (no $2)"; return 0; }
  pid=$(cat "$2")
  # A recycled pid must not be killed: check that the leader is still what up.sh started.
  if kill -0 "$pid" 2>/dev/null && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$3"; then
    echo "$1: pid $pid is no longer $3; not touching it"; rm -f "$2"; return 0
  fi
  # The leader first: `ray start --block` and mlflow shut their children down in order.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    [ -z "$(session "$pid")" ] && break
    sleep 0.5
  done
  # Then whatever is left, to the end: the raylet may start a worker while it shuts down.
  local left
  for sig in TERM KILL KILL KILL; do
    left=$(session "$pid")
    [ -z "$left" ] && break
    kill "-$sig" $left 2>/dev/null || true
    sleep 2
  done
  [ -n "$(session "$pid")" ] && echo "$1: processes left in session $pid: $(session "$pid")" >&2
  rm -f "$2"
  echo "$1: stopped (session $pid)"
}

stop_session "MLflow server" "$STATE/mlflow.pid" "mlflow"
stop_session "Ray head" "$STATE/ray.pid" "ray start"
