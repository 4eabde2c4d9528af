# Identity binding part of tests/e2e/ztna.sh (issue 5, control plane + sase-connect) — sourced
# by it, not run on its own (it uses ztna.sh's namespaces, helpers, stack driver on fd 3 and
# counters).
#
# The admin (through the `sase-ztna-stack` driver's `api` command) gives the site a tunnel
# address pool, creates a remote user with a group, enrols its TOTP and adds two access rules
# (one needs disk encryption). In the client namespace:
#   1. `sase-connect login` (password + TOTP over HTTPS, CA pinned) and `up` (device key,
#      registration with the posture Linux reports, boringtun on a TUN device): the allowed
#      resource answers, a forbidden port does not, the resource needing disk encryption is
#      refused to this machine's posture; `status` shows edge, handshake age, bytes, rules;
#      without CAP_NET_ADMIN `up` says what is missing; `down` stops it;
#   2. `sase-connect export-config` configures Debian's wireguard-go + wg (basic mode, no
#      posture): allowed resource yes, forbidden port and posture-gated host refused at the edge
#      (the client is made to send them), and allowed once a passing posture is reported;
#   3. disabling the user stops the live tunnel (the ms from the admin call to the first
#      unanswered ping become `revocation_ms`); signing in again, the old token and a fresh
#      handshake are all refused.

CP_FWD_PORT=9443
CA="$WORK/stack/control/tls/ca.pem"
WG2_IF=szi$ID
USER_PASSWORD="remote-user-password-1"

stack_api() { # stack_api <METHOD> <path> [<body file>]: prints the driver's answer line
  local before
  before=$(grep -c '^api ' "$WORK/stack.out" || true)
  echo "api $*" >&3
  wait_for 30 bash -c "[ \$(grep -c '^api ' '$WORK/stack.out') -gt $before ]" || return 1
  grep '^api ' "$WORK/stack.out" | tail -1
}
api_body() { sed 's/^api sent_unix_ms=[0-9]* status=[0-9]* body=//'; }
api_status() { sed 's/^api sent_unix_ms=[0-9]* status=\([0-9]*\) .*/\1/'; }
# totp_now <base32 secret> <step offset>: the RFC 6238 code of the current 30-second step plus the
# offset. The control plane accepts the previous, current and next step, each once and in
# increasing order, so successive sign-ins here use -1, 0 and +1.
totp_now() {
  python3 -c "import base64,hashlib,hmac,struct,sys,time
s=sys.argv[1]; k=base64.b32decode(s + '=' * (-len(s) % 8))
h=hmac.new(k, struct.pack('>Q', int(time.time()) // 30 + int(sys.argv[2])), hashlib.sha1).digest(); o=h[-1] & 15
print('%06d' % ((struct.unpack('>I', h[o:o + 4])[0] & 0x7fffffff) % 1000000))" "$1" "$2"
}
client_api() { # client_api <METHOD> <path> [<token>] [<body file>]: "<status> <body>"
  local args=(-sS --max-time 10 --cacert "$CA" -X "$1" -o "$WORK/client-api.out" -w '%{http_code}')
  [ -n "${3:-}" ] && args+=(-H "authorization: Bearer $3")
  [ -n "${4:-}" ] && args+=(-H 'content-type: application/json' --data-binary "@$4")
  local code
  code=$(in_c curl "${args[@]}" "https://$EDGE_IP:$CP_FWD_PORT$2") || code=000
  echo "$code $(cat "$WORK/client-api.out" 2>/dev/null)"
}

echo "--- identity binding: remote user, TOTP, device registration, posture, revocation"
echo "info" >&3
wait_for 10 grep -q '^info ' "$WORK/stack.out"
TENANT=$(sed -n 's/^info tenant=\([^ ]*\) .*/\1/p' "$WORK/stack.out" | tail -1)
CP_PORT=$(sed -n 's/^info .* cp=https:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/stack.out" | tail -1)
# The client reaches the control plane's API through the edge host's address (a TCP relay in
# the edge namespace; the control plane's certificate names that address: SASE_TLS_NAMES).
in_e python3 -c "
import socket, sys, threading
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('$EDGE_IP', $CP_FWD_PORT)); srv.listen(64)
while True:
    c, _ = srv.accept(); u = socket.create_connection(('127.0.0.1', $CP_PORT))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
" >"$WORK/relay.log" 2>&1 &
SRV_PIDS+=($!)
wait_for 10 in_c bash -c "exec 3<>/dev/tcp/$EDGE_IP/$CP_FWD_PORT"

# Port 8081 on the LAN server is plain routing (8080 is the `http` resource of ztna-http.sh).
ip netns exec "$NS_L" python3 -m http.server 8081 --bind 0.0.0.0 --directory "$WORK/www" \
  >"$WORK/http-8081.log" 2>&1 &
SRV_PIDS+=($!)

SITE=$(stack_api GET "/api/tenants/$TENANT/sites" | api_body | jq -r '.[0].id')
jq -n --arg k "$EDGE_PUB" --arg e "$EDGE_IP:$PORT" \
  '{pool: "100.96.1.0/24", endpoint: $e, edge_public_key: $k}' >"$WORK/site-tunnel.json"
jq -n --arg p "$USER_PASSWORD" '{username: "bob", password: $p, groups: ["staff"]}' >"$WORK/user.json"
jq -n --arg srv "$LAN_SRV/32" '{name: "lan-web", group: "staff", resources: [
    {destination: $srv, protocol: "icmp"}, {destination: $srv, protocol: "tcp", ports: "8081"}]}' \
  >"$WORK/rule-web.json"
