# HTTP through the WAF + gateway pipeline part of tests/e2e/ztna.sh (issue 5, edge side) —
# sourced by it after the packet checks, while alice-laptop's tunnel is up; not run on its own
# (it uses ztna.sh's namespaces, helpers, stack driver on fd 3 and counters).
#
# The policy (ztna.sh `policy`) binds alice-laptop to subject alice@example.com, group eng,
# device dev-alice and session sess-alice, and has a resource `lan-app` whose upstream is
# http://$LAN_SRV:8080 with a route `/` for group eng and `/admin` for group admins. The
# edge's shell redirects the client's TCP flows to that address into its tunnel HTTP listener
# (destination NAT in userspace, no nftables), so without any token:
#   - GET / answers the LAN page, and the LAN server sees the edge's LAN address (the proxy),
#     not the tunnel address;
#   - GET /admin is refused 403 group_missing by the gateway; its audit event, read back from the
#     control plane's audit API by the reference id of the refusal, names the tunnel identity
#     (identity tunnel|alice@example.com, device, session);
#   - a tunnel_connect event and a tunnel_denied summary (the ACL refusals above) reach the
#     control plane; `/metrics` shows the tunnel series.

http_api() { # http_api <METHOD> <path>: the driver's answer body (JSON) for an admin API call
  local before
  before=$(grep -c '^api ' "$WORK/stack.out" || true)
  echo "api $1 $2" >&3
  wait_for 30 bash -c "[ \$(grep -c '^api ' '$WORK/stack.out') -gt $before ]" || return 1
  grep '^api ' "$WORK/stack.out" | tail -1 | sed 's/^api sent_unix_ms=[0-9]* status=[0-9]* body=//'
}
audit_has() { # audit_has <query> <jq filter>: some event of the audit API matches
  http_api GET "/api/audit?$1" | jq -e "[.events[] | select($2)] | length > 0"
}

echo "--- HTTP from the tunnel through the WAF + gateway pipeline (no token)"
check "tunnel HTTP: GET / on the http resource answers without a token" \
  http_get "http://$LAN_SRV:8080/"
check "tunnel HTTP: the LAN server saw the request from the edge (the proxy), not the tunnel" \
  bash -c "grep 'GET / ' '$WORK/http-8080.log' | grep -q '^$LAN_EDGE '"
in_c curl -sS --max-time 5 --interface "$TUN_ADDR" -D "$WORK/admin.head" -o "$WORK/admin.body" \
  "http://$LAN_SRV:8080/admin" || true
ADMIN_REF=$(tr -d '\r' <"$WORK/admin.head" | sed -n 's/^x-sase-reference: //Ip')
check "tunnel HTTP: GET /admin (group admins) is refused 403 group_missing" \
  bash -c "head -1 '$WORK/admin.head' | grep -q ' 403' && grep -q group_missing '$WORK/admin.body'"
check "tunnel HTTP: the refusal's audit event names the tunnel identity (subject, device, session)" \
  wait_for 30 audit_has "reference=$ADMIN_REF" \
  '.identity == "tunnel|alice@example.com" and .reason == "group_missing"
   and .tunnel.subject == "alice@example.com" and .tunnel.device == "dev-alice"
   and .tunnel.session == "sess-alice" and .http.route == "admin"'
check "tunnel HTTP: the allowed GET is audited with the tunnel identity" \
  wait_for 30 audit_has "identity=tunnel%7Calice%40example.com&reason=allowed&resource=lan-app" \
  '.http.route == "home" and .tunnel.peer == "alice-laptop"'
check "tunnel audit: a tunnel_connect event for alice-laptop reached the control plane" \
  wait_for 30 audit_has "identity=tunnel%7Calice%40example.com" \
  '.kind == "tunnel_connect" and .tunnel.session == "sess-alice"'
check "tunnel audit: a denied-flows summary (ACL refusals, counted by cause) reached the control plane" \
  wait_for 30 audit_has "reason=tunnel_flow_denied" \
  '.kind == "tunnel_denied" and .tunnel.peer == "alice-laptop" and (.tunnel.denied.acl_denied // 0) > 0'
check "tunnel audit: a traffic summary with bytes both ways" \
  wait_for 30 audit_has "identity=tunnel%7Calice%40example.com&reason=allowed" \
  '.kind == "tunnel_traffic" and .tunnel.rx_bytes > 0 and .tunnel.tx_bytes > 0'
METRICS_URL="http://127.0.0.1:$METRICS_PORT"
in_e curl -sS --max-time 5 "$METRICS_URL/metrics" >"$WORK/metrics.txt" || true
check "/metrics: tunnel peers, bytes, handshakes and drops by cause" bash -c "
  grep -q '^sase_edge_tunnel_peers [1-9]' '$WORK/metrics.txt' &&
  grep -q '^sase_edge_tunnel_rx_bytes_total [1-9]' '$WORK/metrics.txt' &&
  grep -q '^sase_edge_tunnel_handshakes_total [1-9]' '$WORK/metrics.txt' &&
  grep -q '^sase_edge_tunnel_drops_total{cause=\"acl_denied\"} [1-9]' '$WORK/metrics.txt'"
