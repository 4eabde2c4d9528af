#!/usr/bin/env bash
# Interop proof of the sase-tunnel core against a stock WireGuard peer: Debian's wireguard-go,
# configured with `wg setconf` from a standard wg config file, in a client namespace; the core
# (sase-tunnel-interop: the core behind a UDP socket, with a userspace ICMP/UDP echo responder
# for the inner traffic) in an edge namespace; the two joined by a veth pair. Nothing leaves the
# namespaces this script creates; they are removed on exit.
#
# Checks: handshake and ping through the tunnel, UDP echo to an allowed port, an ACL-forbidden
# network and port get nothing, a spoofed inner source gets nothing, random datagrams are
# dropped and the tunnel keeps working, and the core's counters say so.
#
#   sudo tests/e2e/tunnel-interop.sh
#   TUNNEL_SOAK_SECONDS=600 sudo tests/e2e/tunnel-interop.sh   # also ping once a second for
#                               # that long across rekeys and report any unanswered ping
#
# Ends with `tunnel_interop passed=<n> failed=<m>`.
set -euo pipefail
cd "$(dirname "$0")/../.."
STARTED=$SECONDS

SETUP_EXTRA="wireguard-go wireguard-tools iproute2 iputils-ping" scripts/setup.sh >/dev/null
scripts/build-bins.sh
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/sase-tunnel-interop

umask 077
ID=$$
NS_C=sase-tc-$ID
NS_E=sase-te-$ID
VETH_C=stc$ID
VETH_E=ste$ID
WG_IF=swg$ID
EDGE_IP=172.31.254.1
CLIENT_IP=172.31.254.2
PORT=51820
WORK=$(mktemp -d)
EDGE_PID=
WG_PID=

cleanup() {
  [ -n "$WG_PID" ] && kill "$WG_PID" 2>/dev/null || true
  [ -n "$EDGE_PID" ] && kill "$EDGE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_E" 2>/dev/null || true
  rm -f "/var/run/wireguard/$WG_IF.sock"
  rm -rf "$WORK"
}
trap cleanup EXIT

in_c() { ip netns exec "$NS_C" "$@"; }
in_e() { ip netns exec "$NS_E" "$@"; }

PASSED=0
FAILED=0
check() { # check <name> <command...>: passes when the command succeeds
  local name=$1
  shift
  if "$@" >"$WORK/check.out" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$WORK/check.out" | tail -20
  fi
}
refuse() { # refuse <name> <command...>: passes when the command fails
  local name=$1
  shift
  if "$@" >"$WORK/check.out" 2>&1; then
    FAILED=$((FAILED + 1))
    echo "FAIL $name (got through)"
    sed 's/^/     /' "$WORK/check.out" | tail -20
  else
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  fi
}
wait_for() { # wait_for <seconds> <command...>: poll until the command succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- topology: client namespace <-veth-> edge namespace -------------------------------------
ip netns add "$NS_C"
ip netns add "$NS_E"
ip link add "$VETH_C" type veth peer name "$VETH_E"
ip link set "$VETH_C" netns "$NS_C"
ip link set "$VETH_E" netns "$NS_E"
in_c ip link set lo up
in_e ip link set lo up
in_c ip addr add "$CLIENT_IP/30" dev "$VETH_C"
in_e ip addr add "$EDGE_IP/30" dev "$VETH_E"
in_c ip link set "$VETH_C" up
in_e ip link set "$VETH_E" up

wg genkey >"$WORK/edge.key"
wg pubkey <"$WORK/edge.key" >"$WORK/edge.pub"
wg genkey >"$WORK/client.key"
wg pubkey <"$WORK/client.key" >"$WORK/client.pub"

# --- the edge core: ICMP to 10.10.1.0/24 and UDP 10.10.1.10:7 only ---------------------------
# Started directly (not through the in_e function, which would fork a subshell) so that $!
# is the process itself: ip netns exec and env exec their command.
ip netns exec "$NS_E" "$BIN" --listen "$EDGE_IP:$PORT" --private-key-file "$WORK/edge.key" \
  --peer-public-key "$(cat "$WORK/client.pub")" --peer-tunnel-addr 100.64.0.2 \
  --rule icmp:10.10.1.0/24 --rule udp:10.10.1.10/32:7 \
  --stats "$WORK/stats.json" >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
wait_for 20 grep -q '^ready' "$WORK/edge.log" || { cat "$WORK/edge.log"; exit 1; }

# --- the stock peer: wireguard-go + wg, standard config --------------------------------------
ip netns exec "$NS_C" env WG_PROCESS_FOREGROUND=1 wireguard-go "$WG_IF" >"$WORK/wg.log" 2>&1 &
WG_PID=$!
wait_for 10 test -S "/var/run/wireguard/$WG_IF.sock" || { cat "$WORK/wg.log"; exit 1; }
cat >"$WORK/wg.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/client.key")

[Peer]
PublicKey = $(cat "$WORK/edge.pub")
Endpoint = $EDGE_IP:$PORT
AllowedIPs = 10.10.0.0/16
EOF
in_c wg setconf "$WG_IF" "$WORK/wg.conf"
in_c ip addr add 100.64.0.2/32 dev "$WG_IF"
in_c ip addr add 100.64.0.99/32 dev "$WG_IF"
in_c ip link set "$WG_IF" up
in_c ip route add 10.10.0.0/16 dev "$WG_IF" src 100.64.0.2

