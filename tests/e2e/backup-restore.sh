#!/usr/bin/env bash
# Backup and restore of the control plane (issue 11): control plane + enrolled edge + sample app;
# audit events through the edge; `sase-control backup` while the control plane runs; stop; the
# data dir is moved away and the backup restored onto a fresh data dir ("fresh machine"); the
# restored control plane starts at the same address with the operator's key; the edge
# reconnects and stays enrolled, a policy push reaches it, its new events continue the chain
# (no gap alert) and the exported trail verifies with `sase-audit verify`. Then the same on a
# throwaway PostgreSQL (scripts/with-postgres.sh) when its binaries are installed, with
# pg_dump + pg_restore into a fresh database. Ends with (both runs together)
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
passed=0
failed=0
ok=1
run() { # run <name> <command...>: one driver run; adds its figures to the totals
  local name=$1 rc last
  shift
  echo "--- $name"
  set +e
  "$@" | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  last=$(tail -n 1 "$out")
  if [ "$rc" = 0 ] && [[ "$last" =~ ^backup_restore\ passed=([0-9]+)\ failed=0$ ]]; then
    passed=$((passed + BASH_REMATCH[1]))
  else
    ok=0
    failed=$((failed + $(sed -n 's/^backup_restore passed=[0-9]* failed=\([0-9]*\)$/\1/p' <<<"$last" | grep . || echo 1)))
  fi
}
run sqlite "$BIN/sase-secrets-e2e" --bin-dir "$BIN" --work-dir "$WORK/sqlite" backup-restore
# PostgreSQL: pg_dump beside `sase-control backup`, the database dropped, pg_restore into a new
# database, the files restored onto a fresh data dir (docs/OPERATIONS.md).
if [ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${PG_BIN:-}" ]; then
  run postgresql scripts/with-postgres.sh bash -c \
    'SASE_E2E_DATABASE_URL="$SASE_TEST_DATABASE_URL" exec "$@"' _ \
    "$BIN/sase-secrets-e2e" --bin-dir "$BIN" --work-dir "$WORK/postgres" backup-restore
else
  echo "PostgreSQL binaries not installed: the PostgreSQL run is skipped"
fi
rm -f "$out"
if [ "$ok" = 1 ]; then
  rm -rf "$WORK"
else
  echo "backup-restore.sh: failed; logs kept in $WORK" >&2
fi
echo "backup_restore passed=$passed failed=$failed"
[ "$ok" = 1 ]
