#!/usr/bin/env python3
"""Runs the OWASP CRS 3.3.4 regression tests (legacy FTW YAML) with ftw 1.3.0 against one target.

Used by tests/conformance/crs.sh, once for the edge and once for nginx + ModSecurity-nginx.

    run_ftw.py policy  --tests DIR --upstream URL ...   print the edge policy (JSON)
    run_ftw.py run     --tests DIR --name N --port P --log FILE --out DIR [--smoke]
    run_ftw.py compare --out DIR                         differences edge vs nginx

How a test is judged: ftw's own `TestRunner.run_stage` sends each stage with ftw's `HttpUA` and
checks `status`, `response_contains`, `log_contains`, `no_log_contains` and `expect_error`
exactly as ftw 1.3.0 does. A test passes when every one of its stages passes.

Which log lines belong to a stage: ftw leaves that to the `LogChecker` (it passes a start and
end time). Time windows are not precise enough for two different servers with different log
formats, so this checker brackets each stage with *marker requests*: before the stage it
sends `GET /crs-marker/<name>-<pid>-<n>` with `Host: 127.0.0.1` and no User-Agent or Accept
(CRS logs 920350 "Host header is a numeric IP address" for it at every paranoia level, and
920300/920320 from level 2, each line with the path) and waits until a line with that marker is in
the log; after the stage it sends another marker and waits for it. The stage's lines are the
lines between the two markers, minus marker lines. The targets are sequential (one request at a
time), and both write a request's rule matches before answering it, so the window is exact. This
is the same scheme the CRS project adopted for go-ftw (`X-CRS-Test` marker requests).
"""

import argparse
import glob
import json
import os
import re
import socket
import sys
import time

try:
    from ftw import errors, http, util
    from ftw.logchecker import LogChecker
    from ftw.ruleset import Ruleset
    from ftw.testrunner import TestRunner
    from _pytest.outcomes import OutcomeException
except ImportError as e:  # pragma: no cover
    sys.exit(f"run_ftw.py: needs ftw 1.3.0 (pip install ftw==1.3.0): {e}")

MARKER_PREFIX = "crs-marker/"
# Methods the routes allow: CRS's default `tx.allowed_methods`. The edge sets each route's
# `tx.allowed_methods` to the route's methods, so routes allowing exactly CRS's default give the
# configuration the regression suite (and nginx, loaded with CRS's defaults) assumes. Other
# methods (DELETE, FOO, ...) match no route: the edge refuses them and inspects them in its
# detect-only unrouted scope, where 911100 reports them as CRS expects.
POLICY_METHODS = ["GET", "HEAD", "POST", "OPTIONS"]


def load_rulesets(tests_dir):
    """The YAML files in a stable order (sorted by path), as ftw Rulesets."""
    files = sorted(glob.glob(os.path.join(tests_dir, "**", "*.yaml"), recursive=True))
    out = []
    for f in files:
        loaded = util.extract_yaml([f])
        if not loaded:
            continue
        out.append((os.path.relpath(f, tests_dir), Ruleset(loaded[0])))
    return out


# --------------------------------------------------------------------------------------------
# policy


def cmd_policy(args):
    """An edge policy with one public resource whose routes match every path shape the tests use.

    The policy language has no wildcard path: a route is a template of literal and `{param}`
    segments, each `{param}` matching one non-empty segment. Routes `/`, `/{p1}`, `/{p1}/{p2}`,
    ... up to the deepest path in the tests (plus a margin) match every path made of non-empty
    segments, with the methods CRS allows by default (see POLICY_METHODS).
    """
    depth = 2  # the marker path /crs-marker/<id>
    for _, rs in load_rulesets(args.tests):
        for test in rs.tests:
            for stage in test.stages:
                uri = stage.input.uri or "/"
                path = uri.split("?", 1)[0]
                if path.startswith("/"):
                    depth = max(depth, len(path[1:].split("/")))
    depth += args.margin
    routes = [{"id": "root", "methods": POLICY_METHODS, "path": "/", "public": True}]
    for n in range(1, depth + 1):
        path = "".join(f"/{{p{i}}}" for i in range(1, n + 1))
        routes.append({"id": f"depth-{n}", "methods": POLICY_METHODS, "path": path, "public": True})
    policy = {
        "resources": [
            {
                "name": "crs-regression",
                "upstream": args.upstream,
                "routes": routes,
                "waf": {
                    "mode": args.mode,
                    "paranoia_level": args.paranoia,
                    "inbound_threshold": args.inbound_threshold,
                    "outbound_threshold": args.outbound_threshold,
                },
            }
        ]
    }
    json.dump(policy, sys.stdout, indent=1)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------------------------
