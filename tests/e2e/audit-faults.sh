#!/usr/bin/env bash
# Audit delivery under faults, against the real binaries (control plane on SQLite, an enrolled
# edge, the sample app): requests stream through the edge while the edge, then the control
# plane, then both are SIGKILLed and restarted; every answered request must be stored exactly
# once with an intact chain. Then the spool bound with the control plane away: `alert` keeps
# serving and reports exactly what it dropped, `fail-closed` refuses with 503 and reports what
# it refused. Ends with
#   audit_faults events=<n> lost=0 duplicated=0
#   AUDIT_FAULTS_PER_PHASE=3500  events between faults (3 faults + a tail: >= 10,000 in all)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-audit-faults.XXXXXX)
out=$(mktemp /tmp/sase-audit-faults-out.XXXXXX)
set +e
"$BIN/sase-audit-faults" --bin-dir "$BIN" --work-dir "$WORK" \
  --per-phase "${AUDIT_FAULTS_PER_PHASE:-3500}" | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" -ne 0 ]; then
  echo "audit-faults.sh: failed (exit $rc); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK"
case "$last" in
  "audit_faults events="*" lost=0 duplicated=0") ;;
  *) echo "audit-faults.sh: unexpected result: $last" >&2; exit 1 ;;
esac
