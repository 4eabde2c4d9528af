"""QUIC end-to-end test (driven by tests/e2e/quic.sh): the same requests over HTTP/3 (aioquic)
and over HTTPS/TCP through the real edge must get the same outcome (status, reason, audit
event); Alt-Svc and the QUIC audit events; `sni_filter` forwarding an allowed server name to a
real HTTP/3 origin and refusing another; `block` (ICMP) and `drop` (silence) on the published
port. Prints one table and ends with `quic_e2e passed=<n> failed=<m>`.
"""

import argparse
import asyncio
import base64
import http.server
import threading
import json
import os
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, os.path.dirname(__file__))
import h3client  # noqa: E402

ISS = "https://idp.quic-e2e.test"
AUD = "orders-api"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        pub = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64u(pub), "kid": "k1", "alg": "EdDSA"}]}

    def token(self, scope):
        head = b64u(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}).encode())
        now = int(time.time())
        body = b64u(
            json.dumps(
                {"iss": ISS, "aud": AUD, "sub": "alice", "scope": scope, "iat": now, "exp": now + 600}
            ).encode()
        )
        sig = self.key.sign(f"{head}.{body}".encode())
        return f"{head}.{body}.{b64u(sig)}"


class AltSvcUpstream(http.server.BaseHTTPRequestHandler):
    """An upstream that advertises HTTP/3 itself (the edge must not pass that on under `block`)."""

    def do_GET(self):
        body = b"upstream with its own Alt-Svc"
        self.send_response(200)
        self.send_header("Alt-Svc", 'h3=":443"; ma=86400, h2="alt.example:443"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ALT_UPSTREAM = None


def policy(issuer, quic):
    alt = [
        {
            "name": "alt",
            "hosts": ["alt.example"],
            "upstream": ALT_UPSTREAM,
            "routes": [{"id": "root", "methods": ["GET"], "path": "/", "public": True}],
        }
    ]
    return {
        "issuers": [
            {"id": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["EdDSA"], "keys": {"jwks": issuer.jwks}}
        ],
        "resources": alt + [
            {
                "name": "orders",
                "upstream": "$UPSTREAM",
                "issuers": ["idp"],
                "routes": [
                    {"id": "health", "methods": ["GET"], "path": "/health", "public": True},
                    {"id": "search", "methods": ["GET"], "path": "/search", "public": True},
                    {"id": "echo", "methods": ["POST"], "path": "/api/echo", "public": True},
                    {"id": "orders", "methods": ["GET"], "path": "/orders", "scopes": ["orders:read"]},
                ],
                "waf": {"mode": "block", "paranoia_level": 1},
            }
        ],
        "quic": quic,
    }


def cases(issuer):
    good = issuer.token("orders:read")
    weak = issuer.token("profile")
    form = [("content-type", "application/x-www-form-urlencoded")]
    return [
        ("public route", "GET", "/health", [], b""),
        ("no such route", "GET", "/nowhere", [], b""),
        ("token missing", "GET", "/orders", [], b""),
        ("token with scope", "GET", "/orders", [("authorization", f"Bearer {good}")], b""),
        ("token without scope", "GET", "/orders", [("authorization", f"Bearer {weak}")], b""),
        ("XSS in query", "GET", "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", [], b""),
        ("SQLi in form body", "POST", "/api/echo", form, b"id=1'+OR+'1'='1'--"),
        ("benign JSON body", "POST", "/api/echo", [("content-type", "application/json")], b'{"item":"router","qty":2}'),
    ]


def outcome(resp):
    reason = "allowed"
    if resp["status"] >= 400:
        try:
            reason = json.loads(resp["body"])["error"]
        except Exception:
            reason = "?"
    return resp["status"], reason, resp["headers"].get("x-sase-reference", "")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")


async def run(args):
    checks = Checks()
    issuer = Issuer()
    global ALT_UPSTREAM
    alt_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AltSvcUpstream)
    threading.Thread(target=alt_server.serve_forever, daemon=True).start()
    ALT_UPSTREAM = f"http://127.0.0.1:{alt_server.server_address[1]}"
    work = args.work_dir
    first = os.path.join(work, "policy-0.json")
    os.makedirs(work, exist_ok=True)
    with open(first, "w") as f:
        json.dump(policy(issuer, {"mode": "inspect"}), f)
    stack = h3client.Stack(args.bin_dir, os.path.join(work, "stack"), first)
    try:
        https_host, https_port = stack.addr("https")
        udp_host, udp_port = stack.addr("udp")
        relay_host, relay_port = stack.addr("relay")
        ca = stack.info["ca"]
        authority = "localhost"

        # 1. The same requests over HTTP/3 and over HTTPS/TCP.
        proto = await h3client.h3_connect(udp_host, udp_port, "localhost", ca)
        rows = []
        for name, method, path, headers, body in cases(issuer):
            h3 = outcome(await proto.request(method, authority, path, headers, body))
            tcp = outcome(
                await asyncio.to_thread(
                    h3client.tcp_request, https_host, https_port, ca, method, authority, path, headers, body
                )
            )
            rows.append((name, method, path, h3, tcp))
        await h3client.h3_close(proto)

        print(f"{'request':<22} {'HTTP/3':<26} {'HTTPS/TCP':<26} same")
        for name, method, path, h3, tcp in rows:
            same = h3[:2] == tcp[:2]
            print(f"{name:<22} {h3[0]} {h3[1]:<22} {tcp[0]} {tcp[1]:<22} {'yes' if same else 'NO'}")
        for name, method, path, h3, tcp in rows:
            checks.check(h3[:2] == tcp[:2], f"{name}: HTTP/3 {h3[:2]} == HTTPS/TCP {tcp[:2]}")
        expected = ["allowed", "route_not_found", "token_missing", "allowed", "scope_missing",
                    "waf_blocked", "waf_blocked", "allowed"]
        checks.check([r[3][1] for r in rows] == expected, f"HTTP/3 outcomes are {expected}")

        # Alt-Svc on the TCP path while inspect is on.
        resp = await asyncio.to_thread(
            h3client.tcp_request, https_host, https_port, ca, "GET", authority, "/health"
        )
        checks.check(
            resp["headers"].get("alt-svc", "").startswith(f'h3=":{udp_port}"'),
            f"HTTPS answers advertise Alt-Svc h3 on port {udp_port}: {resp['headers'].get('alt-svc')!r}",
        )

        resp = await asyncio.to_thread(
            h3client.tcp_request, https_host, https_port, ca, "GET", "alt.example", "/"
        )
        checks.check(
            resp["status"] == 200 and resp["headers"].get("alt-svc", "").startswith(f'h3=":{udp_port}"'),
            f"inspect: the edge's Alt-Svc replaces the upstream's ({resp['headers'].get('alt-svc')!r})",
        )

        # 2. sni_filter through the relay to a real HTTP/3 origin.
        cert, key = os.path.join(work, "origin.pem"), os.path.join(work, "origin.key")
        h3client.gen_cert(["allowed.example", "denied.example"], cert, key)
        origin, origin_port = await h3client.start_origin(cert, key)
        quic = {
            "mode": "inspect",
            "rules": [{"sni": "allowed.example", "mode": "sni_filter", "upstream": f"127.0.0.1:{origin_port}"}],
        }
        stack.policy(policy(issuer, quic), os.path.join(work, "policy-1.json"))
        proto = await h3client.h3_connect(relay_host, relay_port, "allowed.example", cert)
        resp = await proto.request("GET", "allowed.example", "/")
        await h3client.h3_close(proto)
        checks.check(
            resp["status"] == 200 and resp["body"] == b"h3 origin behind the relay",
            f"sni_filter: allowed.example forwarded untouched to the origin ({resp['status']})",
        )
        started = time.monotonic()
        try:
            await h3client.h3_connect(relay_host, relay_port, "denied.example", cert, handshake_timeout=5)
            checks.check(False, "sni_filter: denied.example refused")
        except h3client.QuicRefused as e:
            ms = (time.monotonic() - started) * 1000
            checks.check(e.kind == "closed" and ms < 200, f"sni_filter: denied.example refused by CONNECTION_CLOSE in {ms:.0f} ms ({e})")
        # QUIC v2 (RFC 9369) and a ClientHello spread over several Initial packets.
        v2 = 0x6B3343CF
        proto = await h3client.h3_connect(relay_host, relay_port, "allowed.example", cert, version=v2, big_hello=True)
        resp = await proto.request("GET", "allowed.example", "/")
        await h3client.h3_close(proto)
        checks.check(resp["status"] == 200, "sni_filter: QUIC v2 with a multi-packet ClientHello forwarded")
        for version, big in ((v2, False), (None, True)):
            started = time.monotonic()
            what = f"{'v2' if version else 'v1'}{' multi-packet ClientHello' if big else ''}"
            try:
                await h3client.h3_connect(relay_host, relay_port, "denied.example", cert, version=version, big_hello=big)
                checks.check(False, f"sni_filter: {what} to denied.example refused")
            except h3client.QuicRefused as e:
                ms = (time.monotonic() - started) * 1000
                checks.check(e.kind == "closed" and ms < 200, f"sni_filter: {what} to denied.example refused by CONNECTION_CLOSE in {ms:.0f} ms")
        origin.close()

        # 3. block: nothing bound on the published port (ICMP), drop: silence.
        stack.policy(policy(issuer, {"mode": "block"}), os.path.join(work, "policy-2.json"))
        started = time.monotonic()
        try:
            await h3client.h3_connect(udp_host, udp_port, "localhost", ca, handshake_timeout=3)
            checks.check(False, "block: HTTP/3 refused")
        except h3client.QuicRefused as e:
            ms = (time.monotonic() - started) * 1000
            checks.check(e.kind == "icmp" and ms < 200, f"block: QUIC refused by ICMP port unreachable in {ms:.1f} ms")
        resp = await asyncio.to_thread(h3client.tcp_request, https_host, https_port, ca, "GET", authority, "/health")
        checks.check(
            resp["status"] == 200 and "alt-svc" not in resp["headers"],
            "block: HTTPS still served, without Alt-Svc",
        )
        resp = await asyncio.to_thread(
            h3client.tcp_request, https_host, https_port, ca, "GET", "alt.example", "/"
        )
        checks.check(
            resp["status"] == 200 and resp["headers"].get("alt-svc") == 'h2="alt.example:443"',
            f"block: the upstream's Alt-Svc h3 is stripped, other entries kept ({resp['headers'].get('alt-svc')!r})",
        )
        stack.policy(policy(issuer, {"mode": "drop"}), os.path.join(work, "policy-3.json"))
        started = time.monotonic()
        try:
            await h3client.h3_connect(udp_host, udp_port, "localhost", ca, handshake_timeout=1)
            checks.check(False, "drop: HTTP/3 gets no answer")
        except h3client.QuicRefused as e:
            ms = (time.monotonic() - started) * 1000
            checks.check(e.kind == "timeout", f"drop: no answer at all ({e.kind} after {ms:.0f} ms)")

        # 4. Audit: every HTTP/3 request and every QUIC decision is an event.
        deadline = time.monotonic() + 30
        while True:
            events = stack.events()
            by_ref = {e.get("reference"): e for e in events}
            quic_events = [e for e in events if e.get("kind") == "quic_flow"]
            refs = [r[3][2] for r in rows]
            if (all(ref in by_ref for ref in refs) and len(quic_events) >= 6) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for name, method, path, h3, tcp in rows:
            ev = by_ref.get(h3[2])
            checks.check(
                ev is not None and ev["reason"] == h3[1] and ev["http"]["path"] == path.split("?")[0],
                f"audit: HTTP/3 '{name}' recorded with reason {h3[1]}",
            )
        def find(pred):
            return next((e for e in quic_events if pred(e.get("quic") or {})), None)
        inspected = find(lambda q: q.get("verdict") == "inspected" and q.get("sni") == "localhost")
        checks.check(
            inspected is not None and inspected["quic"].get("alpn") == ["h3"] and inspected["quic"]["version"] == "v1",
            f"audit: inspected QUIC flow (sni localhost, alpn h3, v1): {inspected and inspected['quic']}",
        )
        fwd = find(lambda q: q.get("verdict") == "forwarded")
        checks.check(
            fwd is not None and fwd["quic"]["sni"] == "allowed.example" and fwd["decision"] == "allow"
            and fwd["quic"]["mode"] == "sni_filter",
            f"audit: forwarded flow {fwd and fwd['quic']}",
        )
        fwd2 = find(lambda q: q.get("verdict") == "forwarded" and q.get("version") == "v2")
        checks.check(fwd2 is not None and fwd2["quic"]["sni"] == "allowed.example", f"audit: forwarded QUIC v2 flow {fwd2 and fwd2['quic']}")
        ref2 = find(lambda q: q.get("sni") == "denied.example" and q.get("version") == "v2")
        checks.check(ref2 is not None and ref2["reason"] == "quic_sni_refused", f"audit: refused QUIC v2 flow {ref2 and ref2['quic']}")
        ref = find(lambda q: q.get("sni") == "denied.example")
        checks.check(
            ref is not None and ref["reason"] == "quic_sni_refused" and ref["quic"]["verdict"] == "refused"
            and ref["quic"]["alpn"] == ["h3"],
            f"audit: refused flow {ref and (ref['reason'], ref['quic'])}",
        )
    finally:
        stack.stop()
    print(f"quic_e2e passed={checks.passed} failed={checks.failed}")
    return 0 if checks.failed == 0 else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--work-dir", required=True)
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
