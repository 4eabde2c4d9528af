#!/usr/bin/env bash
# The test command: installs what it needs (idempotent), then runs formatting and lint checks,
# the wasm32 builds of the console and its component tests (and with them sase-model), every
# unit and integration test, the control-plane suite on SQLite and on a throwaway real
# PostgreSQL, the spine end-to-end test on both backends, and
# the fuzz smoke runs, the WAF end-to-end and CRS conformance runs and the WAF benchmark's
# smoke run. Exits non-zero on the first failure.
#
# After the unit tests, the end-to-end steps that neither measure latency nor share a build,
# a port, a namespace or a virtualenv run in two lanes at once (one CPU-heavy, one functional;
# each step's output is printed whole when it ends, with its lane and time); the steps with
# latency thresholds (propagation, revocation, fallback, time windows), the CRS comparison and
# the console's tests run alone, one after another. The console itself is built before the
# workspace, so sase-control embeds it from its first build instead of being rebuilt (with
# every binary and test that links it) for the console's end-to-end step. The run is CPU-bound
# on the two-core CI machine, so the lanes save only the time the waiting steps leave a core idle: the end-to-end
# part took 1,149 s at e4f0812 (lanes 547 s) and 1,194 s at ca594a7 (lanes 573 s), against
# about 1,425 s one step at a time.
#
#   sudo ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Every extra package the end-to-end scripts ask setup.sh for, installed here once: steps run two
# at a time below, and two apt runs at once would fight over dpkg's lock.
SETUP_EXTRA="nginx libnginx-mod-http-modsecurity wrk wireguard-go wireguard-tools iproute2 iputils-ping jq curl iperf3" \
  ./scripts/setup.sh

# A fresh checkout gains nothing from incremental compilation, and its caches would roughly
# double the size of target/ (CI runs on a machine whose disk is shared).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

STARTED=$SECONDS
step() { printf '\n=== %s  (t+%ss)\n' "$*" "$((SECONDS - STARTED))"; }

step "format and lints"
cargo fmt --all --check
cargo fmt --manifest-path edge/tunnel/clock-tests/Cargo.toml --check
CARGO_TARGET_DIR="$PWD/target" cargo clippy -q --manifest-path edge/tunnel/clock-tests/Cargo.toml --all-targets -- -D warnings
# The workspace's clippy (`cargo clippy --workspace --all-targets -- -D warnings`) runs inside the
# build of the unit-test step below, not here: see there.

step "supply chain: cargo deny check licenses bans sources (about 2 s; advisories need the RustSec database, not reachable here: docs/DEPENDENCIES.md)"
cargo deny --log-level error check licenses bans sources
# Advisories need a copy of the RustSec database (GitHub, not reachable from here): checked
# whenever one has been put in ~/.cargo/advisory-db, and said plainly when not.
if [ -n "$(ls -A "$HOME/.cargo/advisory-db" 2>/dev/null)" ]; then
  cargo deny --log-level error check --disable-fetch advisories
else
  echo "supply chain: advisories NOT checked — no RustSec database in ~/.cargo/advisory-db (docs/DEPENDENCIES.md)"
fi

step "web console build (scripts/build-console.sh: the console profile, the size figure), before the workspace is built so sase-control embeds it from its first build"
CONSOLE_CLIPPY=0 scripts/build-console.sh

# From here on, the workspace's crates are compiled by clippy-driver with its lints denied: the
# same driver and arguments `cargo clippy -- -D warnings` uses (cargo's RUSTC_WORKSPACE_WRAPPER;
# CLIPPY_ARGS is how cargo-clippy hands the driver its arguments), but with code generated, so
# the workspace is compiled once for the lints and the tests instead of twice (checked, then
# built): the steps before the lanes took 1,169 s instead of 1,326 s on a fresh clone. Every
# later build sees the same two variables, so nothing is rebuilt for want of them. The fuzz
# build drops them: it was not linted this way before.
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
RUSTC_WORKSPACE_WRAPPER=$(command -v clippy-driver) || {
  echo "test.sh: clippy-driver is not on PATH (rustup component add clippy)" >&2
  exit 1
}
CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
no_clippy() { env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS "$@"; }

