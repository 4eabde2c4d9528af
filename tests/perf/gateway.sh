#!/usr/bin/env bash
# API gateway throughput (issue 4): wrk in one run against
#   (a) nginx as a plain reverse proxy to the upstream, and
#   (b) the edge (release build) enforcing on the same request: a JWT signed with ES256 (key in
#       the policy), the route's scope, object ownership (path `{accountId}` == the token's
#       `sub`), OpenAPI validation of the 1 KiB JSON body (strict properties) and a per-client
#       rate limit that is never reached; WAF off (tests/perf/waf.sh measures the WAF).
# Same upstream (nginx answering a small JSON), same request (POST of the same 1 KiB body with
# the same headers), same wrk settings. Before measuring, the edge is shown to enforce: no token
# 401, another account 403 object_not_owned, an undocumented property 400, the request 200.
# Rounds interleave the targets (nginx first in odd rounds, the edge first in even ones); the
# figures compared are the medians over the rounds. Prints rps, p99 and the CPU time per request
# of each proxy (nginx master + workers, the edge process; from /proc, so much less sensitive to
# other load on the machine than rps) and ends with
#   gateway_rps_ratio_vs_nginx_proxy=<edge rps / nginx rps>
# Fails when any measured response is not 200, or the ratio is under GATEWAY_PERF_MIN_RATIO
# (default 0.8, the target; the CI smoke sets 0).
#
# Environment:
#   GATEWAY_PERF_SECONDS=<s>    measured seconds per target and round (default 10; smoke: 2)
#   GATEWAY_PERF_WARMUP=<s>     warm-up seconds before each measurement (default 3, 1 if short)
#   GATEWAY_PERF_ROUNDS=<n>     rounds (default 3; smoke: 1)
#   GATEWAY_PERF_THREADS / GATEWAY_PERF_CONNECTIONS   wrk -t / -c (default 1 / 32)
#   GATEWAY_PERF_MIN_RATIO=<r>  fail under this ratio (default 0.8)
#   GATEWAY_PERF_KEEP=1         keep the work directory
#   SASE_PROFILE=debug          measure a debug build of the edge (default release)
#   GATEWAY_PERF_PROFILE=1      record the edge's measured runs with `perf record` and keep
#                               perf-<target>-<round>.txt (top symbols) in the work directory;
#                               GATEWAY_PERF_PROFILE=dwarf records DWARF call graphs instead of
#                               frame pointers (the release build has none), so that
#                               `perf report --children` gives each function's inclusive share;
#                               GATEWAY_PERF_PROFILE_TARGET=<target> profiles another target
#                               than the edge (e.g. bare_percore) the same way
#   GATEWAY_PERF_COMPARE_BIN=<path to another sase-edge>
#                               A/B: also measure that binary (target `edge_b`, its own stack
#                               with the same policy) in the same interleaved rounds, and print
#                               `compare edge_b/edge ...` before the last line; for judging a
#                               change on a machine whose load moves between runs
#   GATEWAY_PERF_PLAIN=1        also measure the same edge as a plain proxy (target `edge_plain`:
#                               a public route, no token, contract or rate limit; the audit event
#                               is still written), to tell what the enforcement costs from what
#                               the proxying itself costs
#   GATEWAY_PERF_BARE=1         also measure sase-bare-proxy, a reverse proxy with nothing to
#                               enforce built on the edge's stack, in its three modes (targets
#                               `bare_hyper`: the edge's threading, hyper server and pooled
#                               client; `bare_percore`: a current-thread runtime per core with
#                               SO_REUSEPORT; `bare_httparse`: the same threads with HTTP/1.1
#                               framing on httparse): what the stack itself costs on this machine
#   GATEWAY_PERF_SYSCALLS=1     also count each target's system calls per request (`perf trace -s`
#                               on the proxy's processes during its measured run; slows that run,
#                               more so for the proxy making more calls: judge no ratio by it)
#                               and keep syscalls-<target>-<round>.txt in the work directory
#   GATEWAY_PERF_CALLGRIND=1    also count the edge's instructions per request under callgrind
#                               (its own stack; GATEWAY_PERF_CALLGRIND_SECONDS, default 20) and
#                               keep the per-function counts in the work directory
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SETUP_EXTRA="nginx wrk${GATEWAY_PERF_CALLGRIND:+ valgrind}" scripts/setup.sh >/dev/null

DURATION=${GATEWAY_PERF_SECONDS:-10}
if [ "$DURATION" -le 3 ]; then default_warmup=1; else default_warmup=3; fi
WARMUP=${GATEWAY_PERF_WARMUP:-$default_warmup}
THREADS=${GATEWAY_PERF_THREADS:-1}
CONNS=${GATEWAY_PERF_CONNECTIONS:-32}
ROUNDS=${GATEWAY_PERF_ROUNDS:-3}
MIN_RATIO=${GATEWAY_PERF_MIN_RATIO:-0.8}

PROFILE=${SASE_PROFILE:-release}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE

WORK=$(mktemp -d /tmp/sase-gateway-perf.XXXXXX)
chmod 755 "$WORK" # nginx workers may run as another user
UP_PID='' NGX_PID=''
declare -A BARE_URL BARE_PID
. tests/perf/serve-edge.sh
status=1
cleanup() {
  # Only the processes this script started, by pid.
  local pid
  stop_edges
  # SIGTERM for the bare proxies: a background job of a script ignores SIGQUIT (nginx handles
  # it itself, as its graceful stop).
  for pid in "${BARE_PID[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for pid in "$NGX_PID" "$UP_PID"; do
    if [ -n "$pid" ]; then
      kill -QUIT "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "$status" -eq 0 ] && [ -z "${GATEWAY_PERF_KEEP:-}" ]; then
    rm -rf "$WORK"
  else
    echo "gateway.sh: work directory kept: $WORK" >&2
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# to_ms VALUE: wrk latency (e.g. 850.00us, 12.34ms, 1.02s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
    else { sub(/s$/, "", v); printf "%.2f", v * 1000 } }'
}

# proxy_pids PID: PID and its children (nginx's master and workers; the edge and the bare
# proxies have none), one per line: the processes a target's figures are taken over.
proxy_pids() {
  echo "$1"
  pgrep -P "$1" || true
}

# cpu_ticks PID: CPU time (user + system, clock ticks) used so far by PID and its child
# processes (nginx's workers are children of its master).
cpu_ticks() {
  local total=0 pid
  for pid in $(proxy_pids "$1"); do
    if [ -r "/proc/$pid/stat" ]; then
      total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
    fi
  done
  echo "$total"
}

