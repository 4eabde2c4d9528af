#!/usr/bin/env bash
# The web console end to end (issue 8) in Debian's chromium, driven by npm playwright-core
# (no browser download), against real binaries: builds the console (scripts/build-console.sh)
# and then every binary (scripts/build-bins.sh; sase-control embeds the console), starts a
# control plane (SQLite) and the sample app (sase-demo-app), and runs console.test.mjs with
# Node's built-in test runner: sign-in with TOTP, tenant tree, claim code created in the UI and
# a real sase-edge enrolled with it coming online, a 403 through the edge found in the audit
# explorer by its reference id, the export, decommissioning, a screenshot of every page
# (docs/screenshots/<page>.png). Ends with
#   console_e2e passed=<n> failed=0
#   CONSOLE_E2E_PREBUILT=1   uses web-ui/dist/ as it is instead of running build-console.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

if [ "${CONSOLE_E2E_PREBUILT:-0}" != 1 ]; then scripts/build-console.sh; fi
[ -f web-ui/dist/index.html ] || { echo "console: web-ui/dist/ is empty" >&2; exit 1; }
scripts/build-bins.sh
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/debug
[ -x /usr/bin/chromium ] || { echo "console: /usr/bin/chromium is missing: run scripts/setup.sh" >&2; exit 1; }
if [ ! -d tests/console/node_modules/playwright-core ]; then
  (cd tests/console && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null)
fi

WORK=$(mktemp -d /tmp/sase-console-e2e.XXXXXX)
pids=()
keep=1
cleanup() {
  # The edge is started by the tests, which write its pid (killed here too if they crashed).
  [ -f "$WORK/edge.pid" ] && pids+=("$(cat "$WORK/edge.pid")")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 0 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Readiness: a process's log line, bounded in time.
wait_line() { # file pattern seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "console: timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; exit 1
    fi
    sleep 0.1
  done
}

PASSWORD=console-e2e-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
SASE_ADMIN_PASSWORD=$PASSWORD RUST_LOG=info,sqlx=warn "$BIN/sase-control" serve \
  --data-dir "$WORK/control" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  > "$WORK/control.log" 2>&1 &
pids+=($!)
wait_line "$WORK/control.log" "sase-control listening on https://" 60
CP=$(grep -m1 -o 'sase-control listening on https://[0-9.:]*' "$WORK/control.log" | awk '{ print $4 }')

"$BIN/sase-demo-app" --listen 127.0.0.1:0 > "$WORK/app.log" 2>&1 &
pids+=($!)
wait_line "$WORK/app.log" "listening on http://" 30
APP=$(grep -m1 -o 'http://[0-9.:]*' "$WORK/app.log")
"$BIN/sase-token" keygen --out "$WORK/issuer" >/dev/null 2>&1

status=0
(
  cd tests/console
  CONSOLE_E2E_CP=$CP CONSOLE_E2E_CA=$WORK/control/tls/ca.pem NODE_EXTRA_CA_CERTS=$WORK/control/tls/ca.pem \
  CONSOLE_E2E_BIN=$BIN CONSOLE_E2E_WORK=$WORK CONSOLE_E2E_ADMIN_PASSWORD=$PASSWORD \
  CONSOLE_E2E_APP=$APP CONSOLE_E2E_ISSUER=$WORK/issuer CONSOLE_E2E_SHOTS=$ROOT/docs/screenshots \
    node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
) 2>&1 | tee "$WORK/node.log" || status=$?

count() { grep -E "^ℹ $1 [0-9]+" "$WORK/node.log" | awk '{ print $3 }' | tail -1; }
passed=$(count pass); failed=$(count fail); todo=$(count todo)
passed=${passed:-0}; failed=${failed:-0}; todo=${todo:-0}
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  [ "$failed" -ne 0 ] || failed=1
  echo "console: failed; logs kept in $WORK (control.log, app.log, edge.log, node.log)" >&2
  echo "console_e2e passed=$passed failed=$failed"
  exit 1
fi
if [ "$todo" -ne 0 ]; then echo "console: $todo step(s) marked todo above were not run" >&2; fi
keep=0
echo "console_e2e passed=$passed failed=0"
