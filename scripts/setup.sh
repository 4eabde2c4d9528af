#!/usr/bin/env bash
# Installs what building, the demo and the tests need on Debian 12, idempotently, as root and
# without prompts. Safe to run again: it only installs what is missing.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (installs Debian packages)" >&2
    exit 1
  fi
}

APT_PACKAGES=(
  build-essential pkg-config ca-certificates curl jq git
  libmodsecurity-dev modsecurity-crs libjemalloc-dev
  postgresql postgresql-client
  redis-server
  python3 python3-venv
  rsyslog rsyslog-gnutls openssl
  mmdebstrap qemu-system-x86 ovmf squashfs-tools busybox-static fdisk cpio dosfstools mtools socat
  systemd-boot-efi binutils
  chromium chromium-driver
)
# Extra packages a caller needs (e.g. the WAF comparison scripts): SETUP_EXTRA="nginx wrk".
read -r -a EXTRA <<< "${SETUP_EXTRA:-}"
# Node.js and npm for the console's browser tests, from Debian unless a node with npm is there.
command -v npm >/dev/null 2>&1 || EXTRA+=(nodejs npm)
APT_PACKAGES+=("${EXTRA[@]}")

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  need_root
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: no Rust toolchain found (need cargo/rustup)" >&2
    exit 1
  fi
fi

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "setup: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown >/dev/null
  fi
fi
# cargo-deny (supply-chain checks of the test command): a prebuilt in ~/.cargo/bin is kept;
# otherwise it is compiled once (about 6 minutes on two cores).
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deny $CARGO_DENY_VERSION (compiles for about 6 minutes)"
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION" >/dev/null 2>&1 ||
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" >/dev/null
fi
# The web console (scripts/build-console.sh): the wasm-bindgen CLI at the version Cargo.lock
# pins (it must match the library exactly; compiles for a few minutes once).
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' \
  "$(dirname "$0")/../Cargo.lock")
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$WASM_BINDGEN_VERSION" ]; then
  echo "setup: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (compiles for a few minutes)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force >/dev/null
fi
# The console's browser tests (tests/console): npm playwright-core only, no browser download
# (they drive Debian's chromium).
if [ ! -d "$(dirname "$0")/../tests/console/node_modules/playwright-core" ]; then
  echo "setup: installing the console tests' npm packages"
  (cd "$(dirname "$0")/../tests/console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null)
fi
echo "setup: ok"
