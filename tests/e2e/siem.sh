#!/usr/bin/env bash
# SIEM forwarding end to end, against the real binaries: a control plane with an enrolled edge
# and the sample app forwards its tenant's audit trail to a real rsyslog over TLS (syslog RFC
# 5424 framed per RFC 5425), and to JSON-lines and OCSF collectors over TCP; rsyslog is stopped
# and restarted mid-stream. Every stored event must reach every sink (at least once, no gaps).
# Ends with
#   siem_e2e passed=<n> failed=0 events=<e> lost=0 duplicates=<d>
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || {
  echo "siem.sh: rsyslogd missing (scripts/setup.sh installs rsyslog rsyslog-gnutls)" >&2; exit 1; }
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
BIN="target/$PROFILE"
WORK=$(mktemp -d /tmp/sase-siem.XXXXXX)
TLS=$(mktemp -d /tmp/sase-siem-tls.XXXXXX)
# The receiver's certificate: a throwaway CA and a server certificate for siem.test / 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=SIEM test CA" -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=siem.test" \
  -keyout "$TLS/key.pem" -out "$TLS/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:siem.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > "$TLS/ext.cnf"
openssl x509 -req -in "$TLS/req.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
  -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/cert.pem" 2>/dev/null
# rsyslog drops privileges for nothing here, but it refuses keys readable by others.
chmod 600 "$TLS/key.pem"
out=$(mktemp /tmp/sase-siem-out.XXXXXX)
set +e
"$BIN/sase-siem-e2e" --bin-dir "$BIN" --work-dir "$WORK" --tls-dir "$TLS" \
  --requests "${SIEM_E2E_REQUESTS:-150}" | tee "$out"
rc=${PIPESTATUS[0]}
set -e
last=$(tail -n 1 "$out")
rm -f "$out"
if [ "$rc" -ne 0 ]; then
  echo "siem.sh: failed (exit $rc); logs kept in $WORK" >&2
  exit 1
fi
rm -rf "$WORK" "$TLS"
case "$last" in
  "siem_e2e passed="*" failed=0 "*" lost=0 "*) ;;
  *) echo "siem.sh: unexpected result: $last" >&2; exit 1 ;;
esac
