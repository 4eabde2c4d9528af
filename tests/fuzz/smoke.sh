#!/usr/bin/env bash
# Fuzz smoke run: builds the cargo-fuzz targets in fuzz/ and runs each one briefly, seeded from
# fuzz/seeds/<target>. Exits non-zero when any target crashes (panic, failed assertion,
# sanitizer report, timeout, out-of-memory); the input is left in fuzz/artifacts/<target>/.
# The last line printed is `fuzz targets=<n> crashes=<k> execs=<total executions>`.
#
#   tests/fuzz/smoke.sh                       # every target, 10 s each
#   FUZZ_SECONDS=60 tests/fuzz/smoke.sh       # longer
#   FUZZ_TARGETS="policy_json" tests/fuzz/smoke.sh
#   FUZZ_PROFILE=dev tests/fuzz/smoke.sh      # unoptimised build (the test command's smoke)
#   FUZZ_JOBS=1 tests/fuzz/smoke.sh           # one target at a time (default: one per core)
#
# FUZZ_PROFILE=release (the default, and what tests/fuzz/campaign.sh uses) builds optimised
# targets; `dev` builds our code and most dependencies unoptimised, about half the build time on
# two cores, but the curve, signature and hash crates optimised (fuzz/Cargo.toml), so that the
# targets that verify signatures still get through hundreds of inputs in 10 s instead of a
# handful — the test command uses it for its smoke, where the build is most of the cost and the
# point is that every target builds and survives its seeds and a short run. Targets run FUZZ_JOBS at a time, each on its own core.
#
# Toolchain: the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags), so no
# nightly is needed. AddressSanitizer is used when it builds (FUZZ_SANITIZER=address, the
# default), otherwise the run falls back to no sanitizer. Set FUZZ_TOOLCHAIN=nightly to use an
# installed nightly instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-address}"
FUZZ_UNIT_TIMEOUT="${FUZZ_UNIT_TIMEOUT:-20}"   # seconds for one input before it counts as a hang
FUZZ_RSS_MB="${FUZZ_RSS_MB:-2048}"
FUZZ_PROFILE="${FUZZ_PROFILE:-release}"
FUZZ_JOBS="${FUZZ_JOBS:-$(nproc)}"
case "$FUZZ_PROFILE" in
  release) PROFILE_FLAG=() ;;
  dev) PROFILE_FLAG=(--dev) ;;
  *) echo "fuzz: FUZZ_PROFILE must be release or dev, not '$FUZZ_PROFILE'" >&2; exit 2 ;;
esac
CARGO_FUZZ_VERSION="0.13.2"

log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# cargo-fuzz, pinned to the version known to build with the stable toolchain.
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
fi

if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  CARGO=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
else
  # cargo-fuzz passes -Z flags to rustc; RUSTC_BOOTSTRAP lets the stable compiler take them.
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo fuzz)
fi

cd "$ROOT"

build() {
  "${CARGO[@]}" build --fuzz-dir "$FUZZ_DIR" "${PROFILE_FLAG[@]}" --sanitizer "$1" "${@:2}" >&2
}

log "building targets (sanitizer: $FUZZ_SANITIZER, profile: $FUZZ_PROFILE)"
if ! build "$FUZZ_SANITIZER"; then
  if [ "$FUZZ_SANITIZER" = none ]; then
    log "build failed"
    exit 1
  fi
  log "build with sanitizer '$FUZZ_SANITIZER' failed; falling back to --sanitizer none"
  FUZZ_SANITIZER=none
  build none
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <("${CARGO[@]}" list --fuzz-dir "$FUZZ_DIR")
fi
if [ "${#targets[@]}" -eq 0 ]; then
  log "no fuzz targets found"
  exit 1
fi

LOG_DIR="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOG_DIR"

RESULT_DIR=$(mktemp -d)
trap 'rm -rf "$RESULT_DIR"' EXIT

# run_target TARGET: fuzzes one target; writes "<status> <execs>" to $RESULT_DIR/TARGET.
run_target() {
  local target=$1
  local corpus="$FUZZ_DIR/corpus/$target"
  local seeds="$FUZZ_DIR/seeds/$target"
  mkdir -p "$corpus"
  # Seeds are committed under fuzz/seeds; the corpus dir (git-ignored) collects what the
  # fuzzer finds on top of them and is reused by later runs on the same machine.
  if [ -d "$seeds" ]; then
    cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  fi
  local args=(
    -max_total_time="$FUZZ_SECONDS"
    -timeout="$FUZZ_UNIT_TIMEOUT"
    -rss_limit_mb="$FUZZ_RSS_MB"
    -print_final_stats=1
  )
  if [ -f "$FUZZ_DIR/dicts/$target.dict" ]; then
    args+=(-dict="$FUZZ_DIR/dicts/$target.dict")
  fi
  log "running $target for ${FUZZ_SECONDS}s"
  local target_log="$LOG_DIR/$target.log" status=0 execs
  "${CARGO[@]}" run --fuzz-dir "$FUZZ_DIR" "${PROFILE_FLAG[@]}" --sanitizer "$FUZZ_SANITIZER" \
    "$target" "$corpus" -- "${args[@]}" >"$target_log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$target_log" | tail -n 1)"
  if [ -z "$execs" ]; then
    # No final stats (e.g. the run died): fall back to the last "#N" status line.
    execs="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$target_log" | tail -n 1)"
  fi
  echo "$status ${execs:-0}" >"$RESULT_DIR/$target"
}

running=0
for target in "${targets[@]}"; do
  if [ "$running" -ge "$FUZZ_JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$target" &
  running=$((running + 1))
done
wait || true

total_execs=0
crashes=0
for target in "${targets[@]}"; do
  read -r status execs <"$RESULT_DIR/$target" || { status=1 execs=0; }
  total_execs=$((total_execs + execs))
  if [ "$status" -ne 0 ]; then
    crashes=$((crashes + 1))
    log "$target FAILED (exit $status) after $execs executions; log: $LOG_DIR/$target.log"
    grep -E 'panicked at|ERROR: |SUMMARY: |Test unit written to|Base64: ' "$LOG_DIR/$target.log" >&2 ||
      tail -n 40 "$LOG_DIR/$target.log" >&2
  else
    log "$target ok: $execs executions"
  fi
done

echo "fuzz targets=${#targets[@]} crashes=$crashes execs=$total_execs"
[ "$crashes" -eq 0 ]
