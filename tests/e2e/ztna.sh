#!/usr/bin/env bash
# ZTNA end to end (issue 5), part A: the real `sase-edge` terminates WireGuard tunnels and routes
# allowed traffic to the branch LAN through its TUN device. Three network namespaces joined by
# veth pairs (names carry $$, removed on exit):
#
#   client (wireguard-go + wg, Debian) <-veth-> edge (sase-edge + sase-control) <-veth-> lan
#
# The peers reach the edge in a signed policy bundle from a real control plane: the driver
# `sase-ztna-stack` (tests/support, over `stack.rs`) runs inside the edge namespace, enrols the
# edge, publishes the policy with the `tunnel` block, and publishes later versions on command.
#
# Checks, one line each: handshake + ping to an allowed LAN host; TCP (HTTP) to an allowed port;
# a forbidden port, a forbidden host and a spoofed inner source get nothing; 500 random
# datagrams, a replayed handshake initiation and an initiation from an unknown key are dropped
# and counted while the tunnel keeps working; a handshake flood gets cookie replies; a policy
# version without the peer stops its traffic (prints the ms from the push to the first
# unanswered ping: `revocation_ms`).
#
# NOT covered yet (the issue's evidence needs them; later sessions extend this script):
#   - sase-connect (the client does not exist yet) and `export-config` (the wg config here is
#     written by this script, not exported by the control plane);
#   - identity binding (users/devices/sessions in the control plane, address pools): the peers
#     are listed directly in the policy's `tunnel` block; "revocation" here is a policy push
#     without the peer, not the disabling of a user, and reconnecting is not tested;
#   - posture checks;
#   - HTTP from the tunnel through the WAF + gateway pipeline with the tunnel identity (plain
#     routing to the LAN only).
#
#   sudo tests/e2e/ztna.sh            # ends with: ztna_e2e passed=<n> failed=0 revocation_ms=<x>
set -euo pipefail
cd "$(dirname "$0")/../.."
STARTED=$SECONDS

SETUP_EXTRA="wireguard-go wireguard-tools iproute2 iputils-ping jq curl" scripts/setup.sh >/dev/null
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BINS=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE

umask 077
ID=$$
NS_C=sase-zc-$ID
NS_E=sase-ze-$ID
NS_L=sase-zl-$ID
WG_IF=szw$ID
EDGE_IP=172.31.253.1
CLIENT_IP=172.31.253.2
LAN_EDGE=10.77.0.1
LAN_SRV=10.77.0.10
LAN_OTHER=10.77.0.11
TUN_ADDR=100.96.0.2
REPLAY_ADDR=100.96.0.3
PORT=51820
METRICS_PORT=$((20000 + ID % 20000))
WORK=$(mktemp -d /tmp/sase-ztna.XXXXXX)
chmod 755 "$WORK"
STACK_PID=
WG_PID=
SRV_PIDS=()

cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "$WG_PID" ] && kill "$WG_PID" 2>/dev/null || true
  [ -n "$STACK_PID" ] && kill "$STACK_PID" 2>/dev/null || true
  for p in "${SRV_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS_C" 2>/dev/null || true
  ip netns del "$NS_E" 2>/dev/null || true
  ip netns del "$NS_L" 2>/dev/null || true
  rm -f "/var/run/wireguard/$WG_IF.sock"
  if [ "${FAILED:-1}" -eq 0 ] && [ -z "${ZTNA_KEEP:-}" ]; then rm -rf "$WORK"; else echo "ztna.sh: logs kept in $WORK" >&2; fi
}
trap cleanup EXIT

in_c() { ip netns exec "$NS_C" "$@"; }
in_e() { ip netns exec "$NS_E" "$@"; }
in_l() { ip netns exec "$NS_L" "$@"; }

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

# --- topology ----------------------------------------------------------------------------------
for ns in "$NS_C" "$NS_E" "$NS_L"; do ip netns add "$ns"; ip netns exec "$ns" ip link set lo up; done
ip link add "zc$ID" type veth peer name "ze$ID"
ip link set "zc$ID" netns "$NS_C"
ip link set "ze$ID" netns "$NS_E"
ip link add "zl$ID" type veth peer name "zm$ID"
ip link set "zl$ID" netns "$NS_L"
ip link set "zm$ID" netns "$NS_E"
in_c ip addr add "$CLIENT_IP/30" dev "zc$ID"
in_e ip addr add "$EDGE_IP/30" dev "ze$ID"
in_e ip addr add "$LAN_EDGE/24" dev "zm$ID"
in_l ip addr add "$LAN_SRV/24" dev "zl$ID"
in_l ip addr add "$LAN_OTHER/24" dev "zl$ID"
in_c ip link set "zc$ID" up
in_e ip link set "ze$ID" up
in_e ip link set "zm$ID" up
in_l ip link set "zl$ID" up
in_l ip route add default via "$LAN_EDGE"
in_e sysctl -qw net.ipv4.ip_forward=1

# --- the LAN server: HTTP on 8080 (allowed) and 9090 (forbidden) --------------------------------
mkdir -p "$WORK/www" && echo "lan-resource-ok" >"$WORK/www/index.html" && chmod -R a+rX "$WORK/www"
for port in 8080 9090; do
  ip netns exec "$NS_L" python3 -m http.server "$port" --bind 0.0.0.0 --directory "$WORK/www" \
    >"$WORK/http-$port.log" 2>&1 &
  SRV_PIDS+=($!)
done

# --- keys and the policy -------------------------------------------------------------------------
wg genkey >"$WORK/client.key"
wg pubkey <"$WORK/client.key" >"$WORK/client.pub"
wg genkey >"$WORK/replay.key"
wg pubkey <"$WORK/replay.key" >"$WORK/replay.pub"
policy() { # policy <with client peer: 1|0>
  local client=""
  if [ "$1" = 1 ]; then
    client=$(jq -nc --arg k "$(cat "$WORK/client.pub")" --arg a "$TUN_ADDR" --arg srv "$LAN_SRV/32" \
      '{name: "alice-laptop", public_key: $k, address: $a,
        rules: [{destination: $srv, protocol: "icmp"}, {destination: $srv, protocol: "tcp", ports: "8080"}],
        subject: "alice@example.com", groups: ["eng"], device: "dev-alice", session: "sess-alice"}')
  fi
  jq -n --argjson client "${client:-null}" --arg k "$(cat "$WORK/replay.pub")" --arg a "$REPLAY_ADDR" \
    '{tunnel: {peers: (([$client] | map(select(. != null))) + [{name: "probe", public_key: $k, address: $a, rules: []}])}}' |
    jq --arg up "http://$LAN_SRV:8080" '. + ($ENV.ZTNA_HTTP_RESOURCE | fromjson | .upstream = $up | {issuers: [.issuer], resources: [del(.issuer)]})'
}
# An http resource on the LAN server (tests/e2e/ztna-http.sh): `/` for group eng, `/admin` for
# group admins; tunnel flows to its upstream pass the WAF + gateway with the peer's identity.
export ZTNA_HTTP_RESOURCE='{"issuer": {"id": "idp", "issuer": "https://idp.example", "audiences": ["lan-app"],
  "algorithms": ["EdDSA"], "keys": {"jwks_url": "https://idp.example/jwks.json"}},
  "name": "lan-app", "issuers": ["idp"], "routes": [
  {"id": "home", "methods": ["GET"], "path": "/", "groups": ["eng"]},
  {"id": "admin", "methods": ["GET"], "path": "/admin", "groups": ["admins"]}]}'
policy 1 >"$WORK/policy-1.json"
policy 0 >"$WORK/policy-revoked.json"

# --- control plane + edge in the edge namespace ---------------------------------------------------
mkfifo "$WORK/cmd"
ip netns exec "$NS_E" env SASE_TLS_NAMES="$EDGE_IP" "$BINS/sase-ztna-stack" --bin-dir "$BINS" --work-dir "$WORK/stack" \
  --policy "$WORK/policy-1.json" --edge-arg=--tunnel-listen="$EDGE_IP:$PORT" \
  --edge-arg=--tunnel-handshake-rate=50 --edge-arg=--tunnel-audit-interval=2 \
  --edge-arg=--metrics-listen=127.0.0.1:$METRICS_PORT <"$WORK/cmd" >"$WORK/stack.out" 2>"$WORK/stack.err" &
STACK_PID=$!
exec 3>"$WORK/cmd"
if ! wait_for 120 grep -q '^ready' "$WORK/stack.out"; then
  cat "$WORK/stack.out" "$WORK/stack.err"; tail -20 "$WORK/stack/edge.log" 2>/dev/null; exit 1
fi
EDGE_PUB=$(grep '^ready' "$WORK/stack.out" | sed 's/.*tunnel_public_key=\([^ ]*\).*/\1/')
STATUS="$WORK/stack/edge/tunnel-status.json"

