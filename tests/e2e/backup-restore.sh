#!/usr/bin/env bash
# Backup and restore of the control plane (issue 11): control plane + enrolled edge + sample app;
# audit events through the edge; `sase-control backup` while the control plane runs; stop; the
# data dir is moved away and the backup restored onto a fresh data dir ("fresh machine"); the
# restored control plane starts at the same address with the operator's key; the edge
# reconnects and stays enrolled, a policy push reaches it, its new events continue the chain
# (no gap alert) and the exported trail verifies with `sase-audit verify`. Ends with
#   backup_restore passed=<n> failed=0
# Driver: tests/support/src/bin/sase-secrets-e2e.rs (backup-restore).
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-backup-restore.XXXXXX)
out=$(mktemp /tmp/sase-backup-restore-out.XXXXXX)
set +e
"$BIN/sase-secrets-e2e" --bin-dir "$BIN" --work-dir "$WORK" backup-restore | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" = 0 ] && [[ "$last" =~ ^backup_restore\ passed=[0-9]+\ failed=0$ ]]; then
  rm -rf "$WORK"
  exit 0
fi
echo "backup-restore.sh: failed; logs kept in $WORK" >&2
exit 1
