# Shared by scripts/target/*.sh: paths, logging, and the clean-up registry.
# Needs root, debootstrap, systemd-nspawn (systemd-container), and for arm64 qemu-user-static
# with binfmt-support. See docs/install.md, "Checking on a real target".
set -euo pipefail
TARGET_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$TARGET_DIR/../.." && pwd)"
# Root file systems are large (about 300 MB each) and slow to build (arm64 under emulation
# takes minutes), so they are cached outside the repository and reused.
CACHE="${RESERVOIR_EDGE_TARGET_CACHE:-/var/cache/reservoir-edge-target}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# What a minimal Debian 12 image has plus what docs/install.md asks the user to install
# (python3-venv), a broker and its clients for the end-to-end checks, and dbus for systemctl.
# minbase on purpose: no procps, so nothing may rely on /bin/kill or pgrep.
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,mosquitto,mosquitto-clients"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# One line per check, stable shape: "PASS name: detail" / "FAIL name: detail".
FAILED=0
check_line() {  # check_line PASS|FAIL NAME DETAIL
  printf '%s %s: %s\n' "$1" "$2" "$3"
  if [ "$1" != PASS ]; then FAILED=$((FAILED + 1)); fi
}

# Everything this run mounts or starts is registered here and undone in reverse order on
# exit, whether the run passed, failed or was interrupted.
CLEANUPS=()
on_exit() { CLEANUPS+=("$*"); }
run_cleanups() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUPS[$i]}" >/dev/null 2>&1 || true
  done
  CLEANUPS=()
}
trap run_cleanups EXIT
trap 'exit 130' INT TERM

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, nspawn and binfmt_misc need it)"; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 missing: apt-get install $2"; }

rootfs_path() { echo "$CACHE/$SUITE-$1"; }   # rootfs_path amd64|arm64

# Make qemu-aarch64 run arm64 binaries: binfmt_misc mounted and the handler enabled. A mount
# made here is undone on exit; one that was already there is left alone.
ensure_binfmt_arm64() {
  need_cmd qemu-aarch64-static qemu-user-static
  need_cmd update-binfmts binfmt-support
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    on_exit umount /proc/sys/fs/binfmt_misc
  fi
  if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    update-binfmts --enable qemu-aarch64
  fi
}

# Mounts for a chroot (arm64 runs under qemu-user in a chroot, not nspawn); each is registered
# for unmounting. /dev is bound recursively and made a slave at once: a plain bind of the
# host's shared /dev would be its peer, and anything mounted beneath it (a devpts) would
# propagate onto the host's /dev.
chroot_mounts() {  # chroot_mounts ROOTFS
  local r=$1
  if ! mountpoint -q "$r/proc"; then
    mount -t proc proc "$r/proc"; on_exit umount -l "$r/proc"
  fi
  if ! mountpoint -q "$r/sys"; then
    mount -t sysfs sys "$r/sys"; on_exit umount -l "$r/sys"
  fi
  if ! mountpoint -q "$r/dev"; then
    mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"; on_exit umount -R -l "$r/dev"
  fi
  cp -L /etc/resolv.conf "$r/etc/resolv.conf"
}
