#!/usr/bin/env bash
# The demo: a control plane (SQLite), a sample protected app, and an edge enrolled with a claim
# code, all on loopback. Prints URLs, the admin credentials, example tokens and curl commands;
# Ctrl-C stops everything.
#
#   sudo ./scripts/demo.sh            # state in ./demo-data (kept between runs: delete to reset)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
./scripts/setup.sh
echo "demo: building the web console and the binaries (release)…"
./scripts/build-console.sh
cargo build --release -q -p sase-control -p sase-edge -p sase-testkit
BIN=$ROOT/target/release

DATA=${SASE_DEMO_DATA:-$ROOT/demo-data}
CP_PORT=${SASE_DEMO_CP_PORT:-8443}
APP_PORT=${SASE_DEMO_APP_PORT:-9000}
EDGE_HTTP=${SASE_DEMO_EDGE_HTTP:-8080}
EDGE_HTTPS=${SASE_DEMO_EDGE_HTTPS:-8444}
CP=https://127.0.0.1:$CP_PORT
ISS=https://idp.demo.local
mkdir -p "$DATA"
PASSWORD_FILE=$DATA/admin-password
[ -f "$PASSWORD_FILE" ] || (head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PASSWORD_FILE"; chmod 600 "$PASSWORD_FILE")
export SASE_ADMIN_PASSWORD
SASE_ADMIN_PASSWORD=$(cat "$PASSWORD_FILE")

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped (state kept in $DATA)"
}
trap cleanup INT TERM EXIT

wait_line() { # file needle seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; exit 1; fi
    sleep 0.1
  done
}

: > "$DATA/control.log"
"$BIN/sase-control" serve --data-dir "$DATA/control" --listen "127.0.0.1:$CP_PORT" >> "$DATA/control.log" 2>&1 &
pids+=($!)
wait_line "$DATA/control.log" "sase-control listening" 30
CA=$DATA/control/tls/ca.pem
api() { curl -sS --fail-with-body --cacert "$CA" -H "authorization: Bearer $SESSION" "$@"; }

SESSION=$(curl -sS --fail-with-body --cacert "$CA" -X POST "$CP/api/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$SASE_ADMIN_PASSWORD\"}" | jq -r .session)

: > "$DATA/app.log"
"$BIN/sase-demo-app" --listen "127.0.0.1:$APP_PORT" >> "$DATA/app.log" 2>&1 &
pids+=($!)
wait_line "$DATA/app.log" "listening" 30

"$BIN/sase-token" keygen --out "$DATA/issuer" 2>/dev/null

if [ ! -f "$DATA/edge/device.json" ]; then
  TENANT=$(api -X POST "$CP/api/tenants" -H 'content-type: application/json' -d '{"name":"Demo Customer"}' | jq -r .id)
  SITE=$(api -X POST "$CP/api/tenants/$TENANT/sites" -H 'content-type: application/json' -d '{"name":"Branch 1"}' | jq -r .id)
  CLAIM=$(api -X POST "$CP/api/sites/$SITE/claim-codes" -H 'content-type: application/json' -d '{"ttl_minutes":30}' | jq -r .code)
  echo "demo: claim code $CLAIM for site $SITE"
  "$BIN/sase-edge" enroll --control-plane "$CP" --claim "$CLAIM" --ca-cert "$CA" --data-dir "$DATA/edge" --name demo-edge
fi
TENANT=$(jq -r .tenant_id "$DATA/edge/device.json")

JWKS=$(cat "$DATA/issuer/jwks.json")
cat > "$DATA/policy.json" <<JSON
{
  "issuers": [{
    "id": "demo-idp", "issuer": "$ISS", "audiences": ["orders-api"],
    "algorithms": ["EdDSA"], "keys": {"jwks": $JWKS}
  }],
  "resources": [{
    "name": "orders", "upstream": "http://127.0.0.1:$APP_PORT", "issuers": ["demo-idp"],
    "routes": [
      {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
      {"id": "list-orders", "methods": ["GET"], "path": "/orders", "scopes": ["orders:read"]},
      {"id": "get-order", "methods": ["GET"], "path": "/orders/{orderId}", "scopes": ["orders:read"]},
      {"id": "create-order", "methods": ["POST"], "path": "/orders", "scopes": ["orders:write"]}
    ]
  }]
}
JSON
VERSION=$(api -X PUT "$CP/api/tenants/$TENANT/policy" -H 'content-type: application/json' --data-binary @"$DATA/policy.json" | jq -r .version)

: > "$DATA/edge.log"
"$BIN/sase-edge" run --data-dir "$DATA/edge" --http-listen "127.0.0.1:$EDGE_HTTP" --https-listen "127.0.0.1:$EDGE_HTTPS" >> "$DATA/edge.log" 2>&1 &
pids+=($!)
wait_line "$DATA/edge.log" "sase-edge running" 30
wait_line "$DATA/edge.log" "policy applied\|enforcing the stored policy" 30

READER=$("$BIN/sase-token" mint --key "$DATA/issuer/issuer.pem" --iss "$ISS" --aud orders-api --sub alice --scope "orders:read" --ttl 86400)
WRITER=$("$BIN/sase-token" mint --key "$DATA/issuer/issuer.pem" --iss "$ISS" --aud orders-api --sub bob --scope "orders:read orders:write" --ttl 86400)
printf '%s\n' "$READER" > "$DATA/token-reader.jwt"
printf '%s\n' "$WRITER" > "$DATA/token-writer.jwt"

cat <<TXT

==================================================================================
 SASE demo is running (Ctrl-C stops it)

 Control plane   $CP            (CA: $CA)
   web console   $CP/   (sign in with the admin user below)
   admin user    admin
   password      $SASE_ADMIN_PASSWORD
   session       $SESSION
 Sample app      http://127.0.0.1:$APP_PORT   (direct, unprotected)
 Edge            http://127.0.0.1:$EDGE_HTTP  and  https://127.0.0.1:$EDGE_HTTPS (CA: $DATA/edge/tls/ca.pem)
 Tenant          $TENANT   policy version $VERSION

 Tokens (EdDSA, issuer $ISS):
   reader (orders:read)               \$(cat $DATA/token-reader.jwt)
   writer (orders:read orders:write)  \$(cat $DATA/token-writer.jwt)

 Try:
   curl -s http://127.0.0.1:$EDGE_HTTP/health
   curl -s http://127.0.0.1:$EDGE_HTTP/orders -H "authorization: Bearer \$(cat $DATA/token-reader.jwt)"
   curl -s -X POST http://127.0.0.1:$EDGE_HTTP/orders -H "authorization: Bearer \$(cat $DATA/token-reader.jwt)"   # 403 scope_missing
   curl -s http://127.0.0.1:$EDGE_HTTP/orders                                                              # 401 token_missing
   curl -s http://127.0.0.1:$EDGE_HTTP/admin                                                               # 404 route_not_found
   curl -s --cacert $CA -H "authorization: Bearer $SESSION" "$CP/api/audit?tenant=$TENANT&limit=5" | jq
==================================================================================
TXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; see $DATA/*.log"
