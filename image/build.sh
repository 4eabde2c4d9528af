#!/usr/bin/env bash
# Builds the appliance: an x86-64 GPT disk image (Debian 12 minimal via mmdebstrap, the
# sase-edge release binary, systemd units, nftables baseline), with
#   p1 sase-boot    FAT   EFI/BOOT/BOOTX64.EFI: unified kernel image (kernel + sase initramfs,
#                         whose init picks the A/B slot); also the kernel and initramfs alone
#   p2 sase-root-a  squashfs root filesystem, slot A (read-only; RAM overlay at run time)
#   p3 sase-root-b  slot B (empty until the first update)
#   p4 sase-config  FAT   where the MSP drops claim.txt (+ ca.pem)
#   p5 sase-data    ext4  device identity, policy, audit spool, boot state, downloads
# and the signed update bundle of the same root filesystem (for devices running an older
# version). Also writes vmlinuz, initrd.img and cmdline next to the disk for direct-kernel
# boots (QEMU). Run as root (it installs its host tools through apt when missing and writes
# files owned by root). Docs: docs/IMAGE.md.
#
#   sudo image/build.sh                   # version 1 → target/image/
#   sudo image/build.sh --update-only     # only the update bundle (no disk image)
#
# Environment: SASE_IMAGE_VERSION (build number, default 1), SASE_IMAGE_LABEL,
# SASE_IMAGE_OUT (default target/image), SASE_IMAGE_CACHE (default target/image-cache: the
# Debian root tarball and the vendor key are kept there between runs), SASE_VENDOR_KEY (vendor
# Ed25519 key file; created in the cache when absent), SASE_EDGE_BIN (the sase-edge binary to
# install; default: cargo build --release), SASE_IMAGE_TOOL (the sase-image binary; default
# the release build), SASE_IMAGE_SLOT_MB (default 256),
# SASE_IMAGE_DATA_MB (default 256), SASE_CONFIRM_WINDOW (seconds a trial slot has to confirm,
# default 180), SASE_IMAGE_ZSTD_LEVEL (squashfs compression, default 15: 83 MiB in 50 s here;
# 3: 96 MiB in 2 s, what the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
UPDATE_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --update-only) UPDATE_ONLY=1 ;;
    -h | --help) sed -n '2,/^set -e/{/^#/p}' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${SASE_IMAGE_OUT:-$TARGET_DIR/image}
CACHE=${SASE_IMAGE_CACHE:-$TARGET_DIR/image-cache}
VERSION=${SASE_IMAGE_VERSION:-1}
LABEL=${SASE_IMAGE_LABEL:-$(date -u +%Y.%m.%d)-$VERSION}
VENDOR_KEY=${SASE_VENDOR_KEY:-$CACHE/vendor.key}
SLOT_MB=${SASE_IMAGE_SLOT_MB:-256}
DATA_MB=${SASE_IMAGE_DATA_MB:-256}
CONFIRM_WINDOW=${SASE_CONFIRM_WINDOW:-180}
ZSTD_LEVEL=${SASE_IMAGE_ZSTD_LEVEL:-15}
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-cloud-amd64,libmodsecurity3,modsecurity-crs,libjemalloc2,ca-certificates,nftables,iproute2
case "$VERSION" in '' | *[!0-9]*) echo "build.sh: SASE_IMAGE_VERSION must be a number" >&2; exit 2 ;; esac

STARTED=$SECONDS
TOTAL=$([ "$UPDATE_ONLY" = 1 ] && echo 6 || echo 9)
N=0
step() {
  N=$((N + 1))
  printf '[image %d/%d] %s  (t+%ss)\n' "$N" "$TOTAL" "$*" "$((SECONDS - STARTED))"
}

if [ "$(id -u)" -ne 0 ]; then
  echo "build.sh: run as root (apt for host tools, root-owned files in the image)" >&2
  exit 1
fi
mkdir -p "$OUT" "$CACHE"
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step "host tools (apt, only what is missing)"
HOST_PACKAGES=(mmdebstrap squashfs-tools busybox-static fdisk e2fsprogs cpio dosfstools mtools systemd-boot-efi binutils jq)
missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "  installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "sase-edge and sase-image binaries (release)"
TOOL=${SASE_IMAGE_TOOL:-$TARGET_DIR/release/sase-image}
if [ -z "${SASE_EDGE_BIN:-}" ] || [ ! -x "$TOOL" ]; then
  cargo build --release -q -p sase-edge --bins
fi
EDGE_BIN=${SASE_EDGE_BIN:-$TARGET_DIR/release/sase-edge}
[ -x "$EDGE_BIN" ] || { echo "build.sh: $EDGE_BIN is not executable" >&2; exit 1; }
VENDOR_PUB=$("$TOOL" keygen --out "$VENDOR_KEY")
echo "  edge: $EDGE_BIN ($(du -h "$EDGE_BIN" | cut -f1)); vendor key $VENDOR_KEY (public $VENDOR_PUB)"

