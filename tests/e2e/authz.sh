#!/usr/bin/env bash
# Authorization guards end-to-end (issue 4: OWASP API1 object ownership, API7 SSRF egress
# allowlist, GraphQL limits) against the real binaries: a control plane and an enrolled edge in
# front of the demo app's careless authz API. Each attack is shown working directly against the
# app, then refused through the edge with the expected status, reason and detail (names, never
# values), and audited with them. Ends with
#   authz_e2e passed=<n> failed=0
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/sase-authz-e2e.XXXXXX)
if "$TARGET/$PROFILE/sase-authz-e2e" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "authz.sh: failed; logs kept in $WORK (control.log, edge.log)" >&2
  exit $status
fi
