"""Fallback time for a client that tries QUIC first, then HTTPS over TCP (driven by
tests/perf/quic-fallback.sh): with the published QUIC port in `block` mode (nothing bound: ICMP
port unreachable) and in `drop` mode (datagrams read and discarded). Each round: a new QUIC
attempt to the edge's UDP port on a connected socket (as browsers use), and when it fails — at
once on ICMP, or after the client's QUIC handshake timeout — one HTTPS request on a new TCP
connection. The figure is the median time from the start of the attempt to the HTTPS answer.
Ends with `fallback_ms_reject=<x> fallback_ms_drop=<y>`; exits non-zero when x >= 50 or a
round does not end with a 200.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import h3client  # noqa: E402


def policy(mode):
    return {
        "resources": [
            {
                "name": "app",
                "upstream": "$UPSTREAM",
                "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": True}],
            }
        ],
        "quic": {"mode": mode},
    }


async def rounds(stack, n, quic_timeout):
    udp_host, udp_port = stack.addr("udp")
    https_host, https_port = stack.addr("https")
    ca = stack.info["ca"]
    times, kinds = [], []
    for _ in range(n):
        started = time.monotonic()
        try:
            proto = await h3client.h3_connect(udp_host, udp_port, "localhost", ca, handshake_timeout=quic_timeout)
            await h3client.h3_close(proto)
            raise SystemExit("QUIC was not refused")
        except h3client.QuicRefused as e:
            kinds.append(e.kind)
        resp = await asyncio.to_thread(
            h3client.tcp_request, https_host, https_port, ca, "GET", "localhost", "/health"
        )
        if resp["status"] != 200:
            raise SystemExit(f"HTTPS fallback answered {resp['status']}")
        times.append((time.monotonic() - started) * 1000)
    return times, kinds


async def run(args):
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    first = os.path.join(work, "policy-block.json")
    with open(first, "w") as f:
        json.dump(policy("block"), f)
    stack = h3client.Stack(args.bin_dir, os.path.join(work, "stack"), first)
    try:
        # Warm-up: TLS session setup paths, the first upstream connection.
        await rounds(stack, 2, args.quic_timeout)
        reject, reject_kinds = await rounds(stack, args.rounds, args.quic_timeout)
        stack.policy(policy("drop"), os.path.join(work, "policy-drop.json"))
        drop, drop_kinds = await rounds(stack, args.drop_rounds, args.quic_timeout)
    finally:
        stack.stop()
    x, y = statistics.median(reject), statistics.median(drop)
    print(f"block: {len(reject)} rounds, QUIC failed by {sorted(set(reject_kinds))}, "
          f"median {x:.1f} ms, max {max(reject):.1f} ms")
    print(f"drop:  {len(drop)} rounds, QUIC failed by {sorted(set(drop_kinds))}, "
          f"median {y:.1f} ms, max {max(drop):.1f} ms (client QUIC handshake timeout {args.quic_timeout * 1000:.0f} ms)")
    ok = x < 50 and set(reject_kinds) == {"icmp"} and set(drop_kinds) == {"timeout"}
    print(f"fallback_ms_reject={x:.1f} fallback_ms_drop={y:.1f}")
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--drop-rounds", type=int, default=5)
    p.add_argument("--quic-timeout", type=float, default=1.0)
    sys.exit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
