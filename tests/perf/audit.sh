#!/usr/bin/env bash
# Sustained audit ingest throughput with verification on (chain links + device batch
# signatures), through the real ingest path: devices enrolled with `sase-edge enroll`, one
# client per device speaking the device channel (WebSocket over TLS with the device
# certificate) exactly as the edge does, into SQLite and into PostgreSQL (throwaway server from
# scripts/with-postgres.sh). Prints both figures and ends with
#   audit_ingest_eps_sqlite=<events per second>
#
#   AUDIT_PERF_EVENTS     events per run (default 400000)
#   AUDIT_PERF_DEVICES    devices uploading at once (default 4)
#   SASE_PROFILE          release (default) or debug (the smoke run in scripts/test.sh)
#   AUDIT_PERF_BACKENDS   default "postgres sqlite"
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-release}
EVENTS=${AUDIT_PERF_EVENTS:-400000}
DEVICES=${AUDIT_PERF_DEVICES:-4}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
# The edge binary only enrols the devices (its speed is not measured): the debug build will do.
scripts/build-bins.sh
BINS=$(mktemp -d /tmp/sase-audit-perf-bins.XXXXXX)
WORK=$(mktemp -d /tmp/sase-audit-perf.XXXXXX)
trap 'rm -rf "$BINS" "$WORK"' EXIT
ln -s "$PWD/target/$PROFILE/sase-control" "$BINS/sase-control"
ln -s "$PWD/target/debug/sase-edge" "$BINS/sase-edge"
PERF="$PWD/target/$PROFILE/sase-audit-perf"
echo "audit ingest: $EVENTS events from $DEVICES devices, batches of 500 signed with the device key, $PROFILE control plane, $(nproc) CPUs"
sqlite_eps=
postgres_eps=
for backend in ${AUDIT_PERF_BACKENDS:-postgres sqlite}; do
  if [ "$backend" = postgres ]; then
    line=$(scripts/with-postgres.sh bash -c '"$0" --bin-dir "$1" --work-dir "$2" --events "$3" --devices "$4" --database-url "$SASE_TEST_DATABASE_URL"' \
      "$PERF" "$BINS" "$WORK/pg" "$EVENTS" "$DEVICES" | tail -n 1)
    postgres_eps=$(sed -n 's/^audit_ingest_eps=\([0-9]*\).*/\1/p' <<<"$line")
  else
    line=$("$PERF" --bin-dir "$BINS" --work-dir "$WORK/sqlite" --events "$EVENTS" --devices "$DEVICES" | tail -n 1)
    sqlite_eps=$(sed -n 's/^audit_ingest_eps=\([0-9]*\).*/\1/p' <<<"$line")
  fi
  echo "$backend: $line"
done
if [ -n "$postgres_eps" ]; then echo "audit_ingest_eps_postgres=$postgres_eps"; fi
if [ -n "$sqlite_eps" ]; then echo "audit_ingest_eps_sqlite=$sqlite_eps"; fi