# the log checker


class MarkerLogChecker(LogChecker):
    """Reads one log file (nginx error.log or the edge's --waf-log) between marker requests."""

    def __init__(self, name, host, port, log_path, marker_timeout):
        super().__init__()
        self.name = name
        self.host = host
        self.port = port
        self.log_path = log_path
        self.marker_timeout = marker_timeout
        self.pos = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        self.partial = b""
        self.seq = 0
        self.synced = False  # True right after a marker: the next stage can start
        self.window = None  # lines of the current stage, once its end marker was seen
        self.marker_failures = 0

    def _read_lines(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        return [p.decode("utf-8", "replace") for p in parts]

    def _send_marker(self, token):
        req = (
            f"GET /{MARKER_PREFIX}{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection((self.host, self.port), timeout=self.marker_timeout) as s:
            s.sendall(req)
            while s.recv(65536):
                pass

    def marker(self):
        """Sends a marker, waits for it in the log; returns the lines logged before it."""
        self.seq += 1
        token = f"{self.name}-{os.getpid()}-{self.seq}"
        needle = MARKER_PREFIX + token
        before = []
        try:
            self._send_marker(token)
        except OSError:
            pass  # still wait: the line may be there
        deadline = time.monotonic() + self.marker_timeout
        delay = 0.0005
        while True:
            lines = self._read_lines()
            for i, line in enumerate(lines):
                if needle in line:
                    before.extend(lines[:i])
                    self.synced = True
                    return [l for l in before if MARKER_PREFIX not in l]
            before.extend(lines)
            if time.monotonic() > deadline:
                self.marker_failures += 1
                self.synced = False
                return [l for l in before if MARKER_PREFIX not in l]
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    # Driver hooks -------------------------------------------------------------------------
    def begin_stage(self):
        if not self.synced:
            self.marker()
        self.synced = False
        self.window = None

    # ftw hooks ----------------------------------------------------------------------------
    def mark_start(self, stage_id):
        pass  # the driver brackets every stage itself (also expect_error stages)

    def mark_end(self, stage_id):
        pass

    def get_logs(self):
        if self.window is None:
            self.window = self.marker()
        return self.window


# --------------------------------------------------------------------------------------------
# run


RULE_ID = re.compile(r'\[id "(\d+)"\]')
UNIQUE_ID = re.compile(r'\[unique_id "([^"]*)"\]')


def run_stage(runner, checker, stage, ua, host, port):
    """Runs one stage with ftw; returns (ok, detail)."""
    stage.input.dest_addr = host
    stage.input.port = port
    checker.begin_stage()
    ua.response_object = None
    detail = {}
    ok = True
    try:
        runner.run_stage(stage, logger_obj=checker, http_ua=ua)
    except AssertionError as e:
        ok = False
        detail["error"] = "assertion: " + (str(e).splitlines() or [""])[0][:300]
    except errors.TestError as e:
        ok = False
        detail["error"] = "ftw error: " + str(e.args[0] if e.args else e)[:300]
    except OutcomeException as e:  # pytest.raises(...) did not raise (expect_error)
        ok = False
        detail["error"] = "expected an error: " + str(e)[:200]
    except Exception as e:  # a crash in ftw on odd input: a failure, with the reason
        ok = False
        detail["error"] = f"{type(e).__name__}: {e}"[:300]
    resp = ua.response_object
    if resp is not None and resp.response is not None:
        detail["status"] = resp.status
        body = resp.data or b""
        detail["body"] = body[:200].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:200]
    if checker.window is not None:
        text = "\n".join(checker.window)
        detail["ids"] = sorted(set(RULE_ID.findall(text)))
        # More than one transaction in a window would mean the isolation failed.
        detail["transactions"] = len(set(UNIQUE_ID.findall(text)))
    out = stage.output
    detail["expect"] = {
        k: (v.pattern if hasattr(v, "pattern") else v)
        for k, v in {
            "status": out.status,
            "log_contains": out.log_contains_str,
            "no_log_contains": out.no_log_contains_str,
            "response_contains": out.response_contains_str,
            "expect_error": out.expect_error,
        }.items()
        if v is not None
    }
    return ok, detail


def cmd_run(args):
    rulesets = load_rulesets(args.tests)
    checker = MarkerLogChecker(args.name, args.host, args.port, args.log, args.marker_timeout)
    # Wait until the target logs markers (it is up and its WAF is in force).
    deadline = time.monotonic() + 30
    while True:
        checker.marker()
        if checker.synced:
            break
        if time.monotonic() > deadline:
            sys.exit(f"run_ftw.py: {args.name}: no marker in {args.log} within 30 s")
    checker.marker_failures = 0
    runner = TestRunner()
    results = []
    started = time.monotonic()
    for rel, rs in rulesets:
        tests = [t for t in rs.tests if t.enabled]
        if args.smoke:
            tests = tests[: args.smoke]
        for test in tests:
            ua = http.HttpUA()
            ua.SOCKET_TIMEOUT = args.socket_timeout
            stages = []
            ok = True
            for stage in test.stages:
                stage_ok, detail = run_stage(runner, checker, stage, ua, args.host, args.port)
                stages.append(detail)
                if not stage_ok:
                    ok = False
                    break
            results.append({"file": rel, "title": test.test_title, "ok": ok, "stages": stages})
    elapsed = time.monotonic() - started
    passed = sum(1 for r in results if r["ok"])
    mixed = sum(1 for r in results for st in r["stages"] if st.get("transactions", 0) > 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, f"{args.name}-failed.txt"), "w") as f:
        for r in results:
            if not r["ok"]:
                f.write(f"{r['title']}\n")
    print(
        f"{args.name}: passed={passed} failed={len(results) - passed} total={len(results)} "
        f"seconds={elapsed:.1f} marker_timeouts={checker.marker_failures} mixed_windows={mixed}",
        flush=True,
    )
    if checker.marker_failures or mixed:
        sys.exit(f"run_ftw.py: {args.name}: log isolation failed (marker timeouts or mixed windows)")


