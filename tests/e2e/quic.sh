#!/usr/bin/env bash
# QUIC end-to-end test against the real binaries (control plane + enrolled edge + sample app,
# started by `sase-quic-e2e serve`) with a real HTTP/3 client (aioquic, from PyPI, in a venv
# under target/) driven by tests/e2e/quic_e2e.py:
#   * the same requests (public route, unknown route, token missing / with scope / without
#     scope, XSS, SQLi, benign JSON) over HTTP/3 and over HTTPS/TCP get the same status, reason
#     and audit event (one table);
#   * Alt-Svc h3 on the TCP path while `inspect` is on; QUIC audit events (SNI, ALPN, version,
#     mode, verdict);
#   * `sni_filter`: a flow to an allowed server name is forwarded untouched through the relay to
#     a real HTTP/3 origin (aioquic), another is refused at once with CONNECTION_CLOSE;
#   * `block`: ICMP port unreachable (immediate), `drop`: no answer.
# Ends with `quic_e2e passed=<n> failed=0`; exits non-zero when a check fails.
#   SASE_PROFILE=release     uses release binaries
#   QUIC_VENV=dir            where the Python venv lives (default target/quic-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag

VENV=${QUIC_VENV:-target/quic-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import aioquic, cryptography' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check 'aioquic>=1.2,<2'
fi

WORK=$(mktemp -d /tmp/sase-quic-e2e.XXXXXX)
if "$VENV/bin/python" tests/e2e/quic_e2e.py --bin-dir "target/$PROFILE" --work-dir "$WORK"; then
  rm -rf "$WORK"
else
  status=$?
  echo "quic.sh: failed; logs kept in $WORK/stack (control.log, edge.log, app.log)" >&2
  exit $status
fi
