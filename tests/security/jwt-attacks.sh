#!/usr/bin/env bash
# JWT attacks through the real edge (control plane + enrolled edge + counting upstream + JWKS
# server, all on loopback). The tokens are minted by an independent library (PyJWT with
# `cryptography`, installed from PyPI into a venv under target/) by tests/security/jwt_attacks.py:
# `alg: none` variants, RS/HS key confusion, kid injection and path traversal, jku / x5u / x5c /
# embedded jwk, the ES256 r=s=0 "psychic signature", expired, future nbf, wrong iss / aud,
# missing claims, crit, oversized, duplicate claims, stripped or swapped signatures, unknown
# keys, algorithms outside the allowlist, malformed base64, extra segments, scheme tricks — plus
# valid RS256 / ES256 / EdDSA tokens that must pass. Each attack must be refused by the edge
# with its stable reason, never reach the upstream, and have an audit event with that reason.
# Then the JWKS endpoint goes down: the edge must serve from its cached keys for the issuer's
# refresh_seconds + max_stale_seconds (35 s here), then refuse (503 token_keys_unavailable),
# and recover once the endpoint is back. About 45 s in all (1 s without the outage phase).
# Prints one line per case and ends with
#   jwt_attacks tried=<n> bypassed=0
# Exits non-zero on any bypass, failed check or set-up failure.
#   SASE_PROFILE=release   uses release binaries
#   JWT_ATTACKS_VENV=dir   where the Python venv lives (default target/jwt-attacks-venv)
#   JWT_ATTACKS_OUTAGE=0   skips the JWKS outage phase
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag

VENV=${JWT_ATTACKS_VENV:-target/jwt-attacks-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check 'pyjwt[crypto]>=2.8,<3'
fi

WORK=$(mktemp -d /tmp/sase-jwt-attacks.XXXXXX)
if "target/$PROFILE/sase-jwt-attacks" --bin-dir "target/$PROFILE" --work-dir "$WORK" \
  --python "$VENV/bin/python" --minter tests/security/jwt_attacks.py \
  ${JWT_ATTACKS_OUTAGE:+$([ "$JWT_ATTACKS_OUTAGE" = 0 ] && echo --no-outage)}; then
  rm -rf "$WORK"
else
  status=$?
  echo "jwt-attacks.sh: failed; logs kept in $WORK (control.log, edge.log, tokens/)" >&2
  exit $status
fi
