#!/usr/bin/env bash
# Rate limits (OWASP API4), flow limits (API6), route size limits and timeouts, and a budget
# shared by two edges through a real Redis, against the real binaries: a control plane, two
# edges of one tenant, a redis-server started here (Debian package), the demo app as upstream.
# Each refusal is checked in the answer (429 + Retry-After + RateLimit-* headers, 413, 431,
# 504, 503) and in its audit event (reason, the limit named in the detail). Prints the shared
# budget's figures (two edges, N per minute, blocks of B: admitted at most N + B) and ends with
#   limits_e2e passed=<n> failed=0 shared_admitted=<a> shared_budget=<N> shared_block=<B>
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh >/dev/null
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/sase-limits-e2e.XXXXXX)
if "$TARGET/$PROFILE/sase-limits-e2e" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "limits.sh: failed; logs kept in $WORK (control.log, edge.log, edge2.log, redis.log)" >&2
  exit $status
fi