jq -n --arg other "$LAN_OTHER/32" '{name: "lan-secure", group: "staff",
    resources: [{destination: $other, protocol: "icmp"}], posture: {disk_encryption: true}}' \
  >"$WORK/rule-secure.json"
ADMIN_STATUSES="$(stack_api PUT "/api/tenants/$TENANT/ztna/sites/$SITE" "$WORK/site-tunnel.json" | api_status)"
for body in user rule-web rule-secure; do
  case $body in user) path=users ;; *) path=rules ;; esac
  ADMIN_STATUSES="$ADMIN_STATUSES $(stack_api POST "/api/tenants/$TENANT/ztna/$path" "$WORK/$body.json" | api_status)"
done
check "admin: site tunnel pool, remote user, two access rules (200 201 201 201)" \
  test "$ADMIN_STATUSES" = "200 201 201 201"
USER_ID=$(stack_api GET "/api/tenants/$TENANT/ztna/users" | api_body | jq -r '.[] | select(.username == "bob") | .id')
TOTP_SECRET=$(stack_api POST "/api/tenants/$TENANT/ztna/users/$USER_ID/totp" | api_body | jq -r .secret)

login_body() { # login_body <totp code or empty>
  jq -n --arg t "$TENANT" --arg p "$USER_PASSWORD" --arg c "$1" \
    '{tenant_id: $t, username: "bob", password: $p} + (if $c == "" then {} else {totp: $c} end)' \
    >"$WORK/login.json"
}
login_body ""
check "client sign-in without a TOTP code: 401 totp_required" \
  bash -c '[[ "$1" == "401 "*totp_required* ]]' _ "$(client_api POST /api/ztna/login "" "$WORK/login.json")"
connect() { # connect <config dir> <args...>: sase-connect in the client namespace
  local dir=$1
  shift
  in_c env SASE_CONNECT_PASSWORD="$USER_PASSWORD" "$BINS/sase-connect" --config-dir "$dir" "$@"
}
connect_login() { # connect_login <config dir> <TOTP step offset>
  connect "$1" login "https://$EDGE_IP:$CP_FWD_PORT" --tenant "$TENANT" --user bob --site "$SITE" \
    --ca-cert "$CA" --totp "$(totp_now "$TOTP_SECRET" "$2")"
}
C1="$WORK/connect-1"
C2="$WORK/connect-2"
check "sase-connect login (password + TOTP, CA pinned): session stored 0600" \
  bash -c "$(declare -f connect connect_login totp_now in_c); NS_C='$NS_C' BINS='$BINS' USER_PASSWORD='$USER_PASSWORD' EDGE_IP='$EDGE_IP' CP_FWD_PORT='$CP_FWD_PORT' TENANT='$TENANT' SITE='$SITE' CA='$CA' TOTP_SECRET='$TOTP_SECRET'; connect_login '$C1' -1 && [ \$(stat -c %a '$C1/session.json') = 600 ] && [ \$(stat -c %a '$C1') = 700 ]"
