#!/usr/bin/env bash
# schemathesis (PyPI, in a venv under target/) against the gateway-protected users API of
# tests/e2e/data/contract-policy.yaml: a real control plane and enrolled edge in front of the
# demo app's deliberately careless users API (which crashes on bad ids and bodies and accepts
# any property). schemathesis generates valid and invalid requests from the OpenAPI document
# (as the edge enforces it: strict_properties closes objects) and sends them through the edge:
#   - not_a_server_error: no 5xx from the edge (an invalid input reaching the app would come
#     back as 500 upstream_error);
#   - negative_data_rejection: every schema-invalid request refused with a 4xx;
#   - positive_data_acceptance: schema-valid requests are not refused.
# Ends with
#   schemathesis cases=<n> server_errors=0 accepted_invalid=0 rejected_valid=0 ... \
#     direct_server_errors=<k> direct_accepted_invalid=<m>
# where the direct_* figures come from the same run straight against the app first (they must
# not be 0: the run has to find there what the edge stops). Exits non-zero otherwise. Failures
# are counted as schemathesis groups them (unique per operation and check). Default run well
# under 2 minutes.
#   SCHEMATHESIS_EXAMPLES=<n>  hypothesis examples per operation and phase (default 50)
#   SCHEMATHESIS_SEED=<n>      seed (default fixed, for reproducible runs; "random" for none)
#   SCHEMATHESIS_VENV=dir      where the venv lives (default target/schemathesis-venv)
#   SASE_PROFILE=release       uses release binaries
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

WORK=$(mktemp -d /tmp/sase-schemathesis.XXXXXX)
SEED=${SCHEMATHESIS_SEED:-20261123}
seed_arg=(--seed "$SEED")
[ "$SEED" = random ] && seed_arg=()
# The driver starts the stack, writes $OPENAPI (servers: the edge), runs schemathesis with
# EDGE_URL set, then stops the stack; the summary is read from schemathesis' JSON report.
set +e
"$TARGET/$PROFILE/sase-contract-e2e" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK" \
  --policy tests/e2e/data/contract-policy.yaml --exec bash -c '
    cd "$(dirname "$3")" || exit 1  # schemathesis keeps a .schemathesis/ cache in its cwd
    run() {
      "$0" run "$OPENAPI" --url "$1" \
        --checks not_a_server_error,negative_data_rejection,positive_data_acceptance \
        --mode all --max-examples "$2" ${3:+--seed "$3"} \
        --request-timeout 10 --warnings off --no-color \
        --report json --report-json-path "$4"
    }
    # First straight against the careless app, to show the run finds what the edge stops.
    run "$APP_URL" "$1" "$2" "$4" >"$5" 2>&1
    run "$EDGE_URL" "$1" "$2" "$3"' \
  "$VENV/bin/st" "${SCHEMATHESIS_EXAMPLES:-50}" "${seed_arg[1]:-}" "$WORK/report.json" \
  "$WORK/report-direct.json" "$WORK/schemathesis-direct.log" \
  >"$WORK/schemathesis.log" 2>&1
st_status=$?
set -e
if [ ! -s "$WORK/report.json" ]; then
  tail -40 "$WORK/schemathesis.log" >&2
  echo "schemathesis.sh: no report; logs kept in $WORK" >&2
  exit 1
fi
summary=$("$VENV/bin/python" - "$WORK/report.json" "$WORK/report-direct.json" <<'PY'
import json, sys

def counts(path):
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        return None
    # Failures as schemathesis groups them (unique per operation and check).
    c = {"server": 0, "negative": 0, "positive": 0, "other": 0}
    for f in r.get("failures", []):
        kind = f.get("type", "")
        n = int(f.get("count", 1))
        if "ServerError" in kind:
            c["server"] += n
        elif "NegativeData" in kind:
            c["negative"] += n
        elif "PositiveData" in kind:
            c["positive"] += n
        else:
            c["other"] += n
    c["cases"] = r.get("test_cases", {}).get("generated", 0)
    c["errors"] = r.get("test_cases", {}).get("errored", 0) + len(r.get("errors", []))
    c["operations"] = r.get("operations", {}).get("tested", 0)
    return c

edge, direct = counts(sys.argv[1]), counts(sys.argv[2])
d = direct or {"server": -1, "negative": -1}
print(f"schemathesis cases={edge['cases']} server_errors={edge['server']} "
      f"accepted_invalid={edge['negative']} rejected_valid={edge['positive']} "
      f"other_failures={edge['other']} errors={edge['errors']} operations={edge['operations']} "
      f"direct_server_errors={d['server']} direct_accepted_invalid={d['negative']}")
PY
)
grep -E "^(Test cases:|  [0-9]+ generated)" "$WORK/schemathesis.log" || true
echo "$summary"
# Against the app itself the same run must find the crashes and the accepted invalid input
# (else the run proves nothing about the edge).
if grep -qE ' direct_server_errors=(0|-1) | direct_accepted_invalid=(0|-1) ' <<<"$summary "; then
  echo "schemathesis.sh: the run found nothing against the unprotected app; logs kept in $WORK" >&2
  exit 1
fi
if [ "$st_status" -ne 0 ] || ! grep -q ' server_errors=0 accepted_invalid=0 rejected_valid=0 other_failures=0 errors=0 ' <<<"$summary "; then
  sed -n '/FAILURES/,$p' "$WORK/schemathesis.log" | head -80 >&2
  echo "schemathesis.sh: failed (exit $st_status); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
