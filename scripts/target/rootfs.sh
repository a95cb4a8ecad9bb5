#!/usr/bin/env bash
# Build (once) and cache the Debian 12 root file systems the target checks boot:
#   rootfs.sh amd64   booted with systemd-nspawn -b (a real systemd 252 as PID 1)
#   rootfs.sh arm64   a Raspberry Pi's architecture, run in a chroot under qemu-user
# A finished root file system carries .reservoir-edge-rootfs-ok; a half-built one (an
# interrupted debootstrap) is removed and rebuilt. FORCE=1 rebuilds anyway.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Services in the image must never start while it is being built, on the host's network.
deny_services() {  # deny_services ROOTFS
  mkdir -p "$1/usr/sbin"
  printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
  chmod 0755 "$1/usr/sbin/policy-rc.d"
}

# The image shares the host's network when booted: its own Mosquitto on 1883 would collide
# with the machine's broker, so it is masked; the checks start a private one on their port.
finish_image() {  # finish_image ROOTFS
  local r=$1
  ln -sf /dev/null "$r/etc/systemd/system/mosquitto.service"
  rm -f "$r/usr/sbin/policy-rc.d"
  echo "reservoir-edge-target" >"$r/etc/hostname"
  # nspawn -b needs a machine id to exist (empty is fine: systemd fills it at boot).
  : >"$r/etc/machine-id"
  # The container's root has no password; --console=passive means no one logs in.
  rm -f "$r/var/cache/apt/archives/"*.deb
  date -u +%FT%TZ >"$r/.reservoir-edge-rootfs-ok"
}

build_amd64() {
  local r; r=$(rootfs_path amd64)
  rm -rf "$r.partial"; mkdir -p "$r.partial"; deny_services "$r.partial"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$r.partial" "$MIRROR"
  finish_image "$r.partial"
  rm -rf "$r"; mv "$r.partial" "$r"
}

build_arm64() {
  local r; r=$(rootfs_path arm64)
  ensure_binfmt_arm64
  rm -rf "$r.partial"; mkdir -p "$r.partial"
  # --foreign unpacks only; the package scripts are arm64 binaries and run in the second
  # stage, inside the chroot, under qemu-aarch64 (registered with the F flag, so the
  # interpreter need not be copied into the image).
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$r.partial" "$MIRROR"
  deny_services "$r.partial"
  # The second stage mounts /proc and /sys itself and unmounts them when it ends; /dev was
  # populated with device nodes by the first stage.
  chroot "$r.partial" /debootstrap/debootstrap --second-stage
  finish_image "$r.partial"
  rm -rf "$r"; mv "$r.partial" "$r"
}

main() {
  need_root
  need_cmd debootstrap debootstrap
  [ $# -ge 1 ] || die "usage: rootfs.sh amd64|arm64 ..."
  mkdir -p "$CACHE"
  local arch start
  for arch in "$@"; do
    if [ -z "${FORCE:-}" ] && [ -e "$(rootfs_path "$arch")/.reservoir-edge-rootfs-ok" ]; then
      log "rootfs $arch: cached at $(rootfs_path "$arch")"; continue
    fi
    start=$(date +%s)
    case $arch in
      amd64) build_amd64 ;;
      arm64) build_arm64 ;;
      *) die "unknown architecture $arch (amd64 or arm64)" ;;
    esac
    log "rootfs $arch: built in $(($(date +%s) - start)) s at $(rootfs_path "$arch")"
  done
}
main "$@"