# The console's lints come from the build of its component tests (run at the end): it compiles
# sase-console, its tests and sase-model for wasm32-unknown-unknown through clippy-driver, so it
# is also the check that sase-model builds for wasm32. A separate wasm clippy and a separate
# `cargo build -p sase-model --target wasm32-unknown-unknown` compiled the same code twice more
# (140 s and 45 s; this build takes 175 s from scratch where the wasm clippy and the component
# tests' build took 204 s).
step "web console lints (clippy -D warnings for wasm32: sase-console, its component tests and sase-model, which this shows builds for wasm32) and the component tests' build"
COMPONENT_TESTS_BUILD_ONLY=1 tests/console/component-tests.sh

step "lints (clippy, every target of the workspace, -D warnings) and unit and integration tests (SQLite)"
# Every binary and test target as the end-to-end steps build them, then the tests (which also
# compile the examples).
scripts/build-bins.sh
cargo test --workspace
# The tunnel core's tests in simulated time: a workspace of their own, so boringtun's mock clock
# never reaches a product binary (edge/tunnel/clock-tests/Cargo.toml says why).
CARGO_TARGET_DIR="$PWD/target" cargo test -q --manifest-path edge/tunnel/clock-tests/Cargo.toml

step "control-plane suite and spine end-to-end on PostgreSQL"
./scripts/with-postgres.sh bash -c '
  set -euo pipefail
  scripts/run-package-tests.sh sase-control
  SASE_E2E_DATABASE_URL="$SASE_TEST_DATABASE_URL" tests/e2e/spine.sh
'

# --- two lanes ------------------------------------------------------------------------------
LANE_LOGS=$(mktemp -d /tmp/sase-test-lanes.XXXXXX)
exec 3>&1
# lstep LANE DESCRIPTION COMMAND...: runs COMMAND with its output kept aside, then prints the
# output whole under a banner (one step at a time, so two lanes never interleave lines).
lstep() {
  local lane=$1 desc=$2 log rc=0 began=$SECONDS
  shift 2
  log=$(mktemp "$LANE_LOGS/step.XXXXXX")
  printf '\n--- [lane %s] started (t+%ss): %s\n' "$lane" "$((SECONDS - STARTED))" "$desc" >&3
  "$@" > "$log" 2>&1 || rc=$?
  {
    flock 9
    printf '\n=== [lane %s] %s  (t+%ss, %ss)\n' "$lane" "$desc" "$((began - STARTED))" "$((SECONDS - began))"
    cat "$log"
    if [ "$rc" -ne 0 ]; then
      printf '=== [lane %s] FAILED (exit %s): %s\n' "$lane" "$rc" "$desc"
    fi
  } >&3 9> "$LANE_LOGS/print.lock"
  return "$rc"
}

# CPU-heavy steps without latency thresholds (the fuzz smoke's build is the longest step of
# the two lanes: about 9 minutes while lane B runs).
lane_a() {
  lstep A "fuzz smoke runs: every target built unoptimised with AddressSanitizer, 10 s each, one at a time (the optimised campaign is tests/fuzz/campaign.sh)" \
    no_clippy env FUZZ_PROFILE=dev FUZZ_JOBS=1 tests/fuzz/smoke.sh
  lstep A "WAF throughput smoke: edge vs nginx + ModSecurity (debug build, 2 s per scenario; the figure comes from the full run, docs/PERFORMANCE.md)" \
    env SASE_PROFILE=debug WAF_PERF_SECONDS=2 WAF_PERF_ROUNDS=1 WAF_PERF_MIN_RATIO=0 tests/perf/waf.sh
  lstep A "audit ingest throughput smoke (debug build, 20,000 events per backend; the figure comes from the release run, docs/PERFORMANCE.md)" \
    env SASE_PROFILE=debug AUDIT_PERF_EVENTS=20000 tests/perf/audit.sh
  lstep A "HTTP/3 vs HTTPS/TCP throughput smoke (debug build, 2 s per transport; the figure comes from the release run, docs/PERFORMANCE.md)" \
    env SASE_PROFILE=debug H3_PERF_SECONDS=2 H3_PERF_ROUNDS=1 tests/perf/h3.sh
  lstep A "API gateway throughput smoke: edge (JWT ES256, scope, ownership, OpenAPI, rate limit) vs nginx reverse proxy (debug build, 2 s; the figure comes from the release run, docs/PERFORMANCE.md)" \
    env SASE_PROFILE=debug GATEWAY_PERF_SECONDS=2 GATEWAY_PERF_ROUNDS=1 GATEWAY_PERF_MIN_RATIO=0 tests/perf/gateway.sh
}

