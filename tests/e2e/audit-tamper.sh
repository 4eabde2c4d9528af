#!/usr/bin/env bash
# Audit tamper test against the real binaries (control plane + enrolled edge + sample app), on
# SQLite and then on a throwaway PostgreSQL: requests through the edge become signed, stored
# events; then each case edits the database directly (edit a field, delete, reorder, rewrite the
# chain with recomputed hashes, forge an appended event), exports the audit trail through the
# API and runs `sase-audit verify`, which must fail and name the record. Ends with
#   audit_tamper cases=<n> detected=<n>
# and exits non-zero when any case went undetected.
#   AUDIT_TAMPER_BACKENDS="sqlite"   runs only SQLite (default: "sqlite postgres").
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
total_cases=0
total_detected=0
status=0
for backend in ${AUDIT_TAMPER_BACKENDS:-sqlite postgres}; do
  WORK=$(mktemp -d /tmp/sase-audit-tamper.XXXXXX)
  echo "--- $backend"
  if [ "$backend" = postgres ]; then
    cmd=(scripts/with-postgres.sh bash -c 'SASE_E2E_DATABASE_URL="$SASE_TEST_DATABASE_URL" exec "$@"' _
         "$BIN/sase-audit-tamper" --bin-dir "$BIN" --work-dir "$WORK")
  else
    cmd=("$BIN/sase-audit-tamper" --bin-dir "$BIN" --work-dir "$WORK")
  fi
  # The driver's output is shown as it comes and kept for its last line. Not `tee /dev/stderr`:
  # that reopens, and truncates, a log file that stderr is redirected to (CI's log lost its
  # beginning that way).
  # (Kept outside $WORK: the driver empties its work directory when it starts.)
  driver_out=$(mktemp /tmp/sase-audit-tamper-out.XXXXXX)
  set +e
  "${cmd[@]}" | tee "$driver_out"
  rc=${PIPESTATUS[0]}
  set -e
  out=$(cat "$driver_out")
  rm -f "$driver_out"
  last=$(printf '%s\n' "$out" | tail -n 1)
  cases=$(sed -n 's/^audit_tamper cases=\([0-9]*\) detected=\([0-9]*\)$/\1/p' <<<"$last")
  detected=$(sed -n 's/^audit_tamper cases=\([0-9]*\) detected=\([0-9]*\)$/\2/p' <<<"$last")
  if [ -z "$cases" ] || [ "$rc" -ne 0 ]; then
    echo "audit-tamper.sh: $backend run failed (exit $rc); logs kept in $WORK" >&2
    status=1
    cases=${cases:-5}
    detected=${detected:-0}
  else
    rm -rf "$WORK"
  fi
  total_cases=$((total_cases + cases))
  total_detected=$((total_detected + detected))
done
echo "audit_tamper cases=$total_cases detected=$total_detected"
if [ "$status" -ne 0 ] || [ "$total_detected" -ne "$total_cases" ]; then
  exit 1
fi