# ctx_switches PID: "<voluntary> <involuntary>" context switches so far of the threads PID and
# its children (nginx's workers) have now. A thread that ends between two samples takes its
# count with it (the edge's blocking-pool threads come and go; its connection threads, where
# requests are served, live as long as the process), so the figure is for the long-lived
# threads.
ctx_switches() {
  local pid
  for pid in $(proxy_pids "$1"); do
    cat /proc/"$pid"/task/*/status 2>/dev/null || true
  done | awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2}
    END {printf "%d %d\n", v, n}'
}

# median VALUES...: the median (the lower middle one for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

echo "== machine"
echo "cores: $(nproc); $(uname -srm)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), edge $PROFILE build"

# --- the token, the body, the policy --------------------------------------------------------
"$BIN/sase-es256-token" --out-dir "$WORK/idp" --iss https://idp.perf.example --aud orders \
  --sub acct-42 --scope "orders:read orders:write"
TOKEN=$(cat "$WORK/idp/token.txt")
python3 - "$WORK/body.json" <<'EOF'
import json, sys
items = [{"sku": "SKU-%06d" % i, "name": "Merino wool crew neck sweater, size %d" % i,
          "qty": 1 + i % 3, "price": 89.95} for i in range(9)]
order = {"customer": "acct-42", "currency": "EUR", "items": items, "note": ""}
text = json.dumps(order, separators=(",", ":"))
order["note"] = "x" * (1024 - len(text))
text = json.dumps(order, separators=(",", ":"))
assert len(text) == 1024, len(text)
open(sys.argv[1], "w").write(text)
EOF

# --- upstream: nginx answering a small JSON --------------------------------------------------
UP_PORT=$(free_port)
mkdir -p "$WORK/upstream/tmp"
chmod 1777 "$WORK/upstream/tmp"
cat > "$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/upstream/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location / {
      default_type application/json;
      return 200 '{"status":"accepted","order":"o-1001"}';
    }
  }
}
EOF
nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" &
UP_PID=$!

# --- (a) nginx as a plain reverse proxy ------------------------------------------------------
NGX_PORT=$(free_port)
NGX=$WORK/nginx
mkdir -p "$NGX/tmp"
chmod 1777 "$NGX/tmp"
cat > "$NGX/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/body;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  client_body_buffer_size 64k;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGX_PORT backlog=4096 reuseport;
    server_name api.example;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" &
NGX_PID=$!

# --- (b) the edge ----------------------------------------------------------------------------
python3 - "$WORK/policy.json" "$WORK/idp/jwks.json" "$UP_PORT" <<'EOF'
import json, sys
out, jwks_path, port = sys.argv[1], sys.argv[2], sys.argv[3]
openapi = {
  "openapi": "3.1.0",
  "info": {"title": "orders", "version": "1.0"},
  "paths": {"/accounts/{accountId}/orders": {
    "parameters": [{"name": "accountId", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"}}],
    "post": {
      "operationId": "createOrder",
      "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Order"}}}},
      "responses": {"200": {"description": "accepted"}}}}},
  "components": {"schemas": {
    "Order": {"type": "object", "required": ["customer", "currency", "items"], "properties": {
      "customer": {"type": "string", "maxLength": 64},
      "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
      "note": {"type": "string", "maxLength": 2048},
      "items": {"type": "array", "minItems": 1, "maxItems": 50,
                "items": {"$ref": "#/components/schemas/Item"}}}},
    "Item": {"type": "object", "required": ["sku", "qty", "price"], "properties": {
      "sku": {"type": "string", "pattern": "^SKU-[0-9]{6}$"},
      "name": {"type": "string", "maxLength": 200},
      "qty": {"type": "integer", "minimum": 1, "maximum": 1000},
      "price": {"type": "number", "minimum": 0}}}}}}
policy = {
  "issuers": [{"id": "idp", "issuer": "https://idp.perf.example", "audiences": ["orders"],
               "algorithms": ["ES256"], "keys": {"jwks": json.load(open(jwks_path))}}],
  "resources": [{
    "name": "orders", "hosts": ["api.example"], "upstream": "http://127.0.0.1:%s" % port,
    "issuers": ["idp"], "waf": {"mode": "off"},
    "routes": [{
      "id": "create-order", "methods": ["POST"], "path": "/accounts/{accountId}/orders",
      "scopes": ["orders:write"],
      "owner": [{"path": "accountId", "claim": "sub"}],
      "limits": {"rate": [{"id": "per-client", "per": "client", "requests": 1000000,
                            "window_seconds": 1}]}}],
    "api": {"openapi": openapi}}]}
json.dump(policy, open(out, "w"))
EOF
serve_edge edge "$BIN"
EDGE_URL=$STACK_URL EDGE_PID=$STACK_PID
# bins_but_edge DIR: DIR holds links to every binary of $BIN except sase-edge, which the caller
# puts there (another build for the A/B, a wrapper for callgrind).
bins_but_edge() {
  mkdir -p "$1"
  local f
  for f in "$BIN"/sase-*; do
    if [ -x "$f" ] && [ -f "$f" ] && [ "$(basename "$f")" != sase-edge ]; then
      ln -sf "$f" "$1/$(basename "$f")"
    fi
  done
}
TARGETS="nginx edge"
if [ -n "${GATEWAY_PERF_PLAIN:-}" ]; then
  # The same resource and upstream with one public route and nothing else to enforce.
  python3 - "$WORK/policy.json" "$WORK/policy-plain.json" <<'EOF'
import json, sys
policy = json.load(open(sys.argv[1]))
resource = policy["resources"][0]
resource.pop("api")
resource["issuers"] = []
resource["routes"] = [{"id": "create-order", "methods": ["POST"],
                       "path": "/accounts/{accountId}/orders", "public": True}]
policy["issuers"] = []
json.dump(policy, open(sys.argv[2], "w"))
EOF
  SERVE_EDGE_POLICY=$WORK/policy-plain.json serve_edge edge_plain "$BIN"
  EDGE_PLAIN_URL=$STACK_URL EDGE_PLAIN_PID=$STACK_PID
  TARGETS="$TARGETS edge_plain"
fi
if [ -n "${GATEWAY_PERF_COMPARE_BIN:-}" ]; then
  # The same binaries, but the other sase-edge.
  bins_but_edge "$WORK/bin-b"
  ln -sf "$(readlink -f "$GATEWAY_PERF_COMPARE_BIN")" "$WORK/bin-b/sase-edge"
  serve_edge edge_b "$WORK/bin-b"
  EDGE_B_URL=$STACK_URL EDGE_B_PID=$STACK_PID
  TARGETS="$TARGETS edge_b"
fi
if [ -n "${GATEWAY_PERF_BARE:-}" ]; then
  for pair in bare_hyper=hyper bare_percore=hyper-per-core bare_httparse=httparse-per-core; do
    target=${pair%%=*} mode=${pair#*=}
    port=$(free_port)
    "$BIN/sase-bare-proxy" --mode "$mode" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP_PORT" \
      > "$WORK/$target.log" 2>&1 &
    BARE_URL[$target]="http://127.0.0.1:$port" BARE_PID[$target]=$!
    TARGETS="$TARGETS $target"
  done
fi

# post URL PATH [TOKEN] [BODY-FILE]: the status of one POST.
post() {
  local auth=()
  [ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
  curl -s -o "$WORK/last-answer" -w '%{http_code}' -H 'Host: api.example' \
    -H 'Content-Type: application/json' "${auth[@]}" --data-binary "@${4:-$WORK/body.json}" "$1$2"
}
wait_ok() {
  local deadline=$((SECONDS + 30))
  until [ "$(post "$1" /accounts/acct-42/orders "$TOKEN" || true)" = 200 ]; do
    if [ $SECONDS -ge $deadline ]; then echo "gateway.sh: $1 not ready" >&2; cat "$WORK/last-answer" >&2; exit 1; fi
    sleep 0.05
  done
}
wait_ok "http://127.0.0.1:$NGX_PORT"
wait_ok "$EDGE_URL"
[ -z "${EDGE_B_URL:-}" ] || wait_ok "$EDGE_B_URL"
[ -z "${EDGE_PLAIN_URL:-}" ] || wait_ok "$EDGE_PLAIN_URL"
for target in "${!BARE_URL[@]}"; do wait_ok "${BARE_URL[$target]}"; done
python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["is_admin"]=True; json.dump(b, open(sys.argv[2], "w"))' \
  "$WORK/body.json" "$WORK/body-extra.json"
checks="no_token=$(post "$EDGE_URL" /accounts/acct-42/orders) other_account=$(post "$EDGE_URL" /accounts/acct-7/orders "$TOKEN") undocumented_property=$(post "$EDGE_URL" /accounts/acct-42/orders "$TOKEN" "$WORK/body-extra.json") good=$(post "$EDGE_URL" /accounts/acct-42/orders "$TOKEN")"
echo "edge enforcement: $checks"
if [ "$checks" != "no_token=401 other_account=403 undocumented_property=400 good=200" ]; then
  echo "gateway.sh: the edge does not enforce the policy as expected" >&2
  exit 1
fi

cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.path = "/accounts/acct-42/orders"
wrk.headers["Host"] = "api.example"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
local f = assert(io.open("$WORK/body.json", "rb"))
wrk.body = f:read("*a")
f:close()
EOF

declare -A RPS P99 CPU
failures=0
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order: each target goes first in some rounds.
  order=$TARGETS
  for _ in $(seq 2 "$round"); do order="$(cut -d' ' -f2- <<< "$order") $(cut -d' ' -f1 <<< "$order")"; done
  for target in $order; do
    case $target in
      nginx) url="http://127.0.0.1:$NGX_PORT" cpu_pid=$NGX_PID ;;
      edge) url=$EDGE_URL cpu_pid=$EDGE_PID ;;
      edge_b) url=$EDGE_B_URL cpu_pid=$EDGE_B_PID ;;
      edge_plain) url=$EDGE_PLAIN_URL cpu_pid=$EDGE_PLAIN_PID ;;
      bare_*) url=${BARE_URL[$target]} cpu_pid=${BARE_PID[$target]} ;;
    esac
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" --timeout 30s -s "$WORK/post.lua" "$url" \
      > "$WORK/wrk-$target-warmup.txt"
    out=$WORK/wrk-$target-$round.txt
    perf_pid=''
    pids=$(proxy_pids "$cpu_pid" | paste -sd,)
    if [ -n "${GATEWAY_PERF_PROFILE:-}" ] && [ "$target" = "${GATEWAY_PERF_PROFILE_TARGET:-edge}" ]; then
      if [ "$GATEWAY_PERF_PROFILE" = dwarf ]; then call_graph=(--call-graph dwarf,16384); else call_graph=(-g); fi
      perf record -q -F 499 "${call_graph[@]}" -o "$WORK/perf-$target-$round.data" -p "$pids" -- sleep "$DURATION" 2>/dev/null &
      perf_pid=$!
    fi
    trace_pid=''
    if [ -n "${GATEWAY_PERF_SYSCALLS:-}" ]; then
      perf trace -s -p "$pids" -o "$WORK/syscalls-$target-$round.raw" -- sleep "$DURATION" 2>/dev/null &
      trace_pid=$!
    fi
    read -r vol_before invol_before < <(ctx_switches "$cpu_pid")
    cpu_before=$(cpu_ticks "$cpu_pid")
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 30s --latency -s "$WORK/post.lua" "$url" > "$out" 2>&1
    cpu_after=$(cpu_ticks "$cpu_pid")
    read -r vol_after invol_after < <(ctx_switches "$cpu_pid")
    if [ -n "$perf_pid" ]; then
      wait "$perf_pid" || true
      perf report -i "$WORK/perf-$target-$round.data" --no-children --no-inline --sort dso,symbol --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep '%' | head -40 > "$WORK/perf-$target-$round.txt" || true
      export GATEWAY_PERF_KEEP=1
    fi
    requests=$(awk '/requests in/ {print $1}' "$out")
    if [ -n "$trace_pid" ]; then
      wait "$trace_pid" || true
      if [ -s "$WORK/syscalls-$target-$round.raw" ]; then
        # Per syscall name: calls over all the proxy's threads, then per request.
        awk -v r="${requests:-0}" '$2 ~ /^[0-9]+$/ && $1 ~ /^[a-z_0-9]+$/ {n[$1] += $2}
          END {for (k in n) {t += n[k]; printf "%-20s %10d %8.2f\n", k, n[k], (r > 0 ? n[k] / r : 0)}
               printf "%-20s %10d %8.2f\n", "total", t, (r > 0 ? t / r : 0)}' \
          "$WORK/syscalls-$target-$round.raw" | sort -k2 -n -r > "$WORK/syscalls-$target-$round.txt"
        echo "syscalls round=$round target=$target per_request: $(awk 'NR <= 8 {printf "%s=%s ", $1, $3}' "$WORK/syscalls-$target-$round.txt")"
      else
        echo "syscalls round=$round target=$target: perf trace recorded nothing (is perf installed and allowed?)" >&2
      fi
      export GATEWAY_PERF_KEEP=1
    fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$out")
    sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
    # CPU per request of the proxy itself (not the upstream, not wrk): a figure that depends
    # far less on what else the machine runs than requests per second do.
    cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v r="${requests:-0}" -v hz="$(getconf CLK_TCK)" \
      'BEGIN {printf "%.1f", (r > 0 ? t * 1e6 / hz / r : 0)}')
    # Context switches per request of the proxy's threads: waiting (voluntary) and preempted
    # (involuntary); the second grows when the proxy's threads compete with wrk and the upstream.
    ctxsw=$(awk -v v=$((vol_after - vol_before)) -v n=$((invol_after - invol_before)) -v r="${requests:-0}" \
      'BEGIN {printf "%.2f/%.2f", (r > 0 ? v / r : 0), (r > 0 ? n / r : 0)}')
    RPS[$target]="${RPS[$target]:-} $rps"
    CPU[$target]="${CPU[$target]:-} $cpu_us"
    P99[$target]="${P99[$target]:-} $p99"
    printf 'round=%s %-13s rps=%-9s p99_ms=%-8s cpu_us_per_req=%-7s ctxsw_vol/invol_per_req=%-10s requests=%-8s non2xx=%s socket_errors=%s load=%s\n' \
      "$round" "$target" "$rps" "$p99" "$cpu_us" "$ctxsw" "$requests" "${non2xx:-0}" "${sockerr:-0}" "$(cut -d' ' -f1 /proc/loadavg)"
    if [ "${non2xx:-0}" -ne 0 ] || [ "${sockerr:-0}" -ne 0 ]; then
      echo "FAIL via $target: every response must be 200 (see $out)" >&2
      failures=$((failures + 1))
    fi
  done
done
for key in "${!RPS[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
  RPS[$key]=$(median ${RPS[$key]}); P99[$key]=$(median ${P99[$key]}); CPU[$key]=$(median ${CPU[$key]})
done
ratio=$(awk -v e="${RPS[edge]}" -v n="${RPS[nginx]}" 'BEGIN {printf "%.2f", (n > 0 ? e / n : 0)}')
echo "== results: medians of $ROUNDS round(s) (wrk -t$THREADS -c$CONNS -d${DURATION}s after ${WARMUP}s warm-up; POST of a 1 KiB JSON body)"
printf '%-28s %12s %10s %16s\n' target rps p99 cpu_us_per_req
printf '%-28s %12s %10s %16s\n' "nginx reverse proxy" "${RPS[nginx]}" "${P99[nginx]}ms" "${CPU[nginx]}"
printf '%-28s %12s %10s %16s\n' "edge (JWT ES256, scope, owner, OpenAPI, rate limit)" "${RPS[edge]}" "${P99[edge]}ms" "${CPU[edge]}"
if [ -n "${EDGE_PLAIN_URL:-}" ]; then
  printf '%-28s %12s %10s %16s\n' "edge as a plain proxy (public route)" "${RPS[edge_plain]}" "${P99[edge_plain]}ms" "${CPU[edge_plain]}"
fi
for target in bare_hyper bare_percore bare_httparse; do
  if [ -n "${BARE_URL[$target]:-}" ]; then
    printf '%-28s %12s %10s %16s\n' "$target (sase-bare-proxy)" "${RPS[$target]}" "${P99[$target]}ms" "${CPU[$target]}"
  fi
done
if [ -n "${EDGE_B_URL:-}" ]; then
  printf '%-28s %12s %10s %16s\n' "edge_b ($GATEWAY_PERF_COMPARE_BIN)" "${RPS[edge_b]}" "${P99[edge_b]}ms" "${CPU[edge_b]}"
  awk -v rb="${RPS[edge_b]}" -v ra="${RPS[edge]}" -v cb="${CPU[edge_b]}" -v ca="${CPU[edge]}" \
    'BEGIN {printf "compare edge_b/edge rps=%.3f cpu_us_per_req=%.3f\n", (ra > 0 ? rb / ra : 0), (ca > 0 ? cb / ca : 0)}'
fi
for target in edge_plain bare_hyper bare_percore bare_httparse; do
  if [ -n "${RPS[$target]:-}" ]; then
    awk -v t="$target" -v e="${RPS[$target]}" -v n="${RPS[nginx]}" \
      'BEGIN {printf "rps_ratio_vs_nginx_proxy %s=%.2f\n", t, (n > 0 ? e / n : 0)}'
  fi
done
if [ -n "${GATEWAY_PERF_CALLGRIND:-}" ]; then
  # Instructions per request: the same edge binary under callgrind, in its own stack, driven by
  # wrk after a warm-up; counters zeroed before and dumped after the measured seconds. The count
  # barely moves with the machine's load, so it judges a change where rps and CPU time cannot.
  # valgrind hides SHA-NI, so SHA-256 is counted in software (the audit chain and the token
  # cache's hash weigh more here than on the CPU).
  bins_but_edge "$WORK/bin-cg"
  # One process to count: no jemalloc background thread, so the edge does not execute itself
  # again (which would leave valgrind).
  printf '#!/bin/sh\nexport MALLOC_CONF=background_thread:false SASE_EDGE_REEXEC_SINGLE_THREADED=1\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.out.%%p %s/sase-edge "$@"\n' \
    "$WORK" "$BIN" > "$WORK/bin-cg/sase-edge"
  chmod +x "$WORK/bin-cg/sase-edge"
  serve_edge edge_cg "$WORK/bin-cg"
  wait_ok "$STACK_URL"
  wrk -t1 -c8 -d3s --timeout 30s -s "$WORK/post.lua" "$STACK_URL" > "$WORK/wrk-edge_cg-warmup.txt"
  callgrind_control -z "$STACK_PID" > /dev/null 2>&1
  wrk -t1 -c8 -d"${GATEWAY_PERF_CALLGRIND_SECONDS:-20}s" --timeout 30s -s "$WORK/post.lua" "$STACK_URL" \
    > "$WORK/wrk-edge_cg.txt"
  callgrind_control -d "$STACK_PID" > /dev/null 2>&1
  cg_requests=$(awk '/requests in/ {print $1}' "$WORK/wrk-edge_cg.txt")
  cg_out=$(find "$WORK" -maxdepth 1 -name "callgrind.out.$STACK_PID.*" | head -1)
  callgrind_annotate --inclusive=yes "$cg_out" > "$WORK/callgrind-inclusive.txt" 2>/dev/null
  cg_total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$WORK/callgrind-inclusive.txt")
  if grep -q 'Non-2xx' "$WORK/wrk-edge_cg.txt" || [ -z "$cg_total" ] || [ "${cg_requests:-0}" -eq 0 ]; then
    echo "FAIL via edge_cg: no count, or responses other than 200 (see $WORK/wrk-edge_cg.txt)" >&2
    failures=$((failures + 1))
  else
    echo "edge instructions_per_request=$((cg_total / cg_requests)) (callgrind, $cg_requests requests; by function: $WORK/callgrind-inclusive.txt)"
  fi
  export GATEWAY_PERF_KEEP=1
fi
echo "edge_pid=$EDGE_PID load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$failures" -ne 0 ]; then
  echo "gateway.sh: $failures measurement(s) had responses other than 200" >&2
  exit 1
fi
status=0
if awk -v r="$ratio" -v m="$MIN_RATIO" 'BEGIN {exit !(r < m)}'; then
  echo "FAIL the edge served fewer requests per second than $MIN_RATIO x nginx: ratio $ratio" >&2
  status=1
fi
echo "gateway_rps_ratio_vs_nginx_proxy=$ratio"
exit "$status"