udp_echo() { # udp_echo <dst> <port>: succeeds when the same bytes come back within 2 s
  in_c python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.bind(("100.64.0.2", 0))
s.sendto(b"sase-tunnel-interop", (sys.argv[1], int(sys.argv[2])))
data, _ = s.recvfrom(2048)
sys.exit(0 if data == b"sase-tunnel-interop" else 1)
PY
}
handshake_done() {
  local t
  t=$(in_c wg show "$WG_IF" latest-handshakes | awk '{print $2}')
  [ -n "$t" ] && [ "$t" -gt 0 ]
}
stats_at_least() { # stats_at_least <jq path> <n>
  [ -f "$WORK/stats.json" ] && [ "$(jq -r "($1 // 0)" "$WORK/stats.json")" -ge "$2" ]
}

echo "--- tunnel interop: wireguard-go $(wireguard-go --version 2>/dev/null | head -1 | awk '{print $NF}') <-> sase-tunnel"
check "ping 10.10.1.1 through the tunnel (handshake + ICMP)" in_c ping -c 3 -i 0.2 -W 3 10.10.1.1
check "wg reports a completed handshake" handshake_done
ping_all() { # ping_all <count> <dst>: succeeds only when every ping is answered
  # `tee /dev/stderr` would reopen (and truncate) a log file that stderr is redirected to.
  local out
  out=$(in_c ping -c "$1" -i 0.2 -W 2 "$2") || true
  printf '%s\n' "$out" >&2
  grep -q ' 0% packet loss' <<<"$out"
}
check "ping 10.10.1.77: 5 of 5 answered" ping_all 5 10.10.1.77
check "UDP echo to allowed 10.10.1.10:7" udp_echo 10.10.1.10 7
refuse "ACL: ICMP to forbidden 10.10.2.1 gets nothing" in_c ping -c 2 -i 0.2 -W 1 10.10.2.1
refuse "ACL: UDP to forbidden port 10.10.1.10:9 gets nothing" udp_echo 10.10.1.10 9
refuse "ACL: UDP to 10.10.1.11:7 (host outside the UDP rule) gets nothing" udp_echo 10.10.1.11 7
refuse "spoofed inner source 100.64.0.99 gets nothing" in_c ping -c 2 -i 0.2 -W 1 -I 100.64.0.99 10.10.1.1
check "500 random datagrams sent to the edge port" in_c python3 -c "
import os, random, socket, time
random.seed(5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(500):
    n = random.choice([0, 1, 31, 32, 64, 92, 148, random.randrange(1, 1400)])
    d = bytearray(os.urandom(n))
    if n >= 4 and i % 2:
        d[0] = random.randrange(1, 5); d[1:4] = b'\0\0\0'
    s.sendto(bytes(d), ('$EDGE_IP', $PORT))
    time.sleep(0.001)  # pace the burst so the edge socket's receive buffer does not overflow
"
check "the tunnel still works after the garbage: 3 of 3 answered" ping_all 3 10.10.1.1
check "counters: ACL denials >= 2 + 1 + 1 (ICMP, UDP port, UDP host)" \
  wait_for 5 stats_at_least '.peer.drops.acl_denied' 4
check "counters: spoofed sources >= 2" wait_for 5 stats_at_least '.peer.drops.spoofed_source' 2
check "counters: garbage dropped and counted (global drops >= 450 of 500)" \
  wait_for 5 stats_at_least '[.global.drops[]] | add' 450
check "counters: delivered >= 12 packets, >= 1 handshake" \
  wait_for 5 bash -c "[ \$(jq '.peer.rx_packets' '$WORK/stats.json') -ge 12 ] && [ \$(jq '.peer.handshakes' '$WORK/stats.json') -ge 1 ]"

if [ "${TUNNEL_SOAK_SECONDS:-0}" -gt 0 ]; then
  echo "--- soak: one ping a second for ${TUNNEL_SOAK_SECONDS}s (rekeys every 120 s)"
  start_hs=$(jq '.peer.handshakes' "$WORK/stats.json")
  # -O prints "no answer yet for icmp_seq=N" for each ping unanswered when the next is due.
  in_c ping -c "$TUNNEL_SOAK_SECONDS" -i 1 -W 2 -O 10.10.1.1 >"$WORK/soak.log" 2>&1 || true
  grep 'no answer yet' "$WORK/soak.log" | sed 's/^/     stall: /' || true
  received=$(grep -oE '[0-9]+ received' "$WORK/soak.log" | awk '{print $1}')
  lost=$((TUNNEL_SOAK_SECONDS - ${received:-0}))
  end_hs=$(jq '.peer.handshakes' "$WORK/stats.json")
  echo "     soak: pings=$TUNNEL_SOAK_SECONDS lost=$lost handshakes=$((end_hs - start_hs))"
  check "soak: no unanswered ping across $((end_hs - start_hs)) handshakes" test "$lost" -eq 0
fi

echo "--- edge counters:"
jq -c '{peer: .peer, global: .global}' "$WORK/stats.json" | sed 's/^/     /'
echo "--- duration $((SECONDS - STARTED))s"
echo "tunnel_interop passed=$PASSED failed=$FAILED"
[ "$FAILED" -eq 0 ]
