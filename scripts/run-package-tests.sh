#!/usr/bin/env bash
# Runs one workspace package's unit and integration tests from the test binaries that
# `cargo test --workspace` builds, instead of `cargo test -p PACKAGE`.
#
#   scripts/run-package-tests.sh sase-control [TEST-ARGS...]
#
# Why: `cargo test -p PACKAGE` unifies dependency features over that package alone, which is a
# different feature set from the workspace build, so cargo compiles the whole dependency graph
# a second time and links a second set of test binaries (several GB on disk and minutes of CPU).
# Asking cargo for the workspace's test executables reuses what the unit-test step built.
# Exits non-zero when any test binary fails, after running all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -lt 1 ]; then
    echo "usage: $0 PACKAGE [TEST-ARGS...]" >&2
    exit 2
fi
package="$1"
shift

# The build's own messages go to a file: shown when it fails. A test target that does not
# compile must fail this script, not leave its binary out of the list.
build_log=$(mktemp /tmp/sase-package-tests.XXXXXX)
trap 'rm -f "$build_log" "$build_log.json"' EXIT
if ! cargo test --workspace --no-run --message-format=json > "$build_log.json" 2> "$build_log"; then
    # The compiler's messages are in the JSON stream (rendered as cargo would print them).
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-message":
        sys.stderr.write(message["message"].get("rendered") or "")
' < "$build_log.json"
    cat "$build_log" >&2
    echo "$0: the workspace's test targets do not build (above)" >&2
    exit 1
fi
mapfile -t executables < <(
    python3 -c '
import json, sys
package = sys.argv[1]
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    if not message.get("profile", {}).get("test"):
        continue
    # package_id is "path+file:///…/dir#name@version" (or "…#version" when the directory is
    # named after the package); the target is the package when kind is lib.
    manifest_name = message["package_id"].split("#")[-1].split("@")[0]
    if manifest_name == package or message["package_id"].split("#")[0].endswith("/" + package):
        directory = message["manifest_path"].rsplit("/", 1)[0]
        print(directory + "\t" + message["executable"])
' "$package" < "$build_log.json"
)
if [ "${#executables[@]}" -eq 0 ]; then
    echo "no test executables found for package $package (is it a workspace member?)" >&2
    exit 1
fi

failed=0
for entry in "${executables[@]}"; do
    # cargo runs a test binary in its package directory; so does this.
    directory="${entry%%$'\t'*}"
    executable="${entry#*$'\t'}"
    echo "--- $(basename "$executable")"
    if ! (cd "$directory" && "$executable" "$@"); then
        failed=$((failed + 1))
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "$failed of ${#executables[@]} test binaries of $package failed" >&2
    exit 1
fi
echo "all ${#executables[@]} test binaries of $package passed"
