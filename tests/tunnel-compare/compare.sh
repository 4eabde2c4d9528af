#!/usr/bin/env bash
# Runs the same in-memory, simulated-time session (20 minutes, pings every 1/7/13 s) on
# boringtun 0.6.0 and 0.7.1 and prints unanswered pings and handshake initiations for each.
# Standalone crate (not a workspace member): boringtun 0.6.0 pins x25519-dalek =2.0.0-rc.3,
# which cannot coexist with ed25519-dalek 2 in the workspace.
set -euo pipefail
cd "$(dirname "$0")"
trap 'rm -f Cargo.toml Cargo.lock' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/sase-tunnel-compare-target}"
for v in 0.6.0 0.7.1; do
  mock=0.3; cfg=
  [ "$v" = 0.6.0 ] && { mock=0.2; cfg="--cfg bt06"; }
  sed -e "s/^boringtun = .*/boringtun = { version = \"=$v\", default-features = false, features = [\"mock-instant\"] }/" \
      -e "s/^mock_instant = .*/mock_instant = \"$mock\"/" Cargo.toml.in >Cargo.toml
  rm -f Cargo.lock
  BT_VERSION_LABEL=$v RUSTFLAGS="$cfg --check-cfg=cfg(bt06)" cargo run -q
done
