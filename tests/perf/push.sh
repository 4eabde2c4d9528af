#!/usr/bin/env bash
# Policy push latency (issue 6): N simulated edges — real WebSocket clients with genuine device
# certificates, in one process — on one control plane; a policy change must reach all of them.
# Then, on PostgreSQL, a second replica on the same database: edges on B, change made on A
# (fan-out through LISTEN/NOTIFY). Prints p50/p99/max for both and ends with
#   policy_push_p99_ms=<x> edges=<n>
# Exits non-zero when x >= PUSH_MAX_P99_MS (default 1000) or an edge misses a change.
#   PUSH_EDGES=1000  PUSH_ROUNDS=3  SASE_PROFILE=release|debug (default release)
#   PUSH_BACKEND=postgres|sqlite (default postgres: both settings; sqlite: one replica only)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-release}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
EDGES=${PUSH_EDGES:-1000}
# Two sockets per edge on this machine (client and server side), plus the rest.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/sase-push.XXXXXX)
out=$(mktemp /tmp/sase-push-out.XXXXXX)
set +e
if [ "${PUSH_BACKEND:-postgres}" = postgres ]; then
  scripts/with-postgres.sh bash -c 'exec "$0" --bin-dir "$1" --work-dir "$2" --edges "$3" --rounds "$4" --database-url "$SASE_TEST_DATABASE_URL"' \
    "$BIN/sase-push-perf" "$BIN" "$WORK" "$EDGES" "${PUSH_ROUNDS:-3}" | tee "$out"
else
  "$BIN/sase-push-perf" --bin-dir "$BIN" --work-dir "$WORK" --edges "$EDGES" --rounds "${PUSH_ROUNDS:-3}" | tee "$out"
fi
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" -ne 0 ]; then
  echo "push.sh: failed (exit $rc); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
p99=$(sed -n 's/^policy_push_p99_ms=\([0-9.]*\) edges=.*/\1/p' <<<"$last")
[ -n "$p99" ] || { echo "push.sh: no result line" >&2; exit 1; }
if ! awk -v p="$p99" -v max="${PUSH_MAX_P99_MS:-1000}" 'BEGIN { exit !(p < max) }'; then
  echo "push.sh: p99 $p99 ms is not below ${PUSH_MAX_P99_MS:-1000} ms" >&2
  exit 1
fi
