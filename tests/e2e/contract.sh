#!/usr/bin/env bash
# API contract end-to-end test (OWASP API3 / API8) against the real binaries: a control plane
# and an enrolled edge enforce tests/e2e/data/contract-policy.yaml (an inline OpenAPI 3.1
# document) in front of the demo app's deliberately careless "users" API. For each check the
# attack is shown working directly against the app and stopped through the edge (status,
# reason, JSON pointer in the message and in the audit event): mass assignment, wrong types,
# missing required fields, parameters, content types, leaked response properties, upstream
# stack traces, security headers, CORS; and the control plane refusing contracts it cannot
# enforce. Ends with
#   contract_e2e passed=<n> failed=0
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/sase-contract-e2e.XXXXXX)
if "$TARGET/$PROFILE/sase-contract-e2e" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK" \
  --policy tests/e2e/data/contract-policy.yaml; then
  rm -rf "$WORK"
else
  status=$?
  echo "contract.sh: failed; logs kept in $WORK (control.log, edge.log)" >&2
  exit $status
fi