TUN_C=szc$ID
refuse "sase-connect up without CAP_NET_ADMIN is refused" \
  in_c setpriv --bounding-set -net_admin --inh-caps -net_admin "$BINS/sase-connect" --config-dir "$C1" up --tun "$TUN_C"
check "sase-connect up without CAP_NET_ADMIN names what is missing" \
  bash -c "ip netns exec '$NS_C' setpriv --bounding-set -net_admin --inh-caps -net_admin '$BINS/sase-connect' --config-dir '$C1' up --tun '$TUN_C' 2>&1 | grep -q 'CAP_NET_ADMIN'"
connect "$C1" up --device-name bob-laptop --tun "$TUN_C" >"$WORK/connect-up.log" 2>&1 &
CONNECT_PID=$!
SRV_PIDS+=($CONNECT_PID)
connect_status() { connect "$C1" status; }
connected() { connect_status | jq -e '.state == "up" and .handshake_age_secs != null' >/dev/null; }
check "sase-connect up: handshake with the edge" wait_for 20 connected
C_ADDR=$(connect_status | jq -r .address || true)
echo "     sase-connect: $(head -1 "$WORK/connect-up.log")"
check "sase-connect: ping $LAN_SRV through its tunnel" wait_for 10 in_c ping -c 1 -W 1 -I "$C_ADDR" "$LAN_SRV"
c_http() { in_c curl -sS --max-time 3 --interface "$C_ADDR" "$1" | grep -q lan-resource-ok; }
check "sase-connect: HTTP GET to allowed $LAN_SRV:8081" c_http "http://$LAN_SRV:8081/"
refuse "sase-connect: forbidden port $LAN_SRV:9090 gets nothing" c_http "http://$LAN_SRV:9090/"
check "sase-connect posture: this machine reports no disk encryption, lan-secure refused for it" \
  bash -c "ip netns exec '$NS_C' '$BINS/sase-connect' --config-dir '$C1' status | jq -e '(.rules[] | select(.rule == \"lan-secure\") | .refused) == [\"posture:disk_encryption\"] and (.allowed_ips | index(\"$LAN_OTHER/32\") | not)'"
refuse "sase-connect posture: $LAN_OTHER (needs disk encryption) gets nothing" \
  in_c ping -c 2 -i 0.2 -W 1 -I "$C_ADDR" "$LAN_OTHER"
check "sase-connect status: edge, handshake age, bytes both ways, allowed resources" \
  bash -c "ip netns exec '$NS_C' '$BINS/sase-connect' --config-dir '$C1' status | jq -e '.edge == \"$EDGE_IP:$PORT\" and .handshake_age_secs >= 0 and .rx_bytes > 0 and .tx_bytes > 0 and .allowed_ips == [\"$LAN_SRV/32\"]'"
echo "     status: $(connect_status | jq -c '{edge, address, handshake_age_secs, rx_bytes, tx_bytes, allowed_ips}')"
check "sase-connect down: the tunnel stops" bash -c "ip netns exec '$NS_C' '$BINS/sase-connect' --config-dir '$C1' down && ! ip netns exec '$NS_C' ip link show '$TUN_C' >/dev/null 2>&1"
wait "$CONNECT_PID" 2>/dev/null || true

