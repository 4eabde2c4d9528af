#!/usr/bin/env bash
# CRS 3.3.4 regression suite (ftw 1.3.0) against the real edge and against nginx +
# ModSecurity-nginx loaded with the same rules text, in one run. Ends with
#   crs_regression edge_passed=<n> nginx_modsecurity_passed=<m> total=<t>
# and exits non-zero when edge_passed < nginx_modsecurity_passed or anything failed to start.
#
#   CRS_SMOKE=1 (or --smoke)    only the first 3 tests of each YAML file (CI; < 1 minute)
#   CRS_PARANOIA=4 CRS_INBOUND_THRESHOLD=5 CRS_OUTBOUND_THRESHOLD=4 CRS_MODE=block
#                               WAF settings, the same for both targets
#   CRS_KEEP=1                  keep the work directory (logs, results) even on success
#   CRS_TESTS=DIR               the regression YAML (default ../shared/crs-regression-v3.3.4/tests)
#   SASE_PROFILE=release        use release builds (default debug)
#   CRS_EDGE_BIN=PATH           run this sase-edge binary instead (e.g. a candidate fix)
#
# Results land in $CRS_OUT (default target/crs-regression): <target>.json (every test, every
# stage: status, rule ids seen, error), <target>-failed.txt, differences.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SMOKE=${CRS_SMOKE:-0}
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) echo "crs.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
PARANOIA=${CRS_PARANOIA:-4}
INBOUND=${CRS_INBOUND_THRESHOLD:-5}
OUTBOUND=${CRS_OUTBOUND_THRESHOLD:-4}
MODE=${CRS_MODE:-block}
TESTS=${CRS_TESTS:-$(cd "$ROOT/.." && pwd)/shared/crs-regression-v3.3.4/tests}
OUT=${CRS_OUT:-$ROOT/target/crs-regression}
VENV=$ROOT/.venv-ftw
ADMIN_PASSWORD=crs-admin-password

