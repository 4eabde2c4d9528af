#!/usr/bin/env bash
# schemathesis (PyPI, in the venv tests/security/schemathesis.sh uses) against the control
# plane's own OpenAPI document (/api/openapi.json): a real sase-control on SQLite, signed in as
# the first admin (MSP owner: every operation is reachable), generating valid and invalid
# requests for every operation. Check: not_a_server_error — no 5xx, whatever the input.
# Ends with
#   schemathesis_control cases=<n> operations=<k> server_errors=0
# and exits non-zero otherwise. Left out: /api/logout (it would end the run's own session) and
# the CAEP push endpoint, whose body is a compact JWT (application/secevent+jwt) that
# schemathesis cannot generate; its parser has a fuzz target (fuzz/, caep_inventory) and the
# CAEP end-to-end test sends it malformed SETs.
#   SCHEMATHESIS_EXAMPLES=<n>  examples per operation and phase (default 50)
#   SCHEMATHESIS_SEED=<n>      seed (default fixed; "random" for none)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q 'version 4\.'; then
  "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4.32,<5'
fi
VENV=$(cd "$VENV" && pwd)

WORK=$(mktemp -d /tmp/sase-schemathesis-cp.XXXXXX)
cleanup() {
  if [ -n "${CP_PID:-}" ]; then kill "$CP_PID" 2>/dev/null || true; wait "$CP_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
SASE_ADMIN_PASSWORD=schemathesis-admin-pw RUST_LOG=warn,sase_control=info \
  "$TARGET/$PROFILE/sase-control" serve --data-dir "$WORK/cp" --listen 127.0.0.1:0 \
  >"$WORK/control.log" 2>&1 &
CP_PID=$!
url=
for _ in $(seq 1 600); do
  url=$(sed -n 's/.*sase-control listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$WORK/control.log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$CP_PID" 2>/dev/null || { cat "$WORK/control.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "schemathesis-control.sh: the control plane did not start" >&2; exit 1; }
CA="$WORK/cp/tls/ca.pem"
session=$(curl -sS --cacert "$CA" -H 'content-type: application/json' \
  -d '{"username":"admin","password":"schemathesis-admin-pw"}' "$url/api/login" \
  | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["session"])')
# A tenant and a site, so that operations on existing objects get past "not found" sometimes.
curl -sS --cacert "$CA" -H "authorization: Bearer $session" -H 'content-type: application/json' \
  -d '{"name":"Schemathesis Co"}' "$url/api/tenants" >/dev/null
SEED=${SCHEMATHESIS_SEED:-20261123}
seed_arg=(--seed "$SEED")
[ "$SEED" = random ] && seed_arg=()
set +e
(cd "$WORK" && "$VENV/bin/st" run "$url/api/openapi.json" --url "$url" \
  --tls-verify "$CA" -H "Authorization: Bearer $session" \
  --exclude-path /api/logout --exclude-path '/api/tenants/{tenant_id}/caep/events' \
  --checks not_a_server_error --mode all \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" "${seed_arg[@]}" \
  --request-timeout 20 --warnings off --no-color \
  --report json --report-json-path "$WORK/report.json") >"$WORK/schemathesis.log" 2>&1
st_status=$?
set -e
if [ ! -s "$WORK/report.json" ]; then
  tail -40 "$WORK/schemathesis.log" >&2
  echo "schemathesis-control.sh: no report; logs kept in $WORK" >&2
  exit 1
fi
summary=$("$VENV/bin/python" - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
server = sum(int(f.get("count", 1)) for f in r.get("failures", []) if "ServerError" in f.get("type", ""))
cases = r.get("test_cases", {}).get("generated", 0)
ops = r.get("operations", {}).get("tested", 0)
errors = r.get("test_cases", {}).get("errored", 0) + len(r.get("errors", []))
print(f"schemathesis_control cases={cases} operations={ops} errors={errors} server_errors={server}")
PY
)
grep -E "^(Test cases:|  [0-9]+ generated)" "$WORK/schemathesis.log" || true
if grep -q ' server_errors=0$' <<<"$summary" && grep -q ' errors=0 ' <<<"$summary"; then
  rm -rf "$WORK"
  trap - EXIT
  cleanup
  echo "${summary/ errors=0/}"
  exit 0
fi
sed -n '/FAILURES/,$p' "$WORK/schemathesis.log" | head -120 >&2
grep -iE 'panic|error' "$WORK/control.log" | tail -20 >&2 || true
echo "${summary/ errors=0/}"
echo "schemathesis-control.sh: failed (exit $st_status); logs kept in $WORK" >&2
exit 1
