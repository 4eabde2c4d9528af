#!/usr/bin/env bash
# Policy signing-key rotation with overlap (issue 11): control plane + enrolled edge; the
# next key is announced (the edge trusts both), a policy signed with the old key still applies,
# activation republishes signed with the new key (the edge retires the old one), a later policy
# applies, a bundle signed with the retired key is refused by the edge, a new enrolment pins
# the new key; refused for a customer admin, audited. Ends with
#   key_rotation passed=<n> failed=0
# Driver: tests/support/src/bin/sase-secrets-e2e.rs (rotation).
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-key-rotation.XXXXXX)
out=$(mktemp /tmp/sase-key-rotation-out.XXXXXX)
set +e
"$BIN/sase-secrets-e2e" --bin-dir "$BIN" --work-dir "$WORK" rotation | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" = 0 ] && [[ "$last" =~ ^key_rotation\ passed=[0-9]+\ failed=0$ ]]; then
  rm -rf "$WORK"
  exit 0
fi
echo "key-rotation.sh: failed; logs kept in $WORK" >&2
exit 1
