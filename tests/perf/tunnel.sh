#!/usr/bin/env bash
# Tunnel throughput (issue 5): iperf3 (Debian) through the edge's tunnel and through a
# wireguard-go <-> wireguard-go tunnel on the same namespace topology, in one run:
#
#   client ns: wireguard-go "A" (peer: sase-edge)  and  wireguard-go "B" (peer: wireguard-go E)
#   edge ns:   sase-edge (release; peers from a real control plane via sase-ztna-stack)
#              and wireguard-go "E"; IP forwarding on
#   lan ns:    iperf3 server on 10.77.0.10 (reached through A / the edge) and 10.77.0.20
#              (reached through B / wireguard-go E)
#
# The same client-side wireguard-go serves both paths, so the difference is the edge side.
# One and four streams per path, TUNNEL_PERF_SECONDS each (default 10). Then a flood of
# handshake initiations from a known peer key (sase-tunnel-flood) for the handshakes per second
# the edge answers at its default limit (1000/s; above it, cookie replies, counted).
#
# Ends with `tunnel_throughput_ratio_vs_wireguard_go=<r>`, r = (edge 1-stream + edge 4-stream)
# / (wireguard-go 1-stream + wireguard-go 4-stream). Target r >= 1.0.
#
#   sudo tests/perf/tunnel.sh
#   TUNNEL_PERF_SECONDS=2 SASE_PROFILE=debug sudo tests/perf/tunnel.sh   # smoke
set -euo pipefail
cd "$(dirname "$0")/../.."
STARTED=$SECONDS
SECS=${TUNNEL_PERF_SECONDS:-10}
PROFILE=${SASE_PROFILE:-release}

SETUP_EXTRA="wireguard-go wireguard-tools iproute2 iputils-ping jq iperf3" scripts/setup.sh >/dev/null
# The edge is built with $PROFILE; the control plane and drivers are not measured (debug).
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p sase-edge --bin sase-edge
fi
scripts/build-bins.sh
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

umask 077
ID=$$
NS_C=sase-pc-$ID
NS_E=sase-pe-$ID
NS_L=sase-pl-$ID
WG_A=spa$ID
WG_B=spb$ID
WG_E=spe$ID
EDGE_IP=172.31.252.1
CLIENT_IP=172.31.252.2
WORK=$(mktemp -d /tmp/sase-tunnel-perf.XXXXXX)
chmod 755 "$WORK"
PIDS=()
STACK_PID=

cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "$STACK_PID" ] && kill "$STACK_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "$NS_C" "$NS_E" "$NS_L"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -f /var/run/wireguard/{$WG_A,$WG_B,$WG_E}.sock
  rm -rf "$WORK"
}
trap cleanup EXIT
in_c() { ip netns exec "$NS_C" "$@"; }
in_e() { ip netns exec "$NS_E" "$@"; }
in_l() { ip netns exec "$NS_L" "$@"; }
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- topology ------------------------------------------------------------------------------------
for ns in "$NS_C" "$NS_E" "$NS_L"; do ip netns add "$ns"; ip netns exec "$ns" ip link set lo up; done
ip link add "pc$ID" type veth peer name "pe$ID"
ip link set "pc$ID" netns "$NS_C"
ip link set "pe$ID" netns "$NS_E"
ip link add "pl$ID" type veth peer name "pm$ID"
ip link set "pl$ID" netns "$NS_L"
ip link set "pm$ID" netns "$NS_E"
in_c ip addr add "$CLIENT_IP/30" dev "pc$ID"
in_e ip addr add "$EDGE_IP/30" dev "pe$ID"
in_e ip addr add 10.77.0.1/24 dev "pm$ID"
in_l ip addr add 10.77.0.10/24 dev "pl$ID"
in_l ip addr add 10.77.0.20/24 dev "pl$ID"
for l in "pc$ID:$NS_C" "pe$ID:$NS_E" "pm$ID:$NS_E" "pl$ID:$NS_L"; do
  ip netns exec "${l#*:}" ip link set "${l%%:*}" up
done
in_l ip route add default via 10.77.0.1
in_e sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$NS_L" iperf3 -s -p 5201 >"$WORK/iperf-server.log" 2>&1 &
PIDS+=($!)

for k in a b e probe; do wg genkey >"$WORK/$k.key"; wg pubkey <"$WORK/$k.key" >"$WORK/$k.pub"; done

# --- the edge (sase-edge, $PROFILE) with its peers from a control plane ----------------------------
mkdir -p "$WORK/bin"
ln -s "$TARGET/debug/sase-control" "$WORK/bin/sase-control"
ln -s "$TARGET/$PROFILE/sase-edge" "$WORK/bin/sase-edge"
jq -n --arg a "$(cat "$WORK/a.pub")" --arg p "$(cat "$WORK/probe.pub")" '{tunnel: {peers: [
  {name: "perf-client", public_key: $a, address: "100.96.0.2",
   rules: [{destination: "10.77.0.10/32", protocol: "tcp", ports: "5201"},
           {destination: "10.77.0.10/32", protocol: "icmp"}]},
  {name: "probe", public_key: $p, address: "100.96.0.3", rules: []}]}}' >"$WORK/policy.json"
mkfifo "$WORK/cmd"
ip netns exec "$NS_E" "$TARGET/debug/sase-ztna-stack" --bin-dir "$WORK/bin" --work-dir "$WORK/stack" \
  --policy "$WORK/policy.json" --edge-arg=--tunnel-listen="$EDGE_IP:51820" \
  <"$WORK/cmd" >"$WORK/stack.out" 2>"$WORK/stack.err" &