step "Debian 12 root filesystem (mmdebstrap, cached by package list)"
KEY=$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-16)
TARBALL=$CACHE/rootfs-$SUITE-$KEY.tar
# mmdebstrap picks its output format from the file name: the partial file must end in .tar
# (a ".tmp" name makes it write a directory). A stale directory from that mistake is removed.
PARTIAL=${TARBALL%.tar}.partial.tar
[ -d "$TARBALL" ] && rm -rf "$TARBALL"
if [ -f "$TARBALL" ]; then
  echo "  cached: $TARBALL"
else
  rm -rf "$PARTIAL"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$SUITE" "$PARTIAL"
  mv "$PARTIAL" "$TARBALL"
fi

step "root filesystem: edge, units, nftables baseline, image description"
R=$WORK/root
mkdir -p "$R"
tar -xf "$TARBALL" -C "$R" --numeric-owner
KREL=$(ls "$R/usr/lib/modules" | head -n 1)
cp "$R/boot/vmlinuz-$KREL" "$WORK/vmlinuz"
rm -rf "${R:?}/boot/"*
cp -a image/overlay/. "$R/"
install -m 0755 "$EDGE_BIN" "$R/usr/bin/sase-edge"
# Debug info stays on the build host (the release profile keeps it for profiling).
if head -c 4 "$EDGE_BIN" | grep -q ELF; then strip --strip-debug "$R/usr/bin/sase-edge"; fi
mkdir -p "$R/etc/sase"
cat >"$R/etc/sase/image.json" <<EOF
{
  "version": $VERSION,
  "label": "$LABEL",
  "arch": "x86_64",
  "kernel_release": "$KREL",
  "vendor_key": "$VENDOR_PUB",
  "slots": {"a": "/dev/disk/by-partlabel/sase-root-a", "b": "/dev/disk/by-partlabel/sase-root-b"},
  "slot_bytes": $((SLOT_MB * 1024 * 1024)),
  "boot_state": "/data/boot/state",
  "work_dir": "/data/updates"
}
EOF
echo "CONFIRM_WINDOW=$CONFIRM_WINDOW" >"$R/etc/sase/update.conf"
printf 'SASE edge appliance %s (version %s)\n' "$LABEL" "$VERSION" >"$R/etc/issue"
ln -sfn /data/sase-edge "$R/var/lib/sase-edge"
wants=$R/etc/systemd/system/multi-user.target.wants
mkdir -p "$wants" "$R/etc/systemd/system/network-online.target.wants"
for unit in sase-firstboot sase-edge sase-slot-watchdog; do
  ln -sfn "/etc/systemd/system/$unit.service" "$wants/$unit.service"
done
ln -sfn /lib/systemd/system/nftables.service "$wants/nftables.service"
ln -sfn /lib/systemd/system/systemd-networkd.service "$wants/systemd-networkd.service"
ln -sfn /lib/systemd/system/systemd-networkd-wait-online.service \
  "$R/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"
: >"$R/etc/machine-id"

step "slot payload: squashfs (zstd level $ZSTD_LEVEL)"
SQUASH=$OUT/rootfs-v$VERSION.squashfs
mksquashfs "$R" "$SQUASH" -comp zstd -Xcompression-level "$ZSTD_LEVEL" -noappend -quiet -no-progress >/dev/null
SQUASH_BYTES=$(stat -c %s "$SQUASH")
if [ "$SQUASH_BYTES" -gt $((SLOT_MB * 1024 * 1024)) ]; then
  echo "build.sh: root filesystem ($SQUASH_BYTES bytes) does not fit a ${SLOT_MB} MiB slot" >&2
  exit 1
fi
echo "  $SQUASH: $((SQUASH_BYTES / 1024 / 1024)) MiB"

step "signed update bundle (vendor key)"
BUNDLE=$OUT/sase-edge-v$VERSION.sasu
"$TOOL" pack --key "$VENDOR_KEY" --payload "$SQUASH" --version "$VERSION" --label "$LABEL" \
  --kernel-release "$KREL" --out "$BUNDLE" >/dev/null
"$TOOL" verify --pubkey "$VENDOR_PUB" "$BUNDLE" >/dev/null
echo "$VENDOR_PUB" >"$OUT/vendor.pub"
echo "  $BUNDLE ($(du -h "$BUNDLE" | cut -f1)), signature checked"

if [ "$UPDATE_ONLY" = 1 ]; then
  printf '[image] update bundle v%s ready in %ss\n' "$VERSION" "$((SECONDS - STARTED))"
  exit 0
fi

