#!/usr/bin/env bash
# Dry runs of draft policies end to end (issue 6), against the real binaries: requests with
# tokens of different scopes are recorded through a real edge, then drafts are replayed
# against the trail; each report must name exactly the requests whose decision changes. Ends
#   dryrun_e2e passed=<n> failed=0
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-dryrun.XXXXXX)
out=$(mktemp /tmp/sase-dryrun-out.XXXXXX)
set +e
"$BIN/sase-dryrun-e2e" --bin-dir "$BIN" --work-dir "$WORK" | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" -ne 0 ]; then
  echo "dryrun.sh: failed (exit $rc); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
case "$last" in
  "dryrun_e2e passed="*" failed=0") ;;
  *) echo "dryrun.sh: unexpected result: $last" >&2; exit 1 ;;
esac