log() { echo "crs.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ -d "$TESTS" ] || die "no regression tests in $TESTS (set CRS_TESTS)"

# --- what the run needs -----------------------------------------------------------------------
SETUP_EXTRA="nginx libnginx-mod-http-modsecurity" "$ROOT/scripts/setup.sh" >&2
NGINX_MODULE=
for m in /usr/lib/nginx/modules/ngx_http_modsecurity_module.so \
         /usr/share/nginx/modules/ngx_http_modsecurity_module.so; do
  if [ -f "$m" ]; then NGINX_MODULE=$m; break; fi
done
[ -n "$NGINX_MODULE" ] || die "ngx_http_modsecurity_module.so not found"

PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN=$ROOT/target/$PROFILE
EDGE_BIN=${CRS_EDGE_BIN:-$BIN/sase-edge}

if ! "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("ftw") == "1.3.0"' 2>/dev/null; then
  log "creating $VENV with ftw 1.3.0"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q ftw==1.3.0 >&2
fi
PY=$VENV/bin/python
DRIVER=$ROOT/tests/conformance/run_ftw.py

# --- processes, cleaned up on exit ------------------------------------------------------------
WORK=$(mktemp -d /tmp/sase-crs.XXXXXX)
PIDS=()
STATUS=failed
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # After the final line nothing may be printed: "reported" keeps the logs silently.
  if [ "$STATUS" = failed ]; then
    log "logs kept in $WORK"
  elif [ "$STATUS" = ok ] && [ "${CRS_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line matching REGEX (or the process PID died); prints the line.
wait_line() {
  local file=$1 regex=$2 pid=$3 secs=${4:-60} line
  for _ in $(seq $((secs * 20))); do
    if line=$(grep -m1 -E "$regex" "$file" 2>/dev/null); then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$file" >&2; die "process $pid exited before '$regex'"; }
    sleep 0.05
  done
  tail -20 "$file" >&2
  die "timed out waiting for '$regex' in $file"
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Upstream shared by both targets.
"$BIN/sase-demo-app" --listen 127.0.0.1:0 >"$WORK/app.log" 2>&1 &
PIDS+=($!)
UPSTREAM=$(wait_line "$WORK/app.log" 'listening on http://' "${PIDS[-1]}" | awk '{print $NF}')
log "upstream $UPSTREAM"

# --- the edge: control plane, enrolment, policy -----------------------------------------------
SASE_ADMIN_PASSWORD=$ADMIN_PASSWORD RUST_LOG=warn,sase_control=info \
  "$BIN/sase-control" serve --data-dir "$WORK/control" --listen 127.0.0.1:0 >"$WORK/control.log" 2>&1 &
PIDS+=($!)
CP_ADDR=$(wait_line "$WORK/control.log" 'sase-control listening on https://' "${PIDS[-1]}" \
  | grep -oE 'https://[0-9.]+:[0-9]+' | head -1 | sed 's#https://##')
CP=https://$CP_ADDR
CA=$WORK/control/tls/ca.pem

api() { # METHOD PATH [JSON]
  local args=(-sS --fail-with-body --cacert "$CA" -X "$1" -H 'content-type: application/json')
  [ -n "${SESSION:-}" ] && args+=(-H "authorization: Bearer $SESSION")
  [ $# -ge 3 ] && args+=(--data-binary "$3")
  curl "${args[@]}" "$CP$2"
}
json_field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

SESSION=$(api POST /api/login "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | json_field session)
TENANT=$(api POST /api/tenants '{"name":"CRS regression"}' | json_field id)
SITE=$(api POST "/api/tenants/$TENANT/sites" '{"name":"lab"}' | json_field id)
CLAIM=$(api POST "/api/sites/$SITE/claim-codes" '{"ttl_minutes":10}' | json_field code)
"$EDGE_BIN" enroll --control-plane "$CP" --claim="$CLAIM" --ca-cert "$CA" \
  --data-dir "$WORK/edge" --name crs-edge >"$WORK/enroll.log" 2>&1 || { cat "$WORK/enroll.log" >&2; die "enrolment failed"; }

"$PY" "$DRIVER" policy --tests "$TESTS" --upstream "$UPSTREAM" --mode "$MODE" --paranoia "$PARANOIA" \
  --inbound-threshold "$INBOUND" --outbound-threshold "$OUTBOUND" >"$WORK/policy.json"
api PUT "/api/tenants/$TENANT/policy" "$(cat "$WORK/policy.json")" >"$WORK/policy-put.json" \
  || { cat "$WORK/policy-put.json" >&2; die "policy refused"; }

EDGE_WAF_LOG=$WORK/edge-waf.log
: >"$EDGE_WAF_LOG"
RUST_LOG=warn,sase_edge=info "$EDGE_BIN" run --data-dir "$WORK/edge" --http-listen 127.0.0.1:0 \
  --waf-log "$EDGE_WAF_LOG" >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
EDGE_PID=${PIDS[-1]}
EDGE_PORT=$(wait_line "$WORK/edge.log" 'sase-edge running' "$EDGE_PID" \
  | grep -oE 'http://127\.0\.0\.1:[0-9]+' | sed 's/.*://')
wait_line "$WORK/edge.log" 'policy applied' "$EDGE_PID" 120 >/dev/null
log "edge on 127.0.0.1:$EDGE_PORT (control plane $CP)"

# --- nginx + ModSecurity-nginx with the same rules text ---------------------------------------
"$BIN/sase-waf-config" --mode "$MODE" --paranoia "$PARANOIA" --inbound-threshold "$INBOUND" \
  --outbound-threshold "$OUTBOUND" >"$WORK/nginx-modsecurity.conf"
ID_PREFIX=$("$BIN/sase-waf-config" --mode "$MODE" --paranoia "$PARANOIA" --inbound-threshold "$INBOUND" \
  --outbound-threshold "$OUTBOUND" --print-id-prefix)
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
NGINX_ERROR_LOG=$WORK/nginx/logs/error.log
: >"$NGINX_ERROR_LOG"
cat >"$WORK/nginx/nginx.conf" <<EOF
load_module $NGINX_MODULE;
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
# ModSecurity-nginx logs rule matches at level info, denials at error.
error_log $NGINX_ERROR_LOG info;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  upstream app { server ${UPSTREAM#http://}; keepalive 8; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    server_name localhost;
    modsecurity on;
    modsecurity_rules_file $WORK/nginx-modsecurity.conf;
    # The edge names its transactions <class>.q<n>; the scope rule (paranoia level,
    # thresholds) matches that prefix, so nginx names them the same way.
    modsecurity_transaction_id "${ID_PREFIX}q\$request_id";
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }
  }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stderr.log" 2>&1 &
PIDS+=($!)
wait_line "$NGINX_ERROR_LOG" 'start worker process' "${PIDS[-1]}" 60 >/dev/null
log "nginx on 127.0.0.1:$NGINX_PORT"

# --- both runs at once ------------------------------------------------------------------------
RUN_ARGS=(--tests "$TESTS" --out "$OUT")
[ "$SMOKE" = 1 ] && RUN_ARGS+=(--smoke 3)
mkdir -p "$OUT"
rm -f "$OUT"/edge.json "$OUT"/nginx.json "$OUT"/*-failed.txt "$OUT"/differences.json
cp "$WORK/policy.json" "$WORK/nginx-modsecurity.conf" "$WORK/nginx/nginx.conf" "$OUT/"
started=$(date +%s)
"$PY" "$DRIVER" run --name edge --port "$EDGE_PORT" --log "$EDGE_WAF_LOG" "${RUN_ARGS[@]}" \
  >"$WORK/run-edge.log" 2>&1 &
EDGE_RUN=$!
PIDS+=("$EDGE_RUN")
"$PY" "$DRIVER" run --name nginx --port "$NGINX_PORT" --log "$NGINX_ERROR_LOG" "${RUN_ARGS[@]}" \
  >"$WORK/run-nginx.log" 2>&1 &
NGINX_RUN=$!
PIDS+=("$NGINX_RUN")
rc=0
wait "$EDGE_RUN" || rc=$?
wait "$NGINX_RUN" || rc=$?
tail -1 "$WORK/run-edge.log" >&2
tail -1 "$WORK/run-nginx.log" >&2
[ "$rc" = 0 ] || die "a regression run failed (see $WORK/run-*.log)"
log "both runs took $(($(date +%s) - started)) s"
kill -0 "$EDGE_PID" 2>/dev/null || die "the edge died during the run"
"$PY" "$DRIVER" compare --out "$OUT" >&2

count() { "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(sum(1 for t in r if t['ok']), len(r))" "$1"; }
read -r EDGE_PASSED TOTAL < <(count "$OUT/edge.json")
read -r NGINX_PASSED NGINX_TOTAL < <(count "$OUT/nginx.json")
[ "$TOTAL" = "$NGINX_TOTAL" ] || die "the runs differ in size ($TOTAL vs $NGINX_TOTAL)"
cp "$EDGE_WAF_LOG" "$OUT/edge-waf.log"
cp "$NGINX_ERROR_LOG" "$OUT/nginx-error.log"
if [ "$EDGE_PASSED" -ge "$NGINX_PASSED" ]; then
  STATUS=ok
  if [ "${CRS_KEEP:-0}" = 1 ]; then log "logs kept in $WORK"; fi
else
  log "the edge passes fewer tests than nginx + ModSecurity (see $OUT/differences.json); logs kept in $WORK"
  STATUS=reported
fi
echo "crs_regression edge_passed=$EDGE_PASSED nginx_modsecurity_passed=$NGINX_PASSED total=$TOTAL"
[ "$STATUS" = ok ]