STACK_PID=$!
exec 3>"$WORK/cmd"
if ! wait_for 120 grep -q '^ready' "$WORK/stack.out"; then
  cat "$WORK/stack.out" "$WORK/stack.err"; tail -20 "$WORK/stack/edge.log" 2>/dev/null; exit 1
fi
EDGE_PUB=$(grep '^ready' "$WORK/stack.out" | sed 's/.*tunnel_public_key=\([^ ]*\).*/\1/')

# --- wireguard-go interfaces ----------------------------------------------------------------------
start_wg() { # start_wg <ns> <ifname>
  ip netns exec "$1" env WG_PROCESS_FOREGROUND=1 wireguard-go "$2" >"$WORK/$2.log" 2>&1 &
  PIDS+=($!)
  wait_for 10 test -S "/var/run/wireguard/$2.sock" || { cat "$WORK/$2.log"; exit 1; }
}
start_wg "$NS_C" "$WG_A"
start_wg "$NS_C" "$WG_B"
start_wg "$NS_E" "$WG_E"
printf '[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:51820\nAllowedIPs = 10.77.0.10/32\n' \
  "$(cat "$WORK/a.key")" "$EDGE_PUB" "$EDGE_IP" >"$WORK/a.conf"
printf '[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:51821\nAllowedIPs = 10.77.0.20/32\n' \
  "$(cat "$WORK/b.key")" "$(cat "$WORK/e.pub")" "$EDGE_IP" >"$WORK/b.conf"
printf '[Interface]\nPrivateKey = %s\nListenPort = 51821\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 100.97.0.2/32\n' \
  "$(cat "$WORK/e.key")" "$(cat "$WORK/b.pub")" >"$WORK/e.conf"
in_c wg setconf "$WG_A" "$WORK/a.conf"
in_c wg setconf "$WG_B" "$WORK/b.conf"
in_e wg setconf "$WG_E" "$WORK/e.conf"
in_c ip addr add 100.96.0.2/32 dev "$WG_A"
in_c ip addr add 100.97.0.2/32 dev "$WG_B"
in_e ip addr add 100.97.0.1/24 dev "$WG_E"
in_c ip link set "$WG_A" up
in_c ip link set "$WG_B" up
in_e ip link set "$WG_E" up
in_c ip route add 10.77.0.10/32 dev "$WG_A" src 100.96.0.2
in_c ip route add 10.77.0.20/32 dev "$WG_B" src 100.97.0.2

wait_for 15 in_c ping -c 1 -W 1 10.77.0.10 || { echo "no path through the edge" >&2; tail -20 "$WORK/stack/edge.log"; exit 1; }
wait_for 15 in_c ping -c 1 -W 1 10.77.0.20 || { echo "no path through wireguard-go" >&2; exit 1; }

gbits() { # gbits <dst> <streams>: received Gbit/s
  local out
  out=$(in_c iperf3 -c "$1" -p 5201 -t "$SECS" -P "$2" -J 2>/dev/null) || { echo 0; return; }
  jq -r '.end.sum_received.bits_per_second / 1e9 | . * 1000 | round / 1000' <<<"$out"
}
echo "--- tunnel throughput: iperf3 ${SECS}s per run, edge=$PROFILE, $(nproc) cores (shared), wireguard-go $(wireguard-go --version 2>/dev/null | awk '{print $NF}' | head -1)"
EDGE_1=$(gbits 10.77.0.10 1)
echo "edge_1_stream_gbps=$EDGE_1"
WG_1=$(gbits 10.77.0.20 1)
echo "wireguard_go_1_stream_gbps=$WG_1"
EDGE_4=$(gbits 10.77.0.10 4)
echo "edge_4_streams_gbps=$EDGE_4"
WG_4=$(gbits 10.77.0.20 4)
echo "wireguard_go_4_streams_gbps=$WG_4"

in_c "$TARGET/debug/sase-tunnel-flood" --edge "$EDGE_IP:51820" --edge-public-key "$EDGE_PUB" \
  --peer-private-key "$(cat "$WORK/probe.key")" flood --seconds "$(( SECS < 5 ? SECS : 5 ))" >"$WORK/flood.out"
echo "handshake flood (one sender, edge limit 1000/s): $(cat "$WORK/flood.out")"
echo "edge_handshakes_per_s=$(sed -n 's/.*handshakes_per_s=\([0-9]*\).*/\1/p' "$WORK/flood.out") edge_cookie_replies_per_s=$(sed -n 's/.*cookies_per_s=\([0-9]*\).*/\1/p' "$WORK/flood.out")"
sleep 1.2
jq -c '{cookie_replies: .global.cookie_replies, probe_handshakes: .peers.probe.counters.handshakes}' \
  "$WORK/stack/edge/tunnel-status.json" | sed 's/^/edge counters: /'
echo "quit" >&3
echo "--- duration $((SECONDS - STARTED))s"
RATIO=$(jq -n --argjson e1 "$EDGE_1" --argjson e4 "$EDGE_4" --argjson w1 "$WG_1" --argjson w4 "$WG_4" \
  'if ($w1 + $w4) > 0 then ((($e1 + $e4) / ($w1 + $w4)) * 100 | round / 100) else 0 end')
echo "tunnel_throughput_ratio_vs_wireguard_go=$RATIO"
