#!/usr/bin/env bash
# Staged policy rollouts end to end (issue 6), against the real binaries: two enrolled edges;
# a rollout that breaks its canary is rolled back automatically and the other edge never
# receives it; a good one is promoted after its window; percentage canaries, a refused
# concurrent rollout and a manual rollback. Ends with
#   rollout_e2e passed=<n> failed=0 rollback_ms=<ms>
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-rollout.XXXXXX)
out=$(mktemp /tmp/sase-rollout-out.XXXXXX)
set +e
"$BIN/sase-rollout-e2e" --bin-dir "$BIN" --work-dir "$WORK" | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" -ne 0 ]; then
  echo "rollout.sh: failed (exit $rc); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
case "$last" in
  "rollout_e2e passed="*" failed=0 "*) ;;
  *) echo "rollout.sh: unexpected result: $last" >&2; exit 1 ;;
esac
