#!/usr/bin/env bash
# A one-machine cluster on this host: a Ray head (token auth on, dashboard and Jobs API on
# 127.0.0.1) and an MLflow tracking server on 127.0.0.1. Stop it with cluster/local/down.sh.
#
# Both run in their own session (setsid) and their leader pids go to $STATE/*.pid, so down.sh
# stops exactly these processes: `ray stop` would kill every Ray instance on the machine.
#
# Settings (environment):
#   RAY_DASHBOARD_PORT   8265      dashboard and Jobs API (http://127.0.0.1:PORT)
#   MLFLOW_PORT          5000      MLflow server (http://127.0.0.1:PORT)
#   MLFLOW_BACKEND_STORE_URI       default sqlite:///$STATE/mlflow.db (postgresql://... works
#                                  once psycopg2-binary is installed)
#   RAY_NUM_CPUS, RAY_NUM_GPUS     default: what Ray detects
#   BIONER_CLUSTER_DIR   outputs/cluster   pid files, logs, MLflow store and artifacts
#   BIONER_RAY_TEMP_DIR  /tmp/bioner-ray-UID   Ray's session folder (socket paths must stay short)
#   BIN                  .venv/bin  where ray, mlflow and bioner are installed
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH   the token; default ~/.ray/auth_token, created if missing
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${BIN:-$ROOT/.venv/bin}" && pwd)
STATE=${BIONER_CLUSTER_DIR:-$ROOT/outputs/cluster}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
RAY_TEMP=${BIONER_RAY_TEMP_DIR:-/tmp/bioner-ray-$(id -u)}
BACKEND=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}
mkdir -p "$STATE" "$RAY_TEMP"
STATE=$(cd "$STATE" && pwd)

started=0
die() {
  echo "cluster-up: $*" >&2
  [ "$started" = 1 ] && BIONER_CLUSTER_DIR="$STATE" "$ROOT/cluster/local/down.sh" >/dev/null
  exit 2
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
for f in "$STATE/ray.pid" "$STATE/mlflow.pid"; do
  alive "$f" && die "already running (pid $(cat "$f") in $f): run cluster/local/down.sh first"
done

# Is a port free on loopback? Ask Python: nc/ss are not everywhere.
port_free() { "$BIN/python" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null; }
# Ray hands ports 10002-19999 to its workers: a dashboard there is refused.
[ "$DASHBOARD_PORT" -ge 10002 ] && [ "$DASHBOARD_PORT" -le 19999 ] && die "RAY_DASHBOARD_PORT $DASHBOARD_PORT is in Ray's worker port range 10002-19999"
port_free "$DASHBOARD_PORT" || die "port $DASHBOARD_PORT is taken: set RAY_DASHBOARD_PORT"
port_free "$MLFLOW_PORT" || die "port $MLFLOW_PORT is taken: set MLFLOW_PORT"
# Ray's internal ports get free ones too: its fixed defaults clash with any other Ray on the host.
read -r GCS CLIENT NODE_MGR OBJ_MGR METRICS AGENT AGENT_GRPC RUNTIME_ENV < <("$BIN/python" -c "
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in ss])")

# Token authentication (Ray >= 2.52): every HTTP and gRPC call must carry the token.
export RAY_AUTH_MODE=token
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
  "$BIN/ray" get-auth-token --generate >/dev/null
  echo "generated a Ray token in ~/.ray/auth_token"
fi
# Ray Train's placement-group cleaner asks "the" local State API; with several Ray instances on
# the host it must be told which one. Every process of this head inherits this.
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
# Jobs run `bioner` from this PATH.
export PATH="$BIN:$PATH"

cd "$ROOT"
started=1
extra=()
[ -n "${RAY_NUM_CPUS:-}" ] && extra+=(--num-cpus "$RAY_NUM_CPUS")
[ -n "${RAY_NUM_GPUS:-}" ] && extra+=(--num-gpus "$RAY_NUM_GPUS")
setsid "$BIN/ray" start --head --block --disable-usage-stats \
  --node-ip-address 127.0.0.1 --port "$GCS" --temp-dir "$RAY_TEMP" \
  --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
  --ray-client-server-port "$CLIENT" --node-manager-port "$NODE_MGR" --object-manager-port "$OBJ_MGR" \
  --metrics-export-port "$METRICS" --dashboard-agent-listen-port "$AGENT" \
  --dashboard-agent-grpc-port "$AGENT_GRPC" --runtime-env-agent-port "$RUNTIME_ENV" \
  "${extra[@]}" >"$STATE/ray.log" 2>&1 </dev/null &
echo $! >"$STATE/ray.pid"

mkdir -p "$STATE/mlartifacts"
# MLflow 3's server starts a job runner (seven huey consumer processes, each importing MLflow) for its
# GenAI jobs; the platform runs none: off, unless the caller's environment asks for it.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "${MLFLOW_WORKERS:-2}" \
  --backend-store-uri "$BACKEND" --serve-artifacts --artifacts-destination "$STATE/mlartifacts" \
  >"$STATE/mlflow.log" 2>&1 </dev/null &
echo $! >"$STATE/mlflow.pid"

# Ready when the dashboard answers (401 without a token is an answer) and Ray says it started.
wait_for() {  # name url log pidfile pattern
  for _ in $(seq 1 120); do
    alive "$4" || { tail -20 "$3" >&2; die "$1 exited; log: $3"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "$2" || true)
    if [ "$code" != "000" ] && grep -q "$5" "$3"; then return 0; fi
    sleep 1
  done
  die "$1 did not answer at $2 within 120 s; log: $3"
}
wait_for "Ray head" "http://127.0.0.1:$DASHBOARD_PORT/api/version" "$STATE/ray.log" "$STATE/ray.pid" "Ray runtime started"
wait_for "MLflow server" "http://127.0.0.1:$MLFLOW_PORT/health" "$STATE/mlflow.log" "$STATE/mlflow.pid" "."

cat <<MSG
Ray dashboard and Jobs API: http://127.0.0.1:$DASHBOARD_PORT   (token auth on)
MLflow tracking server:     http://127.0.0.1:$MLFLOW_PORT   (store $BACKEND)
submit:  $BIN/bioner submit --address http://127.0.0.1:$DASHBOARD_PORT --tracking-uri http://127.0.0.1:$MLFLOW_PORT -- tune experiments/tune-smoke.yaml
jobs:    $BIN/bioner jobs list --address http://127.0.0.1:$DASHBOARD_PORT
stop:    cluster/local/down.sh   (logs and pids in $STATE)
MSG
