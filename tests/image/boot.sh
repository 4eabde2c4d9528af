#!/usr/bin/env bash
# Appliance image boot test: builds the image (image/build.sh), boots it under
# qemu-system-x86_64 with software emulation (TCG; no KVM needed) and QEMU user networking
# restricted to forwards to 127.0.0.1, and lets it enrol with a real control plane from a claim
# file on its config partition, enforce a pushed policy (one allowed, one denied request).
# The full run then applies a signed update (slot switch A -> B), a deliberately broken update
# (the device rolls back by itself), and two tampered updates (refused and audited).
# Ends with
#   image_boot passed=<n> failed=0 image_size_mb=<x> boot_to_enforcing_s=<y>
#
#   sudo tests/image/boot.sh            # full (about 10-20 minutes on 2 cores)
#   IMAGE_BOOT_SMOKE=1 sudo tests/image/boot.sh   # build + one boot to enforcing (CI)
#   IMAGE_BOOT_PROFILE=debug|release              # which sase-edge goes in (smoke: debug)
#   IMAGE_BOOT_CONFIRM_WINDOW=90                  # seconds a trial slot has to confirm
#   IMAGE_BOOT_FIRMWARE=uefi|kernel               # OVMF boots the disk (default) or QEMU -kernel
#
# The Debian root tarball and the vendor key are cached in target/image-cache between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SMOKE=${IMAGE_BOOT_SMOKE:-0}
OUT=$TARGET_DIR/image-test
WINDOW=${IMAGE_BOOT_CONFIRM_WINDOW:-90}
# Fast squashfs compression: the tests build four root filesystems.
export SASE_IMAGE_ZSTD_LEVEL=${SASE_IMAGE_ZSTD_LEVEL:-3}

for tool in qemu-system-x86_64 socat mcopy sfdisk jq; do
  command -v "$tool" >/dev/null || {
    echo "boot.sh: $tool missing: run scripts/setup.sh (or image/build.sh installs its own tools)" >&2
    exit 1
  }
done

# The smoke run puts the debug edge (already built by the other tests) into the image so that
# CI does not wait for a release build; the full run uses the release build, as shipped.
PROFILE=${IMAGE_BOOT_PROFILE:-$([ "$SMOKE" = 1 ] && echo debug || echo release)}
if [ "$PROFILE" = debug ]; then
  scripts/build-bins.sh
  export SASE_EDGE_BIN=$TARGET_DIR/debug/sase-edge SASE_IMAGE_TOOL=$TARGET_DIR/debug/sase-image
else
  scripts/build-bins.sh
  cargo build -q --release -p sase-edge --bins
  export SASE_EDGE_BIN=$TARGET_DIR/release/sase-edge SASE_IMAGE_TOOL=$TARGET_DIR/release/sase-image
fi
# Scratch space (kept, with the logs, when the test fails).
WORK=$(mktemp -d "/tmp/sase-image-boot.$$.XXXXXX")
# The image: version 1.
SASE_IMAGE_OUT=$OUT SASE_IMAGE_VERSION=1 SASE_CONFIRM_WINDOW=$WINDOW image/build.sh

extra=()
if [ "$SMOKE" != 1 ]; then
  # Version 2: a good update. Version 3: an update whose edge never starts (the broken
  # firmware a rollback must undo). Version 4: to be tampered with, and signed by a foreign key.
  SASE_IMAGE_OUT=$OUT SASE_IMAGE_VERSION=2 SASE_CONFIRM_WINDOW=$WINDOW image/build.sh --update-only
  printf '#!/bin/sh\necho "sase-edge: deliberately broken build" >&2\nexit 1\n' >"$WORK/broken-edge"
  chmod +x "$WORK/broken-edge"
  SASE_IMAGE_OUT=$OUT SASE_IMAGE_VERSION=3 SASE_CONFIRM_WINDOW=$WINDOW SASE_EDGE_BIN=$WORK/broken-edge \
    image/build.sh --update-only
  SASE_IMAGE_OUT=$OUT SASE_IMAGE_VERSION=4 SASE_CONFIRM_WINDOW=$WINDOW image/build.sh --update-only
  KREL=$(jq -r .kernel_release "$OUT/build.json")
  "$SASE_IMAGE_TOOL" keygen --out "$WORK/foreign.key" >/dev/null
  "$SASE_IMAGE_TOOL" pack --key "$WORK/foreign.key" --payload "$OUT/rootfs-v4.squashfs" \
    --version 4 --label foreign --kernel-release "$KREL" --out "$WORK/foreign.sasu" >/dev/null
  extra=(--update "$OUT/sase-edge-v2.sasu" --broken-update "$OUT/sase-edge-v3.sasu"
    --tamper-update "$OUT/sase-edge-v4.sasu" --foreign-update "$WORK/foreign.sasu")
fi

# UEFI (OVMF) boots the disk the way a box does; IMAGE_BOOT_FIRMWARE=kernel uses QEMU's -kernel.
if [ "${IMAGE_BOOT_FIRMWARE:-uefi}" = uefi ]; then
  extra+=(--uefi /usr/share/OVMF/OVMF_CODE_4M.fd)
fi
if "$TARGET_DIR/debug/sase-image-e2e" --bin-dir "$TARGET_DIR/debug" --image-dir "$OUT" \
  --work-dir "$WORK" "${extra[@]}"; then
  rm -rf "$WORK"
else
  status=$?
  echo "boot.sh: failed; logs kept in $WORK (serial.log, control.log, app.log)" >&2
  exit $status
fi