# Functional steps whose waits are of 10 s or more, then the appliance image (its boot under
# QEMU has 420 s where it needs about 100 alone). The two network-namespace steps (tunnel
# throughput, hardening's root edge) share this lane, so their namespaces never overlap.
lane_b() {
  lstep B "WAF end-to-end: attacks, benign corpus, audit evidence, memory across 100 reloads" \
    tests/e2e/waf.sh
  lstep B "tunnel interop: sase-tunnel core vs stock wireguard-go in network namespaces" \
    tests/e2e/tunnel-interop.sh
  lstep B "tunnel throughput smoke: iperf3 through the edge vs wireguard-go <-> wireguard-go (debug build, 2 s per run; the figure comes from the release run, docs/PERFORMANCE.md)" \
    env SASE_PROFILE=debug TUNNEL_PERF_SECONDS=2 tests/perf/tunnel.sh
  lstep B "tenant isolation and roles over every control-plane endpoint (expects leaks=0)" \
    tests/security/isolation.sh
  lstep B "audit tamper test: direct edits of SQLite and PostgreSQL are found and named by sase-audit verify" \
    tests/e2e/audit-tamper.sh
  lstep B "API contract end-to-end: OpenAPI request checks, response scrubbing, error rewriting, headers, CORS (expects failed=0)" \
    tests/e2e/contract.sh
  lstep B "authorization guards end-to-end: API1 ownership, API7 egress allowlist, API10 third-party responses, GraphQL limits, token translation + upstream mTLS, listener client certificates (expects failed=0)" \
    tests/e2e/authz.sh
  lstep B "staged policy rollouts: canary health, automatic rollback the rest of the fleet never sees, promotion, manual rollback (expects failed=0)" \
    tests/e2e/rollout.sh
  lstep B "dry runs: recorded requests replayed against drafts, exactly the changed decisions reported (expects failed=0)" \
    tests/e2e/dryrun.sh
  lstep B "audit delivery under faults: SIGKILL edge / control plane / both under load, bounded spool in alert and fail-closed modes (expects lost=0 duplicated=0)" \
    tests/e2e/audit-faults.sh
  lstep B "SIEM forwarding: rsyslog over TLS (RFC 5424/5425), JSON lines and OCSF, through a receiver outage (expects failed=0 lost=0)" \
    tests/e2e/siem.sh
  lstep B "schemathesis through the edge against the contract's OpenAPI document (expects server_errors=0 accepted_invalid=0)" \
    tests/security/schemathesis.sh
  lstep B "schemathesis against the control plane's own OpenAPI document, every operation as the MSP owner (expects server_errors=0)" \
    tests/security/schemathesis-control.sh
  lstep B "OWASP API Top 10 (2023): each risk attacked directly (works) and through the edge (stopped; expects stopped=10 of=10)" \
    tests/security/owasp-top10.sh
  lstep B "control-plane backup and restore onto a fresh data dir, on SQLite and on PostgreSQL (pg_dump, pg_restore into a fresh database): the edge stays enrolled, policy pushes reach it, the audit export verifies (expects backup_restore failed=0)" \
    tests/e2e/backup-restore.sh
  lstep B "policy signing-key rotation with overlap: announce, activate, the edge retires the old key and refuses bundles signed with it (expects key_rotation failed=0)" \
    tests/e2e/key-rotation.sh
  lstep B "hardening, every part: sign-in throttling and lockout, CSRF, security headers, session revocation, control-plane TLS and certificate reload (SQLite, and PostgreSQL with two replicas); secrets at rest; metrics, health, JSON logs joined to audit references, edge TLS and reload, diag redaction, file modes, unit sandboxing; a root edge with its tunnel holds no capability on any thread, NoNewPrivs 1, and still passes tunnel traffic (expects hardening failed=0)" \
    tests/security/hardening.sh
  if [ "${IMAGE_BOOT_FULL:-0}" = 1 ]; then
    lstep B "appliance image: build, boot under QEMU (TCG) to enforcing, the signed update, the rollback and the tampered updates" \
      tests/image/boot.sh
  else
    lstep B "appliance image: build, boot under QEMU (TCG) to enforcing (smoke; IMAGE_BOOT_FULL=1 adds the signed update, the rollback and the tampered updates)" \
      env IMAGE_BOOT_SMOKE=1 tests/image/boot.sh
  fi
}