# --- the stock client from export-config --------------------------------------------------------
connect_login "$C2" 0 >/dev/null
connect "$C2" export-config --device-name bob-wg-app >"$WORK/bob-export.conf" 2>"$WORK/export.err" || cat "$WORK/export.err"
BOB_ADDR=$(sed -n 's/^Address = \([0-9.]*\)\/32$/\1/p' "$WORK/bob-export.conf")
check "export-config: a wg-quick file (address from the pool, edge key and endpoint, allowed networks)" \
  bash -c "grep -qx 'PublicKey = $EDGE_PUB' '$WORK/bob-export.conf' && grep -qx 'Endpoint = $EDGE_IP:$PORT' '$WORK/bob-export.conf' && grep -qx 'AllowedIPs = $LAN_SRV/32' '$WORK/bob-export.conf' && [ -n '$BOB_ADDR' ]"
# wg setconf takes the file without wg-quick's Address line (wg-quick strip does the same).
grep -v '^Address = ' "$WORK/bob-export.conf" >"$WORK/bob-wg.conf"
DEVICE_ID=$(stack_api GET "/api/tenants/$TENANT/ztna/devices" | api_body | jq -r --arg a "$BOB_ADDR" '.[] | select(.address == $a) | .id')
TOKEN=$(jq -r .token "$C2/session.json")
ip netns exec "$NS_C" env WG_PROCESS_FOREGROUND=1 wireguard-go "$WG2_IF" >"$WORK/wg2.log" 2>&1 &
SRV_PIDS+=($!)
wait_for 10 test -S "/var/run/wireguard/$WG2_IF.sock"
in_c wg setconf "$WG2_IF" "$WORK/bob-wg.conf"
in_c ip addr add "$BOB_ADDR/32" dev "$WG2_IF"
in_c ip link set "$WG2_IF" up
# More specific than the first client's 10.77.0.0/24 route. The client also sends what the
# edge must refuse (the forbidden port, the posture-gated host): allowed-ips widened on purpose,
# so refusals below are the edge's, not the client's.
in_c wg set "$WG2_IF" peer "$EDGE_PUB" allowed-ips "$LAN_SRV/32,$LAN_OTHER/32"
in_c ip route add "$LAN_SRV/32" dev "$WG2_IF" src "$BOB_ADDR"
in_c ip route add "$LAN_OTHER/32" dev "$WG2_IF" src "$BOB_ADDR"
bob_http() { in_c curl -sS --max-time 3 --interface "$BOB_ADDR" "$1" | grep -q lan-resource-ok; }

check "wireguard-go from export-config: ping $LAN_SRV through the edge" \
  wait_for 20 in_c ping -c 1 -W 1 -I "$BOB_ADDR" "$LAN_SRV"
check "wireguard-go from export-config: HTTP GET to allowed $LAN_SRV:8081" bob_http "http://$LAN_SRV:8081/"
refuse "wireguard-go from export-config: forbidden port $LAN_SRV:9090 gets nothing" bob_http "http://$LAN_SRV:9090/"
refuse "posture: no posture reported, $LAN_OTHER (needs disk encryption) gets nothing at the edge" \
  in_c ping -c 2 -i 0.2 -W 1 -I "$BOB_ADDR" "$LAN_OTHER"
posture_json() { # posture_json <disk encryption: true|false>
  jq -n --argjson d "$1" '{os: "linux", os_version: "test", disk_encryption: $d,
    screen_lock: true, firewall: true, client_version: "0.1.0"}'
}
posture_json true | jq '{posture: .}' >"$WORK/posture-ok.json"
POSTURE=$(client_api PUT "/api/ztna/devices/$DEVICE_ID/posture" "$TOKEN" "$WORK/posture-ok.json")
check "posture: a passing report is accepted (200)" test "${POSTURE%% *}" = 200
check "posture: after it $LAN_OTHER answers (so the refusal was the posture)" \
  wait_for 10 in_c ping -c 1 -W 1 -I "$BOB_ADDR" "$LAN_OTHER"

