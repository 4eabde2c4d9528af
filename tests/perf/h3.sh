#!/usr/bin/env bash
# Requests per second over HTTP/3 and over HTTPS/TCP through the real edge, for the same route
# (a public GET with the default WAF settings, to the sample app) and the same client shape:
# sase-h3-load opens N connections (default 8) and keeps one request in flight on each, over
# quinn + h3 (HTTP/3) or hyper HTTP/1.1 on tokio-rustls (TCP), reading every body. Rounds
# alternate tcp, h3, tcp, h3, … (default 3 each) so a drift of the machine's load hits both;
# the figure is the ratio of the medians. The stack is `sase-quic-e2e serve` (control plane +
# enrolled edge + sample app, QUIC mode `inspect`). Ends with
#   h3_rps_ratio_vs_tcp=<r>
#   H3_PERF_SECONDS=<s>     seconds per round (default 10)
#   H3_PERF_ROUNDS=<n>      rounds per transport (default 3)
#   H3_PERF_CONNECTIONS=<n> connections (default 8)
#   SASE_PROFILE            release (default) or debug (the smoke run in scripts/test.sh)
#   H3_PERF_BIN_DIR=<dir>   use the sase-control, sase-edge, sase-demo-app, sase-quic-e2e and
#                           sase-h3-load binaries in <dir> instead of building
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-release}
SECONDS_PER_ROUND=${H3_PERF_SECONDS:-10}
ROUNDS=${H3_PERF_ROUNDS:-3}
CONNS=${H3_PERF_CONNECTIONS:-8}
if [ -n "${H3_PERF_BIN_DIR:-}" ]; then
  # Binaries built (or copied) beforehand: nothing is rebuilt.
  BIN=$H3_PERF_BIN_DIR
else
  if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
  scripts/build-bins.sh $flag
  BIN="target/$PROFILE"
fi
WORK=$(mktemp -d /tmp/sase-h3-perf.XXXXXX)
cat > "$WORK/policy.json" <<'JSON'
{
  "resources": [{
    "name": "app", "upstream": "$UPSTREAM",
    "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
  }],
  "quic": {"mode": "inspect"}
}
JSON
coproc STACK { "$BIN/sase-quic-e2e" serve --bin-dir "$BIN" --work-dir "$WORK/stack" --policy "$WORK/policy.json"; }
STACK_PID=$STACK_PID
cleanup() {
  echo quit >&"${STACK[1]}" 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
read -r -t 180 ready <&"${STACK[0]}" || { echo "h3.sh: the stack did not start (logs: $WORK/stack)" >&2; trap - EXIT; exit 1; }
https=$(sed -n 's/.* https=\([^ ]*\).*/\1/p' <<<"$ready")
udp=$(sed -n 's/.* udp=\([^ ]*\).*/\1/p' <<<"$ready")
ca=$(sed -n 's/.* ca=\([^ ]*\).*/\1/p' <<<"$ready")
echo "h3 vs tcp: $CONNS connections, ${SECONDS_PER_ROUND}s x $ROUNDS rounds each, $PROFILE edge, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
tcp_rps=()
h3_rps=()
for _ in $(seq "$ROUNDS"); do
  for mode in tcp h3; do
    if [ "$mode" = tcp ]; then addr=$https; else addr=$udp; fi
    line=$("$BIN/sase-h3-load" --mode "$mode" --addr "$addr" --ca "$ca" --connections "$CONNS" --seconds "$SECONDS_PER_ROUND")
    echo "  $line"
    errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$line")
    if [ "$errors" != 0 ]; then echo "h3.sh: $mode round had errors" >&2; exit 1; fi
    rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
    if [ "$mode" = tcp ]; then tcp_rps+=("$rps"); else h3_rps+=("$rps"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
tcp_m=$(median "${tcp_rps[@]}")
h3_m=$(median "${h3_rps[@]}")
echo "median rps: tcp=$tcp_m h3=$h3_m"
awk -v h="$h3_m" -v t="$tcp_m" 'BEGIN { printf "h3_rps_ratio_vs_tcp=%.2f\n", h / t }'
