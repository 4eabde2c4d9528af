#!/usr/bin/env bash
# OWASP API Security Top 10 (2023) end to end (sase-owasp-top10): a deliberately vulnerable API
# (sase-vuln-api, one classic flaw per risk) is attacked directly — each attack must work — and
# through a real control plane + enrolled edge whose policy uses one control per risk — each
# attack must be stopped by that control. One row per risk, then
#   owasp_api_top10 stopped=<k> of=10
# and a non-zero exit unless k = 10.
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/sase-owasp-top10.XXXXXX)
if "$TARGET/$PROFILE/sase-owasp-top10" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "owasp-top10.sh: failed; logs kept in $WORK (control.log, edge.log, vuln-api.log)" >&2
  exit $status
fi