# --- revocation: disabling the user, measured from the admin call ------------------------------
in_c ping -D -O -i 0.02 -W 1 -I "$BOB_ADDR" "$LAN_SRV" >"$WORK/disable-ping.log" 2>&1 &
PING_PID=$!
wait_for 5 grep -q 'bytes from' "$WORK/disable-ping.log"
sleep 0.3
DISABLE=$(stack_api POST "/api/tenants/$TENANT/ztna/users/$USER_ID/disable")
sleep 1.2
kill "$PING_PID" 2>/dev/null || true
wait "$PING_PID" 2>/dev/null || true
SENT_MS=$(echo "$DISABLE" | sed -n 's/^api sent_unix_ms=\([0-9]*\).*/\1/p')
FIRST_LOST=$(awk -v sent="$SENT_MS" '/no answer yet/ {
    gsub(/[\[\]]/, "", $1); t = $1 * 1000; if (t < sent) next
    if (n == 0) { first = t; n = 1; next }
    gap = t - first; if (gap > 200) gap = 20; printf "%.0f\n", first - gap; exit }' "$WORK/disable-ping.log")
POLICY_PUSH_REVOCATION_MS=${REVOCATION_MS:-}
REVOCATION_MS=
if [ -n "$SENT_MS" ] && [ -n "$FIRST_LOST" ]; then
  REVOCATION_MS=$((FIRST_LOST > SENT_MS ? FIRST_LOST - SENT_MS : 0))
fi
echo "     user disabled: admin call at $SENT_MS ($(echo "$DISABLE" | api_status), $(echo "$DISABLE" | api_body | jq -c '{version, sessions_ended, pushed_to}' 2>/dev/null)), first unanswered ping ${REVOCATION_MS:-?} ms after it (policy-push revocation above: ${POLICY_PUSH_REVOCATION_MS:-?} ms)"
check "revocation: disabling the user stopped the live tunnel within 1000 ms of the admin call" \
  bash -c "[ -n '$REVOCATION_MS' ] && [ '$REVOCATION_MS' -le 1000 ]"
check "reconnect: sase-connect login is refused (user_disabled)" \
  bash -c "$(declare -f connect connect_login totp_now in_c); NS_C='$NS_C' BINS='$BINS' USER_PASSWORD='$USER_PASSWORD' EDGE_IP='$EDGE_IP' CP_FWD_PORT='$CP_FWD_PORT' TENANT='$TENANT' SITE='$SITE' CA='$CA' TOTP_SECRET='$TOTP_SECRET'; ! connect_login '$WORK/connect-3' 1 2>'$WORK/relogin.err' && grep -q user_disabled '$WORK/relogin.err'"
check "reconnect: the old session token is refused (403 user_disabled)" \
  bash -c '[[ "$1" == "403 "*user_disabled* ]]' _ "$(client_api GET "/api/ztna/devices/$DEVICE_ID/config" "$TOKEN")"
UNKNOWN_BEFORE=$(jq '.global.drops.unknown_peer // 0' "$STATUS")
# A fresh handshake from the same key (the stock client forgets its session and re-initiates).
in_c wg set "$WG2_IF" peer "$EDGE_PUB" remove
in_c wg setconf "$WG2_IF" "$WORK/bob-wg.conf"
in_c ping -c 3 -i 0.5 -W 1 -I "$BOB_ADDR" "$LAN_SRV" >/dev/null 2>&1 || true
check "reconnect: a fresh handshake from the disabled user's key is dropped as unknown_peer" \
  wait_for 10 bash -c "[ \$(jq '.global.drops.unknown_peer // 0' '$STATUS') -gt $UNKNOWN_BEFORE ]"
refuse "reconnect: no handshake completes and nothing gets through" \
  bash -c "t=\$(ip netns exec '$NS_C' wg show '$WG2_IF' latest-handshakes | awk '{print \$2}'); [ -n \"\$t\" ] && [ \"\$t\" -gt 0 ] || ip netns exec '$NS_C' ping -c 2 -i 0.3 -W 1 -I '$BOB_ADDR' '$LAN_SRV'"