# --- the stock client: wireguard-go + wg, standard config ------------------------------------------
ip netns exec "$NS_C" env WG_PROCESS_FOREGROUND=1 wireguard-go "$WG_IF" >"$WORK/wg.log" 2>&1 &
WG_PID=$!
wait_for 10 test -S "/var/run/wireguard/$WG_IF.sock" || { cat "$WORK/wg.log"; exit 1; }
cat >"$WORK/wg.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/client.key")

[Peer]
PublicKey = $EDGE_PUB
Endpoint = $EDGE_IP:$PORT
AllowedIPs = 10.77.0.0/24
EOF
in_c wg setconf "$WG_IF" "$WORK/wg.conf"
in_c ip addr add "$TUN_ADDR/32" dev "$WG_IF"
in_c ip addr add 100.96.0.99/32 dev "$WG_IF"
in_c ip link set "$WG_IF" up
in_c ip route add 10.77.0.0/24 dev "$WG_IF" src "$TUN_ADDR"

handshake_done() {
  local t
  t=$(in_c wg show "$WG_IF" latest-handshakes | awk '{print $2}')
  [ -n "$t" ] && [ "$t" -gt 0 ]
}
stat_at_least() { # stat_at_least <jq path> <n>
  [ -f "$STATUS" ] && [ "$(jq -r "($1 // 0)" "$STATUS")" -ge "$2" ]
}
ping_all() { # ping_all <count> <dst>: every ping answered
  local out
  out=$(in_c ping -c "$1" -i 0.2 -W 2 "$2") || true
  printf '%s\n' "$out" >&2
  grep -q ' 0% packet loss' <<<"$out"
}
http_get() { # http_get <url>: the LAN page comes back within 3 s
  in_c curl -sS --max-time 3 --interface "$TUN_ADDR" "$1" | grep -q lan-resource-ok
}

echo "--- ztna: wireguard-go <-> sase-edge (tunnel $EDGE_IP:$PORT) <-> LAN $LAN_SRV"
check "ping $LAN_SRV through the edge (handshake + ICMP to the LAN)" in_c ping -c 3 -i 0.2 -W 3 "$LAN_SRV"
check "wg reports a completed handshake" handshake_done
check "ping $LAN_SRV: 5 of 5 answered" ping_all 5 "$LAN_SRV"
check "TCP: HTTP GET to allowed $LAN_SRV:8080" http_get "http://$LAN_SRV:8080/"
refuse "ACL: TCP to forbidden port $LAN_SRV:9090 gets nothing" http_get "http://$LAN_SRV:9090/"
refuse "ACL: ICMP to forbidden host $LAN_OTHER gets nothing" in_c ping -c 2 -i 0.2 -W 1 "$LAN_OTHER"
refuse "spoofed inner source 100.96.0.99 gets nothing" in_c ping -c 2 -i 0.2 -W 1 -I 100.96.0.99 "$LAN_SRV"
check "the LAN server saw the allowed GET and not the forbidden one" \
  bash -c "grep -q 'GET / ' '$WORK/http-8080.log' && ! grep -q 'GET / ' '$WORK/http-9090.log'"

check "500 random datagrams sent to the edge's tunnel port" in_c python3 -c "
import os, random, socket, time
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(500):
    n = random.choice([0, 1, 31, 32, 64, 92, 148, random.randrange(1, 1400)])
    d = bytearray(os.urandom(n))
    if n >= 4 and i % 2:
        d[0] = random.randrange(1, 5); d[1:4] = b'\0\0\0'
    s.sendto(bytes(d), ('$EDGE_IP', $PORT))
    time.sleep(0.001)
"
check "replayed handshake initiation and an unknown key get nothing (known key answered)" \
  in_c "$BINS/sase-tunnel-flood" --edge "$EDGE_IP:$PORT" --edge-public-key "$EDGE_PUB" \
  --peer-private-key "$(cat "$WORK/replay.key")" replay
in_c "$BINS/sase-tunnel-flood" --edge "$EDGE_IP:$PORT" --edge-public-key "$EDGE_PUB" \
  --peer-private-key "$(cat "$WORK/replay.key")" flood --seconds 2 >"$WORK/flood.out" 2>&1 || true
echo "     flood: $(cat "$WORK/flood.out")"
check "handshake flood above the limit (50/s) gets cookie replies" \
  bash -c "grep -qE 'cookie_replies=[1-9]' '$WORK/flood.out'"
check "the tunnel still works after garbage, replay and flood: 3 of 3 answered" ping_all 3 "$LAN_SRV"
check "counters: garbage dropped and counted (global drops >= 450 of 500)" \
  wait_for 5 stat_at_least '[.global.drops[]] | add' 450
check "counters: the unknown key counted (unknown_peer >= 1)" \
  wait_for 5 stat_at_least '.global.drops.unknown_peer' 1
check "counters: the replayed initiation counted (probe handshake_replay >= 1)" \
  wait_for 5 stat_at_least '.peers.probe.counters.drops.handshake_replay' 1
check "counters: cookie replies counted by the edge" wait_for 5 stat_at_least '.global.cookie_replies' 1
check "counters: ACL denials (port, host) and spoofed sources counted" \
  wait_for 5 bash -c "[ \$(jq '.peers[\"alice-laptop\"].counters.drops.acl_denied // 0' '$STATUS') -ge 3 ] && [ \$(jq '.peers[\"alice-laptop\"].counters.drops.spoofed_source // 0' '$STATUS') -ge 2 ]"

# --- HTTP through the WAF + gateway with the tunnel identity, tunnel audit events, /metrics -------
# shellcheck source=tests/e2e/ztna-http.sh
. tests/e2e/ztna-http.sh
# ------------------------------------------------------------------------------------------------

# --- revocation: a policy version without the peer --------------------------------------------------
# -D stamps each line with the wall clock, -O reports each ping unanswered when the next is due.
in_c ping -D -O -i 0.02 -W 1 "$LAN_SRV" >"$WORK/revoke-ping.log" 2>&1 &
PING_PID=$!
wait_for 5 grep -q 'bytes from' "$WORK/revoke-ping.log"
sleep 0.3
echo "put $WORK/policy-revoked.json" >&3
wait_for 30 grep -q '^applied' "$WORK/stack.out" || true
sleep 0.5
kill "$PING_PID" 2>/dev/null || true
wait "$PING_PID" 2>/dev/null || true
PUSH_MS=$(sed -n 's/^pushed unix_ms=\([0-9]*\).*/\1/p' "$WORK/stack.out" | tail -1)
APPLIED_MS=$(sed -n 's/^applied version=[0-9]* ms=\([0-9]*\).*/\1/p' "$WORK/stack.out" | tail -1)
# The first ping that got no answer: its "no answer yet" line is stamped when the next ping is
# sent, so it was sent one interval earlier (measured between the first two such lines).
FIRST_LOST=$(awk -v push="$PUSH_MS" '/no answer yet/ {
    gsub(/[\[\]]/, "", $1); t = $1 * 1000; if (t < push) next
    if (n == 0) { first = t; n = 1; next }
    gap = t - first; if (gap > 200) gap = 20; printf "%.0f\n", first - gap; exit }' "$WORK/revoke-ping.log")
REVOCATION_MS=
if [ -n "$PUSH_MS" ] && [ -n "$FIRST_LOST" ]; then
  REVOCATION_MS=$((FIRST_LOST > PUSH_MS ? FIRST_LOST - PUSH_MS : 0))
fi
echo "     revocation: pushed at $PUSH_MS, device reported applied after ${APPLIED_MS:-?} ms, first unanswered ping ${REVOCATION_MS:-?} ms after the push"
check "revocation: traffic stopped within 1000 ms of the push" \
  bash -c "[ -n '$REVOCATION_MS' ] && [ '$REVOCATION_MS' -le 1000 ]"
refuse "revoked peer: ping gets nothing" in_c ping -c 2 -i 0.2 -W 1 "$LAN_SRV"
check "revoked peer: its datagrams are dropped as unknown (unknown_index or unknown_peer)" \
  wait_for 10 bash -c "[ \$(jq '(.global.drops.unknown_index // 0) + (.global.drops.unknown_peer // 0)' '$STATUS') -ge 2 ]"
check "the edge holds one peer (the probe) after the push" wait_for 5 stat_at_least '.peers_in_force' 1
check "the edge holds no peer alice-laptop" bash -c "[ \$(jq '.peers | has(\"alice-laptop\")' '$STATUS') = false ] && [ \$(jq '.peers_in_force' '$STATUS') -eq 1 ]"

# --- identity binding (users, TOTP, devices, posture, revocation by disabling the user) -----------
# Sets REVOCATION_MS to the user-disable figure (the policy-push figure above is printed).
# shellcheck source=tests/e2e/ztna-identity.sh
. tests/e2e/ztna-identity.sh
# ------------------------------------------------------------------------------------------------

echo "quit" >&3
echo "--- edge tunnel counters:"
jq -c '{global: .global, peers: (.peers | map_values(.counters))}' "$STATUS" | sed 's/^/     /'
echo "--- duration $((SECONDS - STARTED))s"
echo "ztna_e2e passed=$PASSED failed=$FAILED revocation_ms=${REVOCATION_MS:-none}"
[ "$FAILED" -eq 0 ]
