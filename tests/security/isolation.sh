#!/usr/bin/env bash
# Tenant isolation and least privilege over every REST endpoint of the control plane
# (enumerated from its OpenAPI document, /api/openapi.json): a real control plane, an MSP with
# two customer tenants (site, enrolled device, policy each) and admins of every role. Each
# operation aimed at tenant A is called (a) with tenant B's customer-admin token and (b) with a
# lower credential of A (auditor, a token scoped to something else, the MSP engineer for
# owner-only permissions), and must be refused without anything of A in the answer; (c) the
# legitimate role must succeed for a sample. See tests/support/src/bin/sase-isolation.rs.
# Ends with
#   isolation endpoints=<n> leaks=0
# and exits non-zero on any leak or failed legitimate call.
#   SASE_E2E_DATABASE_URL=postgres://…   runs against PostgreSQL instead of SQLite
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build-bins.sh
BINS=$(mktemp -d /tmp/sase-isolation-bins.XXXXXX)
WORK=$(mktemp -d /tmp/sase-isolation.XXXXXX)
trap 'rm -rf "$BINS" "$WORK"' EXIT
ln -s "$PWD/target/debug/sase-control" "$BINS/sase-control"
ln -s "$PWD/target/debug/sase-edge" "$BINS/sase-edge"
args=(--bin-dir "$BINS" --work-dir "$WORK/run")
if [ -n "${SASE_E2E_DATABASE_URL:-}" ]; then args+=(--database-url "$SASE_E2E_DATABASE_URL"); fi
target/debug/sase-isolation "${args[@]}"