step "initramfs: busybox, storage modules, slot-picking init"
I=$WORK/initramfs
mkdir -p "$I/bin" "$I/modules" "$I/dev"
cp /bin/busybox "$I/bin/busybox"
install -m 0755 image/initramfs/init "$I/init"
mknod -m 0600 "$I/dev/console" c 5 1
MODDIR=$R/usr/lib/modules/$KREL
ORDER=()
add_module() { # name, with its dependencies first (from modules.dep)
  local path deps d
  path=$(awk -F: -v m="/$1.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m {print $1; exit}' "$MODDIR/modules.dep")
  [ -n "$path" ] || return 0 # built in
  deps=$(awk -F: -v p="$path" '$1 == p {print $2}' "$MODDIR/modules.dep")
  for d in $deps; do add_module "$(basename "$d" .ko)"; done
  case " ${ORDER[*]:-} " in *" $(basename "$path") "*) return 0 ;; esac
  cp "$MODDIR/$path" "$I/modules/"
  ORDER+=("$(basename "$path")")
}
for m in virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme squashfs overlay; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" >"$I/modules.order"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initrd.img"
cp "$WORK/vmlinuz" "$OUT/vmlinuz"
CMDLINE="console=ttyS0 panic=10 loglevel=4"
echo "$CMDLINE" >"$OUT/cmdline"
echo "  modules: ${ORDER[*]}"

step "partitions: boot (FAT, UEFI), config (FAT), data (ext4)"
# UEFI: one unified kernel image (systemd's EFI stub + kernel + initramfs + command line) at
# the removable-media path, so any UEFI firmware boots the disk without a boot loader or NVRAM
# entries. The slot is chosen later, by the initramfs. (Not signed for Secure Boot.)
printf 'NAME="SASE edge appliance"\nID=sase-edge\nVERSION_ID=%s\n' "$VERSION" >"$WORK/os-release"
printf '%s' "$CMDLINE" >"$WORK/cmdline.txt"
objcopy \
  --add-section .osrel="$WORK/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$WORK/cmdline.txt" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$OUT/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$OUT/initrd.img" --change-section-vma .initrd=0x3000000 \
  /usr/lib/systemd/boot/efi/linuxx64.efi.stub "$WORK/BOOTX64.EFI"
mkfs.vfat -C -n SASEBOOT "$WORK/boot.img" $((64 * 1024)) >/dev/null
mmd -i "$WORK/boot.img" ::EFI ::EFI/BOOT
mcopy -i "$WORK/boot.img" "$WORK/BOOTX64.EFI" ::EFI/BOOT/
mcopy -i "$WORK/boot.img" "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/cmdline" ::
echo "  boot partition: EFI/BOOT/BOOTX64.EFI ($(du -h "$WORK/BOOTX64.EFI" | cut -f1), unified kernel image), vmlinuz, initrd.img, cmdline"
mkfs.vfat -C -n SASECONFIG "$WORK/config.img" $((16 * 1024)) >/dev/null
cat >"$WORK/README.txt" <<'EOF'
SASE edge appliance - configuration partition

Zero-touch enrolment: create claim.txt here with

  control_plane=https://cp.example.net:8443
  claim=<claim code from the control plane>
  name=<device name, optional>

and, when the control plane's certificate is not publicly trusted, its CA as ca.pem.
The device reads them at its first boot (see docs/IMAGE.md).
EOF
mcopy -i "$WORK/config.img" "$WORK/README.txt" ::
mkdir -p "$WORK/data/boot" "$WORK/data/sase-edge" "$WORK/data/updates"
chmod 0700 "$WORK/data/sase-edge"
printf 'active=a\nbooted=a\ntries=0\n' >"$WORK/data/boot/state"
truncate -s "${DATA_MB}M" "$WORK/data.img"
mkfs.ext4 -q -F -L sase-data -d "$WORK/data" "$WORK/data.img" "${DATA_MB}M"

step "GPT disk image with A/B slots"
DISK=$OUT/sase-edge-v$VERSION.img
rm -f "$DISK"
truncate -s $((1 + 64 + 2 * SLOT_MB + 16 + DATA_MB + 1))M "$DISK"
sfdisk --quiet "$DISK" <<EOF
label: gpt
size=64MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="sase-boot"
size=${SLOT_MB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="sase-root-a"
size=${SLOT_MB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="sase-root-b"
size=16MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="sase-config"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="sase-data"
EOF
i=0
for part in "$WORK/boot.img" "$SQUASH" "" "$WORK/config.img" "$WORK/data.img"; do
  i=$((i + 1))
  [ -n "$part" ] || continue
  start=$(sfdisk --json "$DISK" | jq -r ".partitiontable.partitions[$((i - 1))].start")
  dd if="$part" of="$DISK" bs=512 seek="$start" conv=notrunc,sparse status=none
done
ln -sfn "$(basename "$DISK")" "$OUT/sase-edge.img"
SIZE_MB=$(($(stat -c %s "$DISK") / 1024 / 1024))
cat >"$OUT/build.json" <<EOF
{"version": $VERSION, "label": "$LABEL", "kernel_release": "$KREL", "disk": "$DISK", "disk_mb": $SIZE_MB, "rootfs_bytes": $SQUASH_BYTES, "bundle": "$BUNDLE", "vendor_pub": "$VENDOR_PUB"}
EOF
printf '[image] %s: %s MiB (slot payload %s MiB), kernel %s, built in %ss\n' \
  "$DISK" "$SIZE_MB" "$((SQUASH_BYTES / 1024 / 1024))" "$KREL" "$((SECONDS - STARTED))"
