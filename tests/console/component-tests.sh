#!/usr/bin/env bash
# The web console's component tests (issue 8): web-ui/tests/policy_forms.rs mounts the policy
# editor's forms in headless Debian chromium and types into them, checking that each field shows
# the errors sase-model's validator finds at its path. Runs them with `cargo test` for
# wasm32-unknown-unknown through `wasm-bindgen-test-runner` (from the wasm-bindgen-cli install
# scripts/setup.sh made, at the Cargo.lock version) driving Debian's chromedriver; chromium's
# options (headless, --no-sandbox for root) are in web-ui/webdriver.json. Nothing is downloaded.
# Ends with
#   console_component_tests passed=<n> failed=<n>
# COMPONENT_TESTS_BUILD_ONLY=1 compiles the tests without running them (the test command builds
# them early, with clippy as the compiler wrapper, and runs them at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."

pinned=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$pinned" ]; then
  echo "component-tests: wasm-bindgen-test-runner $pinned is needed (found '${have:-none}'): run scripts/setup.sh" >&2
  exit 1
fi
for tool in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$tool" ] || { echo "component-tests: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done

if [ "${COMPONENT_TESTS_BUILD_ONLY:-0}" = 1 ]; then
  cargo test -q -p sase-console --target wasm32-unknown-unknown --test policy_forms --no-run
  echo "console_component_tests built"
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
CHROMEDRIVER=/usr/bin/chromedriver \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p sase-console --target wasm32-unknown-unknown --test policy_forms 2>&1 \
  | tee "$log" || status=$?

passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{ s += $4 } END { print s + 0 }')
failed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{ s += $6 } END { print s + 0 }')
if [ "$status" -ne 0 ] || [ "$passed" -eq 0 ]; then
  [ "$failed" -ne 0 ] || failed=1
  echo "console_component_tests passed=$passed failed=$failed"
  exit 1
fi
echo "console_component_tests passed=$passed failed=$failed"
