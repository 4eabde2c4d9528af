#!/usr/bin/env bash
# Hardening checks against the running binaries (issue: harden and operate the product itself).
#
#   tests/security/hardening.sh            # every part
#   tests/security/hardening.sh login tls  # only the parts whose file names contain these words
#
# Each part is an executable under tests/security/hardening.d/ that starts what it needs (real
# sase-control / sase-edge binaries on loopback ports it picks, in its own work directory) and
# prints one line per check:
#   check <name> pass [detail]
#   check <name> fail <what was seen>
# Anything else it prints is passed through as log. A part that exits non-zero without
# printing a failed check counts as one failed check, so a crash never passes silently.
# Ends with
#   hardening checks=<n> failed=<f>
# and exits non-zero when f > 0 or no check ran.
#   SASE_PROFILE=release   uses release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SASE_PROFILE:-debug}
if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
scripts/build-bins.sh $flag
TARGET=${CARGO_TARGET_DIR:-target}
export SASE_BIN_DIR
SASE_BIN_DIR=$(cd "$TARGET/$PROFILE" && pwd)
WORK=$(mktemp -d /tmp/sase-hardening.XXXXXX)
export SASE_HARDENING_WORK="$WORK"

checks=0
failed=0
for part in tests/security/hardening.d/*; do
  [ -x "$part" ] || continue
  name=$(basename "$part")
  if [ "$#" -gt 0 ]; then
    wanted=0
    for word in "$@"; do case "$name" in *"$word"*) wanted=1 ;; esac; done
    [ "$wanted" = 1 ] || continue
  fi
  echo "--- $name"
  part_work="$WORK/$name"
  mkdir -p "$part_work"
  part_failed=0
  set +e
  PART_WORK="$part_work" "$part" > "$part_work/output" 2>&1
  status=$?
  set -e
  while IFS= read -r line; do
    case "$line" in
      "check "*" pass"*) checks=$((checks + 1)); echo "  $line" ;;
      "check "*" fail"*) checks=$((checks + 1)); failed=$((failed + 1)); part_failed=1; echo "  $line" ;;
      *) echo "    $line" ;;
    esac
  done < "$part_work/output"
  if [ "$status" -ne 0 ] && [ "$part_failed" = 0 ]; then
    checks=$((checks + 1))
    failed=$((failed + 1))
    echo "  check $name-completes fail exit status $status"
  fi
done

if [ "$failed" -eq 0 ] && [ "$checks" -gt 0 ]; then
  rm -rf "$WORK"
else
  echo "hardening.sh: logs kept in $WORK" >&2
fi
echo "hardening checks=$checks failed=$failed"
[ "$failed" -eq 0 ] && [ "$checks" -gt 0 ]