step "two lanes at once: lane A (fuzz smoke, throughput smokes) and lane B (functional end-to-end and security suites, then the appliance image); each step is printed whole when it ends"
(lane_a) &
LANE_A=$!
(lane_b) &
LANE_B=$!
lanes_ok=1
wait "$LANE_A" || lanes_ok=0
wait "$LANE_B" || lanes_ok=0
rm -rf "$LANE_LOGS"
if [ "$lanes_ok" -ne 1 ]; then
  echo "=== a step in the lanes failed (its output is above, marked FAILED)" >&2
  exit 1
fi

# --- alone, one after another: latency thresholds, the CRS comparison, the console builds ----
step "spine end-to-end (SQLite)"
tests/e2e/spine.sh

step "ZTNA end-to-end: stock wireguard-go (from sase-connect export-config) and sase-connect through the real sase-edge tunnel to a LAN server; ACL, bad input, cookies; HTTP from the tunnel through the WAF + gateway with the tunnel identity; tunnel audit events and metrics; a user disabled and a failing posture refused (expects ztna_e2e failed=0; revocation_ms is from the admin call)"
tests/e2e/ztna.sh

step "JWT attacks through the edge (PyJWT-minted, expects bypassed=0)"
tests/security/jwt-attacks.sh

step "CRS 3.3.4 regression suite: edge vs nginx + ModSecurity (full, about a minute)"
tests/conformance/crs.sh

step "policy push smoke: 100 simulated edges with device certificates, one replica and two on PostgreSQL via LISTEN/NOTIFY (debug; the figure comes from the release run with 1,000, docs/PERFORMANCE.md)"
SASE_PROFILE=debug PUSH_EDGES=100 PUSH_ROUNDS=2 tests/perf/push.sh

step "continuous access evaluation (SET revocation on an open keep-alive connection, expects caep_revocation_ms <= 1000) and API inventory (shadow / zombie endpoints; expects failed=0)"
tests/e2e/cae.sh

step "QUIC end-to-end: HTTP/3 (aioquic) vs HTTPS/TCP outcomes, sni_filter relay, block/drop (expects failed=0)"
tests/e2e/quic.sh

step "QUIC fallback smoke: QUIC first then TCP, block vs drop (5 + 2 rounds; expects fallback_ms_reject < 50)"
QUIC_FALLBACK_ROUNDS=5 QUIC_FALLBACK_DROP_ROUNDS=2 tests/perf/quic-fallback.sh

step "rate limits, flow limits, route size limits and timeouts, a Redis budget shared by two edges (real redis-server; expects failed=0, about 40 s)"
tests/e2e/limits.sh

step "keep-alive and slowloris smoke (debug build, 1,000 keep-alive connections, 300 slow connections per attacking address, 10 s; the figure comes from the release run, docs/PERFORMANCE.md)"
SASE_PROFILE=debug SLOWLORIS_KEEPALIVE=1000 SLOWLORIS_ATTACKERS_PER_IP=300 SLOWLORIS_SECONDS=10 tests/perf/slowloris.sh

step "web console component tests: the policy forms in headless chromium (wasm-bindgen-test), each field showing sase-model's validation errors at its path (expects console_component_tests failed=0; built at the start, so a few seconds)"
tests/console/component-tests.sh

step "web console end-to-end in Debian's chromium (playwright-core): sign-in with TOTP, tenant tree, a claim code created in the UI enrols a real edge that comes online, a route's scope changed and deployed from the policy page, a 403 through the edge found in the audit explorer by its reference id, export, a user revoked, decommissioning, a screenshot of every page in docs/screenshots (expects console_e2e failed=0; about 2 minutes once built)"
CONSOLE_E2E_PREBUILT=1 tests/console/run.sh

printf '\n=== all checks passed in %ss\n' "$((SECONDS - STARTED))"
