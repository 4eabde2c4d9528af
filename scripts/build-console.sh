#!/usr/bin/env bash
# Builds the web console (web-ui/, crate sase-console) into web-ui/dist/, which sase-control
# embeds at its next build (control-plane/server/build.rs) and serves at /.
#
#   scripts/build-console.sh
#
# Plain cargo for wasm32-unknown-unknown (profile `console`: opt-level "z", LTO, stripped) and
# the wasm-bindgen CLI at the version Cargo.lock pins (scripts/setup.sh installs it). Nothing is
# downloaded. No wasm-opt: Debian 12's binaryen (108) breaks the module's reference-types table
# ("WebAssembly.Table.set(): Argument 1 is invalid" at start-up), and the size target is met
# without it.
# Prints `console_wasm_gzip_bytes=<n>` (target: under 1.5 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

pinned=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$pinned" ]; then
  echo "build-console: wasm-bindgen $pinned is needed (found '${have:-none}'): run scripts/setup.sh" >&2
  exit 1
fi

# Lint the wasm code (host clippy runs see an empty crate: it is wasm-only). CONSOLE_CLIPPY=0
# skips it: the test command lints the console in the build of its component tests instead
# (scripts/test.sh), which compiles the same code once where a check and a build compiled it twice.
if [ "${CONSOLE_CLIPPY:-1}" != 0 ]; then
  cargo clippy -q -p sase-console --target wasm32-unknown-unknown -- -D warnings
fi
cargo build -q --profile console --target wasm32-unknown-unknown -p sase-console

out=web-ui/dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
wasm-bindgen --target web --no-typescript --out-name sase_console --out-dir "$stage" \
  target/wasm32-unknown-unknown/console/sase-console.wasm
cp web-ui/static/index.html web-ui/static/start.js web-ui/static/console.css "$stage/"
# Replace the files (the directory itself stays: its .gitignore is tracked).
find "$out" -maxdepth 1 -type f ! -name .gitignore -delete
cp "$stage"/index.html "$stage"/start.js "$stage"/console.css "$stage"/sase_console.js \
  "$stage"/sase_console_bg.wasm "$out/"

raw=$(stat -c %s "$out/sase_console_bg.wasm")
gz=$(gzip -9 -c "$out/sase_console_bg.wasm" | wc -c)
echo "console_wasm_bytes=$raw"
echo "console_wasm_gzip_bytes=$gz"
if [ "$gz" -ge 1572864 ]; then
  echo "build-console: the gzipped wasm is over the 1.5 MB target" >&2
fi
