#!/usr/bin/env bash
# Builds every binary of the workspace for the end-to-end, security and performance scripts.
#
#   scripts/build-bins.sh            # debug: every binary and every test target
#   scripts/build-bins.sh --release  # release: every binary
#
# Why one command for all scripts: cargo unifies dependency features over the packages an
# invocation selects, so `cargo build -p A -p B` and `cargo build -p A -p C` can compile the
# dependency graph twice, and `cargo test --workspace` (dev-dependencies included) a third time.
# A debug build of `--workspace --bins --tests` selects the same units as `cargo test
# --workspace`, so after the test command's unit-test step it compiles nothing, and every
# script after it shares the same binaries (minutes of CPU and GBs of disk saved in CI). The
# first script run on a fresh checkout pays for the test targets once.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --release) cargo build -q --release --workspace --bins ;;
  "") cargo build -q --workspace --bins --tests ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac
