#!/usr/bin/env python3
"""Mints the tokens of tests/security/jwt-attacks.sh with an independent JOSE library.

PyJWT (with `cryptography`) signs the valid tokens and most attacks; tokens that PyJWT
refuses to produce (duplicate members, `alg: none` spelled oddly, HMAC keyed with a public
key, r = s = 0 signatures) are assembled by hand from the same primitives (`cryptography`,
`hmac`).

Writes into --out:
  jwks.json      the issuer's public keys (RSA, P-256, Ed25519), served by the driver
  evil-jwks.json the attacker's public keys (served at a URL only the attacks point at)
  cases.json     [{"name", "authorization" (header value), "expect": "accept"|"refuse",
                   "reason" (expected refusal reason)}]
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import time

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def jwk_of(public_key, kid):
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(public_key))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(public_key))
    jwk["kid"] = kid
    jwk["use"] = "sig"
    return jwk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iss", required=True)
    ap.add_argument("--aud", required=True)
    ap.add_argument("--scope", required=True)
    ap.add_argument("--evil-base", required=True, help="base URL of the attacker's files")
    ap.add_argument("--max-token-bytes", type=int, required=True)
    args = ap.parse_args()

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    evil_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    evil_ec = ec.generate_private_key(ec.SECP256R1())
    evil_ed = ed25519.Ed25519PrivateKey.generate()

    jwks = {"keys": [jwk_of(rsa_key.public_key(), "rsa-1"),
                     jwk_of(ec_key.public_key(), "ec-1"),
                     jwk_of(ed_key.public_key(), "ed-1")]}
    evil_jwks = {"keys": [jwk_of(evil_rsa.public_key(), "evil-rsa"),
                          jwk_of(evil_ec.public_key(), "evil-ec"),
                          jwk_of(evil_ed.public_key(), "evil-ed")]}

    now = int(time.time())
    base = {"iss": args.iss, "aud": args.aud, "sub": "alice", "iat": now,
            "exp": now + 600, "scope": args.scope}

    def claims(**changes):
        c = dict(base)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def sign(payload, alg="RS256", key=rsa_key, kid="rsa-1", headers=None):
        h = {"kid": kid} if kid is not None else {}
        h.update(headers or {})
        return jwt.encode(payload, key, algorithm=alg, headers=h)

    def raw_sign(header_obj_text: str, payload_text: str, alg="RS256", key=rsa_key):
        """Signs hand-written header and payload JSON text (duplicates and all)."""
        signing_input = (b64(header_obj_text.encode()) + "." + b64(payload_text.encode()))
        algo = jwt.get_algorithm_by_name(alg)
        sig = algo.sign(signing_input.encode(), key)
        return signing_input + "." + b64(sig)

    def unsigned(header, payload, signature=""):
        return b64json(header) + "." + b64json(payload) + "." + signature

    rsa_pub_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def hmac_token(secret: bytes, alg="HS256", kid="rsa-1", payload=None):
        header = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        signing_input = b64json(header) + "." + b64json(payload or claims())
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
                  "HS512": hashlib.sha512}[alg]
        return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), digest).digest())

    # An attacker certificate for the x5c attack.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.iss)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(evil_rsa.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(__import__("datetime").datetime(2020, 1, 1))
            .not_valid_after(__import__("datetime").datetime(2099, 1, 1))
            .sign(evil_rsa, hashes.SHA256()))
    cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    valid_rs = sign(claims())
    valid_es = sign(claims(), "ES256", ec_key, "ec-1")
    valid_ed = sign(claims(), "EdDSA", ed_key, "ed-1")
    h_rs, p_rs, s_rs = valid_rs.split(".")
    admin_payload = b64json(claims(sub="admin", scope=args.scope + " admin"))
    other_sig = sign(claims(sub="bob")).split(".")[2]
    es_input = ".".join(valid_es.split(".")[:2])
    pad = "x" * (args.max_token_bytes + 64)
    dup_sub = json.dumps(claims(), separators=(",", ":"))[:-1] + ',"sub":"admin"}'
    dup_exp = json.dumps(claims(), separators=(",", ":"))[:-1] + f',"exp":{now + 10 ** 8}}}'
    dup_aud_first = ('{"aud":"someone-else",' +
                     json.dumps(claims(), separators=(",", ":"))[1:])
    evil = args.evil_base.rstrip("/")

    cases = []

    def accept(name, token, scheme="Bearer"):
        cases.append({"name": name, "authorization": f"{scheme} {token}",
                      "expect": "accept", "reason": "allowed"})

    def refuse(name, reason, token=None, header=None):
        cases.append({"name": name, "authorization": header if header is not None
                      else f"Bearer {token}", "expect": "refuse", "reason": reason})

    accept("valid-rs256", valid_rs)
    accept("valid-es256", valid_es)
    accept("valid-eddsa", valid_ed)
    accept("valid-lowercase-bearer-scheme", valid_rs, scheme="bearer")

    alg_na = "token_algorithm_not_allowed"
    for spelling in ["none", "None", "NONE", "nOnE"]:
        refuse(f"alg-{spelling}-unsigned", alg_na, unsigned({"alg": spelling, "typ": "JWT"}, claims()))
    refuse("alg-none-with-signature", alg_na,
           unsigned({"alg": "none", "kid": "rsa-1"}, claims(), s_rs))
    refuse("alg-none-admin-claims", alg_na,
           unsigned({"alg": "none"}, claims(sub="admin", scope=args.scope + " admin")))
    refuse("alg-missing", "token_invalid", unsigned({"typ": "JWT", "kid": "rsa-1"}, claims(), s_rs))
    refuse("alg-lowercase-rs256", alg_na, unsigned({"alg": "rs256", "kid": "rsa-1"}, claims(), s_rs))
    refuse("hs256-keyed-with-rsa-public-pem", alg_na, hmac_token(rsa_pub_pem))
    refuse("hs512-keyed-with-rsa-public-pem", alg_na, hmac_token(rsa_pub_pem, "HS512"))
    refuse("hs256-keyed-with-jwks-json", alg_na,
           hmac_token(json.dumps(jwks).encode(), kid=None))
    refuse("rs256-header-hmac-signature", "token_invalid",
           unsigned({"alg": "RS256", "kid": "rsa-1"}, claims(),
                    hmac_token(rsa_pub_pem).split(".")[2]))
    refuse("alg-not-allowed-rs512", alg_na, sign(claims(), "RS512"))
    refuse("alg-not-allowed-ps256", alg_na, sign(claims(), "PS256"))
    refuse("alg-not-allowed-es384", alg_na,
           sign(claims(), "ES384", ec.generate_private_key(ec.SECP384R1()), "ec-1"))
    refuse("kid-path-traversal-dev-null", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "../../../../../../dev/null"))
    refuse("kid-path-traversal-hs256-empty-key", alg_na,
           hmac_token(b"", kid="../../../../../../dev/null"))
    refuse("kid-sql-injection", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "x' UNION SELECT 'rsa-1' -- "))
    refuse("kid-command-injection", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "rsa-1|/usr/bin/id"))
    refuse("jku-to-attacker-jwks", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "evil-rsa", {"jku": f"{evil}/evil-jwks.json"}))
    refuse("jku-with-legit-kid", "token_invalid",
           sign(claims(), "RS256", evil_rsa, "rsa-1", {"jku": f"{evil}/evil-jwks.json"}))
    refuse("x5u-to-attacker-cert", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "evil-x5u", {"x5u": f"{evil}/evil-cert.pem"}))
    refuse("x5c-attacker-certificate", "token_invalid",
           sign(claims(), "RS256", evil_rsa, "rsa-1", {"x5c": [cert_b64]}))
    refuse("embedded-jwk-no-kid", "token_invalid",
           sign(claims(), "RS256", evil_rsa, None,
                {"jwk": jwk_of(evil_rsa.public_key(), "evil-rsa")}))
    refuse("embedded-jwk-legit-kid", "token_invalid",
           sign(claims(), "EdDSA", evil_ed, "ed-1",
                {"jwk": jwk_of(evil_ed.public_key(), "ed-1")}))
    refuse("es256-psychic-signature-r0-s0", "token_invalid", es_input + "." + b64(bytes(64)))
    refuse("es256-signed-by-attacker-legit-kid", "token_invalid",
           sign(claims(), "ES256", evil_ec, "ec-1"))
    refuse("signed-by-unknown-key-unknown-kid", "token_unknown_key",
           sign(claims(), "RS256", evil_rsa, "rsa-2"))
    refuse("signed-by-unknown-key-legit-kid", "token_invalid",
           sign(claims(sub="admin"), "RS256", evil_rsa, "rsa-1"))
    refuse("expired", "token_expired", sign(claims(exp=now - 3600, iat=now - 7200)))
    refuse("nbf-in-future", "token_not_yet_valid", sign(claims(nbf=now + 3600)))
    refuse("wrong-iss", "token_bad_issuer", sign(claims(iss="https://evil.example")))
    refuse("iss-trailing-slash", "token_bad_issuer", sign(claims(iss=args.iss + "/")))
    refuse("wrong-aud", "token_bad_audience", sign(claims(aud="another-api")))
    refuse("missing-aud", "token_bad_audience", sign(claims(aud=None)))
    refuse("missing-exp", "token_invalid", sign(claims(exp=None)))
    refuse("exp-as-string", "token_invalid", sign(claims(exp=str(now + 600))))
    refuse("missing-sub", "token_invalid", sign(claims(sub=None)))
    refuse("crit-header", "token_crit_unsupported",
           sign(claims(), headers={"crit": ["exp"], "exp": now + 600}))
    refuse("crit-b64-unencoded-payload", "token_crit_unsupported",
           sign(claims(), headers={"crit": ["b64"], "b64": False}))
    refuse("oversized-token", "token_too_large", sign(claims(pad=pad)))
    refuse("duplicate-claim-sub", "token_invalid",
           raw_sign('{"alg":"RS256","kid":"rsa-1","typ":"JWT"}', dup_sub))
    refuse("duplicate-claim-exp", "token_invalid",
           raw_sign('{"alg":"RS256","kid":"rsa-1","typ":"JWT"}', dup_exp))
    refuse("duplicate-claim-aud", "token_invalid",
           raw_sign('{"alg":"RS256","kid":"rsa-1","typ":"JWT"}', dup_aud_first))
    refuse("duplicate-header-alg", "token_invalid",
           raw_sign('{"alg":"none","kid":"rsa-1","alg":"RS256"}',
                    json.dumps(claims(), separators=(",", ":"))))
    refuse("signature-stripped", "token_invalid", f"{h_rs}.{p_rs}.")
    refuse("signature-segment-missing", "token_invalid", f"{h_rs}.{p_rs}")
    refuse("signature-of-another-token", "token_invalid", f"{h_rs}.{p_rs}.{other_sig}")
    refuse("payload-swapped-for-admin", "token_invalid", f"{h_rs}.{admin_payload}.{s_rs}")
    refuse("malformed-base64-padding", "token_invalid", f"{h_rs}=.{p_rs}.{s_rs}")
    refuse("malformed-base64-std-alphabet", "token_invalid",
           f"{h_rs}.{p_rs}.{s_rs[:10]}+/{s_rs[12:]}")
    refuse("extra-segments-jwe-shape", "token_invalid", f"{h_rs}.{p_rs}.{s_rs}.{s_rs}.{s_rs}")
    refuse("extra-trailing-dot", "token_invalid", f"{valid_rs}.")
    refuse("nested-jwt-cty", "token_invalid",
           b64json({"alg": "RS256", "kid": "rsa-1", "cty": "JWT"}) + "."
           + b64(valid_rs.encode()) + "." + s_rs)
    refuse("scheme-basic", "token_missing", header=f"Basic {valid_rs}")
    refuse("scheme-token", "token_missing", header=f"Token {valid_rs}")
    refuse("scheme-missing-raw-token", "token_missing", header=valid_rs)
    refuse("scheme-bearer-no-space", "token_missing", header=f"Bearer{valid_rs}")
    refuse("two-tokens-forged-first", "token_invalid",
           header=f"Bearer {unsigned({'alg': 'none'}, claims(sub='admin'))} {valid_rs}")
    refuse("two-tokens-comma", "token_invalid", header=f"Bearer {valid_rs}, Bearer {valid_rs}")
    refuse("empty-bearer", "token_missing", header="Bearer ")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "jwks.json"), "w") as f:
        json.dump(jwks, f)
    with open(os.path.join(args.out, "evil-jwks.json"), "w") as f:
        json.dump(evil_jwks, f)
    with open(os.path.join(args.out, "evil-cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"minted {len(cases)} cases with PyJWT {jwt.__version__}")


if __name__ == "__main__":
    main()
