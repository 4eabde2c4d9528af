#!/usr/bin/env bash
# Under load (issue 4): the edge holds 10,000 concurrent HTTP/1.1 keep-alive connections (each
# sending a request every 10 s on its one connection) while slowloris attackers from four other
# addresses hold slow-header and slow-body connections, and a legitimate client opens a fresh
# connection 20 times a second. Real binaries: control plane + enrolled edge (release build by
# default) in front of the demo app; the clients come from loopback addresses 127.0.1.x
# (keep-alive), 127.0.2.x (attackers) and 127.0.0.1 (legitimate). Prints what the edge held,
# refused and answered, and ends with
#   keepalive_conns=<held> slowloris_legit_ok=<pct>
# Fails when fewer keep-alive connections than asked were held, or the legitimate success rate
# is under SLOWLORIS_MIN_OK_PCT (default 99).
#
# Environment:
#   SASE_PROFILE=debug             debug build (default release)
#   SLOWLORIS_KEEPALIVE=<n>        keep-alive connections (default 10000; CI smoke: 1000)
#   SLOWLORIS_ATTACKERS_PER_IP=<n> slow connections per attacking address (default 1500; the
#                                  edge's per-address cap is 1024)
#   SLOWLORIS_SECONDS=<s>          measured seconds (default 40; CI smoke: 15)
#   SLOWLORIS_MIN_OK_PCT=<pct>     smallest acceptable legitimate success rate (default 99)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PROFILE=${SASE_PROFILE:-release}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
# 10,000 keep-alive + up to 6,000 attacking connections on the client side, and on the edge two
# descriptors per connection (hyper's and the lingering-close handle).
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "descriptor limit: $(ulimit -n); cores: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
WORK=$(mktemp -d /tmp/sase-slowloris.XXXXXX)
if "$TARGET/$PROFILE/sase-slowloris" --bin-dir "$TARGET/$PROFILE" --work-dir "$WORK" \
  --keepalive "${SLOWLORIS_KEEPALIVE:-10000}" \
  --attackers-per-ip "${SLOWLORIS_ATTACKERS_PER_IP:-1500}" \
  --duration-secs "${SLOWLORIS_SECONDS:-40}" \
  --min-ok-pct "${SLOWLORIS_MIN_OK_PCT:-99}"; then
  rm -rf "$WORK"
else
  status=$?
  echo "slowloris.sh: failed; logs kept in $WORK (control.log, edge.log)" >&2
  exit $status
fi
