#!/usr/bin/env bash
# Spine end-to-end test against the real binaries (control plane + enrolled edge + sample app).
# Builds what it needs, runs the scenario, and ends with
#   spine_e2e passed=<n> failed=0 policy_propagation_ms=<x> audit_lost=0 audit_duplicated=0
# Exits non-zero when any check fails.
#   SASE_E2E_DATABASE_URL=postgres://…  runs the control plane on PostgreSQL instead of SQLite.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
WORK=$(mktemp -d /tmp/sase-spine-e2e.XXXXXX)
if "target/$PROFILE/sase-spine-e2e" --bin-dir "target/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "spine.sh: failed; logs kept in $WORK (control.log, edge.log, app.log)" >&2
  exit $status
fi
