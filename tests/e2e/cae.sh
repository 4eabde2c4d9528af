#!/usr/bin/env bash
# Continuous access evaluation (CAEP / RFC 8417 SETs, RFC 8935 push) and API inventory (OWASP
# API9) end to end against the real binaries (sase-cae-e2e): a control plane and an enrolled
# edge; a SET revoking a session reaches an already open keep-alive connection (the time is
# printed and must be at most 1000 ms); bad SETs are refused with RFC 8935 errors; revocations
# reach an edge that reconnects later and survive an edge restart without the control plane;
# the inventory lists shadow and zombie endpoints. Ends with
#   cae_e2e passed=<n> failed=0 caep_revocation_ms=<ms>
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/sase-cae-e2e.XXXXXX)
if "$TARGET/$PROFILE/sase-cae-e2e" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "cae.sh: failed; logs kept in $WORK (control.log, edge*.log)" >&2
  exit $status
fi
