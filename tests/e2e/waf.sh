#!/usr/bin/env bash
# WAF end-to-end test against the real binaries (control plane + enrolled edge + sample app):
# attacks (SQLi, XSS, path traversal, RCE, protocol) in query / form / JSON / header / cookie
# against a `block` and a `detect` resource at paranoia level 1, their audit events, the benign
# corpus (tests/e2e/data/benign.jsonl) and the edge's memory across 100 policy reloads.
# Builds what it needs and ends with
#   waf_e2e passed=<n> failed=0 benign=<k> false_positives=0
# Exits non-zero when any check fails.
#   SASE_PROFILE=release        uses release binaries
#   WAF_E2E_RELOADS=<n>         policy updates for the memory check (default 100)
#   SASE_E2E_DATABASE_URL=…     runs the control plane on PostgreSQL instead of SQLite
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh >/dev/null
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
# The edge's single malloc is jemalloc, for libmodsecurity and libstdc++ as for Rust
# (edge/appliance/build.rs says why that is safe with modsecurity 0.1.4 and why it matters).
bindings=$(LD_DEBUG=bindings "target/$PROFILE/sase-edge" --help 2>&1 >/dev/null || true)
for want in "sase-edge \[0\] to [^ ]*libjemalloc.so.2 .*symbol \`malloc'" \
            "sase-edge \[0\] to [^ ]*libjemalloc.so.2 .*symbol \`free'" \
            "libmodsecurity.so.3 \[0\] to [^ ]*libjemalloc.so.2 .*symbol \`_Znwm'"; do
  if ! grep -q "$want" <<<"$bindings"; then
    echo "FAIL sase-edge: no dynamic binding matching: $want" >&2
    exit 1
  fi
done
if ! MALLOC_CONF=stats_print:true "target/$PROFILE/sase-edge" --help 2>&1 \
    | grep -q 'opt.background_thread: true'; then
  echo "FAIL sase-edge: jemalloc does not run with its compiled-in background_thread:true" >&2
  exit 1
fi
echo "ok   sase-edge's malloc/free and libmodsecurity's operator new are jemalloc's (background purging on)"
WORK=$(mktemp -d /tmp/sase-waf-e2e.XXXXXX)
if "target/$PROFILE/sase-waf-e2e" test --bin-dir "target/$PROFILE" --work-dir "$WORK" \
  --corpus tests/e2e/data/benign.jsonl \
  --known-false-positives tests/e2e/data/known-false-positives.jsonl --reloads "${WAF_E2E_RELOADS:-100}"; then
  rm -rf "$WORK"
else
  status=$?
  echo "waf.sh: failed; logs kept in $WORK (control.log, edge.log, app.log)" >&2
  exit $status
fi
