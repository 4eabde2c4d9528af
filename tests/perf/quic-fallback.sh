#!/usr/bin/env bash
# Time for a client that tries QUIC first and then HTTPS over TCP to complete a request through
# the real edge, with the published QUIC port in `block` mode (no socket: the kernel answers
# ICMP port unreachable, the client's connected UDP socket fails at once) and in `drop` mode
# (silence: the client waits for its QUIC handshake timeout, 1 s here). The client is aioquic
# (PyPI, venv under target/) driven by tests/perf/quic_fallback.py against
# `sase-quic-e2e serve` (control plane + enrolled edge + sample app). Ends with
#   fallback_ms_reject=<x> fallback_ms_drop=<y>
# and exits non-zero unless x < 50.
#   QUIC_FALLBACK_ROUNDS=<n>       block rounds (default 20); QUIC_FALLBACK_DROP_ROUNDS (default 5)
#   QUIC_FALLBACK_TIMEOUT=<s>      the client's QUIC handshake timeout (default 1.0)
#   SASE_PROFILE=release           release binaries (default debug: the edge's speed is not
#                                  what is measured, the client's wait is)
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

WORK=$(mktemp -d /tmp/sase-quic-fallback.XXXXXX)
if "$VENV/bin/python" tests/perf/quic_fallback.py --bin-dir "target/$PROFILE" --work-dir "$WORK" \
    --rounds "${QUIC_FALLBACK_ROUNDS:-20}" --drop-rounds "${QUIC_FALLBACK_DROP_ROUNDS:-5}" \
    --quic-timeout "${QUIC_FALLBACK_TIMEOUT:-1.0}"; then
  rm -rf "$WORK"
else
  status=$?
  echo "quic-fallback.sh: failed; logs kept in $WORK/stack" >&2
  exit $status
fi