# --------------------------------------------------------------------------------------------
# compare


def cmd_compare(args):
    def load(name):
        with open(os.path.join(args.out, f"{name}.json")) as f:
            return {r["title"]: r for r in json.load(f)}

    edge, nginx = load(args.edge), load(args.nginx)
    if list(edge) != list(nginx):
        sys.exit("run_ftw.py compare: the two runs did not run the same tests")
    edge_only, nginx_only = [], []
    for title in edge:
        e, n = edge[title], nginx[title]
        if not e["ok"] and n["ok"]:
            nginx_only.append((e, n))
        elif e["ok"] and not n["ok"]:
            edge_only.append((e, n))

    def row(failed, other):
        last = failed["stages"][-1] if failed["stages"] else {}
        other_last = other["stages"][len(failed["stages"]) - 1] if other["stages"] else {}
        return {
            "title": failed["title"],
            "file": failed["file"],
            "expect": last.get("expect"),
            "failed_status": last.get("status"),
            "failed_body": last.get("body", "")[:120],
            "failed_error": last.get("error"),
            "failed_ids": last.get("ids"),
            "passing_status": other_last.get("status"),
            "passing_ids": other_last.get("ids"),
        }

    report = {
        "edge_fails_nginx_passes": [row(e, n) for e, n in nginx_only],
        "nginx_fails_edge_passes": [row(n, e) for e, n in edge_only],
    }
    with open(os.path.join(args.out, "differences.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(
        f"differences: edge_fails_nginx_passes={len(nginx_only)} "
        f"nginx_fails_edge_passes={len(edge_only)}",
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    pp = sub.add_parser("policy", help="print the edge policy for the tests")
    pp.add_argument("--tests", required=True)
    pp.add_argument("--upstream", required=True)
    pp.add_argument("--mode", default="block", choices=["block", "detect"])
    pp.add_argument("--paranoia", type=int, default=4)
    pp.add_argument("--inbound-threshold", type=int, default=5)
    pp.add_argument("--outbound-threshold", type=int, default=4)
    pp.add_argument("--margin", type=int, default=4, help="extra path depth beyond the tests'")
    pp.set_defaults(func=cmd_policy)

    pr = sub.add_parser("run", help="run the tests against one target")
    pr.add_argument("--tests", required=True)
    pr.add_argument("--name", required=True)
    pr.add_argument("--host", default="127.0.0.1")
    pr.add_argument("--port", type=int, required=True)
    pr.add_argument("--log", required=True, help="log file with ModSecurity-style [id] lines")
    pr.add_argument("--out", required=True)
    pr.add_argument("--smoke", type=int, default=0, help="only the first N tests of each file")
    pr.add_argument("--socket-timeout", type=float, default=5.0, help="ftw HttpUA wait for a response")
    pr.add_argument("--marker-timeout", type=float, default=5.0)
    pr.set_defaults(func=cmd_run)

    pc = sub.add_parser("compare", help="list tests one target passes and the other fails")
    pc.add_argument("--out", required=True)
    pc.add_argument("--edge", default="edge")
    pc.add_argument("--nginx", default="nginx")
    pc.set_defaults(func=cmd_compare)

    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
