#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL server.
#
#   scripts/with-postgres.sh cargo test -p sase-control
#
# Creates a new cluster in a fresh temporary directory (trust auth, superuser `postgres`),
# listening only on 127.0.0.1 at the first free port from 55432 up and on a unix socket in that
# directory; waits until it accepts connections; exports
#   SASE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
# runs the command; then stops the server and removes the directory, whatever happened, and
# exits with the command's exit code. Nothing outlives the run, so it can be run any number of
# times, also concurrently.
#
# Needs the PostgreSQL server binaries (Debian: `apt-get install postgresql`, which installs
# PostgreSQL 15 on Debian 12). PG_BIN overrides where they are looked for.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

find_pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        echo /usr/lib/postgresql/15/bin
        return
    fi
    # Another major version will do (newest first).
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
            return
        fi
    done
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

PG_BIN="$(find_pg_bin)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ] || [ ! -x "$PG_BIN/pg_isready" ]; then
    echo "error: PostgreSQL server binaries not found (looked in /usr/lib/postgresql/15/bin," >&2
    echo "       /usr/lib/postgresql/*/bin and PATH). Install them with:" >&2
    echo "           apt-get install -y postgresql" >&2
    echo "       or point PG_BIN at the directory holding initdb and pg_ctl." >&2
    exit 1
fi

# initdb and the server refuse to run as root: run them as `postgres` when we are root.
if [ "$(id -u)" -eq 0 ]; then
    if ! id -u postgres >/dev/null 2>&1; then
        echo "error: running as root but there is no \`postgres\` user to run the server as" >&2
        echo "       (the Debian postgresql package creates it: apt-get install -y postgresql)" >&2
        exit 1
    fi
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sase-pg.XXXXXX")"
DATA_DIR="$TMP_DIR/data"
LOG_FILE="$TMP_DIR/postgres.log"
STARTED=0

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    if [ "$STARTED" -eq 1 ] && [ -f "$DATA_DIR/postmaster.pid" ]; then
        (cd "$TMP_DIR" && as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1) || true
    fi
    rm -rf "$TMP_DIR"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP_DIR"
fi
chmod 700 "$TMP_DIR"

# The postgres user may not be able to enter the caller's working directory.
ORIG_DIR="$PWD"
cd "$TMP_DIR"
if ! as_pg "$PG_BIN/initdb" -D "$DATA_DIR" --auth=trust -U postgres --no-locale -E UTF8 \
    >"$TMP_DIR/initdb.log" 2>&1; then
    echo "error: initdb failed:" >&2
    cat "$TMP_DIR/initdb.log" >&2
    exit 1
fi

port_in_use() {
    # A connection succeeds only when something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts the server on $1 and waits until it accepts connections. Returns 1 when the server
# died at start-up (e.g. the port was taken in between), 2 when it did not come up in time.
start_on() {
    local port=$1
    rm -f "$LOG_FILE"
    as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -W \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $TMP_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null
    STARTED=1
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1; then
            return 0
        fi
        if grep -q FATAL "$LOG_FILE" 2>/dev/null \
            && ! as_pg "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
            return 1
        fi
        sleep 0.1
    done
    return 2
}

PORT=55432
READY=0
while [ "$PORT" -lt 55532 ]; do
    if ! port_in_use "$PORT"; then
        rc=0
        start_on "$PORT" || rc=$?
        if [ "$rc" -eq 0 ]; then
            READY=1
            break
        fi
        if [ "$rc" -eq 2 ]; then
            echo "error: PostgreSQL did not become ready within 60 s; its log:" >&2
            cat "$LOG_FILE" >&2
            exit 1
        fi
        # Died at start-up (port grabbed by someone else meanwhile): try the next port.
        STARTED=0
    fi
    PORT=$((PORT + 1))
done
if [ "$READY" -ne 1 ]; then
    echo "error: could not start PostgreSQL on any port in 55432-55531; last log:" >&2
    cat "$LOG_FILE" >&2 || true
    exit 1
fi
cd "$ORIG_DIR"

export SASE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
echo "with-postgres: PostgreSQL $("$PG_BIN/postgres" --version | sed -n "s/.*(PostgreSQL) \([^ ]*\).*/\1/p") ready at $SASE_TEST_DATABASE_URL" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
