# shellcheck shell=bash
# Shared by scripts/target/*.sh: paths, logging, and the clean-up registry.
# Needs root, debootstrap, systemd-nspawn (systemd-container), and for arm64 qemu-user-static
# with binfmt-support. See docs/install.md, "Checking on a real target".
# The variables set here are used by the scripts that source this file.
# shellcheck disable=SC2034
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

# --- Shared by check.sh, check_amd64.sh and check_arm64.sh ----------------------------------
SCRATCH_BASE="${RESERVOIR_EDGE_TARGET_SCRATCH:-/var/tmp/reservoir-edge-target}"
WHEELS="${RESERVOIR_EDGE_TARGET_WHEELS:-$CACHE/wheels}"
CT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

now_ms() { date +%s%3N; }
seconds() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }  # seconds MS -> "27.8"

# A TCP port nothing on this machine listens on now. The containers share the host's network,
# so their brokers and simulators must avoid the machine's own services (Mosquitto on 1883).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {  # wait_port PORT SECONDS: true once something accepts on 127.0.0.1:PORT
  local deadline=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

# A scratch copy of a cached root file system, so the cache stays as debootstrap left it.
# Removal refuses while anything is still mounted beneath it: an rm -rf through a bind mount
# of /dev would delete the host's device nodes.
scratch_copy() {  # scratch_copy ARCH: sets SCRATCH (not $(...): the clean-up must register here)
  local src dest
  src=$(rootfs_path "$1")
  [ -e "$src/.reservoir-edge-rootfs-ok" ] || die "no finished rootfs at $src: run rootfs.sh $1"
  dest="$SCRATCH_BASE/$1.$$"
  mkdir -p "$SCRATCH_BASE"
  rm_scratch "$dest"
  on_exit rm_scratch "$dest"
  cp -a "$src" "$dest"
  SCRATCH=$dest
}
rm_scratch() {
  [ -e "$1" ] || return 0
  if grep -q " $1/" /proc/self/mountinfo; then
    log "not removing $1: something is still mounted beneath it"; return 1
  fi
  rm -rf --one-file-system -- "$1"
}

# The project as docs/install.md installs it: the source tree (tracked and new files, not
# ignored ones: no venv, no stores) at /usr/local/src/reservoir-edge, and the wheels of
# its dependencies for the target's Python and architecture at /var/tmp/wheels.
copy_project() {  # copy_project ROOTFS ARCH
  local dest="$1/usr/local/src/reservoir-edge"
  mkdir -p "$dest" "$1/var/tmp/wheels"
  (cd "$REPO" && git ls-files -z -c -o --exclude-standard | xargs -0 tar -cf - --) | tar -C "$dest" -xf -
  cp "$WHEELS/$2"/*.whl "$1/var/tmp/wheels/"
}

# The site both checks run: two simulated Modbus TCP devices polled every second, a private
# broker with a password (the daemon's comes through mqtt.password_env).
CHECK_USER=gw-check
CHECK_PASSWORD=target-check-pw
site_yaml() {  # site_yaml MQTT_PORT MODBUS_PORT STORE_PATH [EXTRA_TOP_LEVEL_YAML]
  cat <<YAML
site:
  id: target-check
  name: "Target check"
  timezone: UTC
  language: en
  levels: {dead: 110.0, flood_limit: 123.5, design_flood: 124.8, crest: 126.0}
gateway: {id: gw-check}
mqtt: {host: 127.0.0.1, port: $1, topic_prefix: reservoir, username: $CHECK_USER,
       password_env: EDGE_MQTT_PASSWORD}
store: {path: $3}
health: {interval_s: 60}
buses:
  - {id: lan, type: modbus_tcp, host: 127.0.0.1, port: $2, timeout_s: 1.0}
devices:
  - id: level-1
    bus: lan
    unit: 1
    poll_interval_s: 1
    points:
      - {id: water_level, quantity: water_level, unit: m,
         register: {table: holding, address: 0, type: float32, word_order: big}}
  - id: piezo-1
    bus: lan
    unit: 2
    poll_interval_s: 1
    points:
      - {id: pressure, quantity: seepage_pressure, unit: kPa,
         register: {table: input, address: 10, type: int16}, scale: 0.1}
rules:
  - {id: level-quality, type: quality, point: level-1/water_level, range: [100.0, 130.0],
     offline: {after: 3}}
${4:-}
YAML
}

mosquitto_conf() {  # mosquitto_conf PORT PASSWORD_FILE
  printf 'per_listener_settings false\nlistener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\npersistence false\nlog_dest stderr\n' "$1" "$2"
}

# `key=value` lines of broker_log.py into the variables BL_<key> (every key it prints).
BL_messages='' BL_seq_min='' BL_seq_max='' BL_seq_gaps='' BL_duplicates='' BL_readings=''
BL_point_seen='' BL_offline_ts=''
broker_summary() {  # broker_summary SUB_LOG [broker_log.py options]
  local line
  while IFS= read -r line; do
    printf -v "BL_${line%%=*}" '%s' "${line#*=}"
  done < <(python3 "$TARGET_DIR/broker_log.py" "$@")
}

# The wheels of the project's dependencies for CPython 3.11 on ARCH, downloaded on this
# machine so the targets need no network: pip inside runs with --no-index.
ensure_wheels() {  # ensure_wheels ARCH
  local arch=$1 plat
  local -a deps
  case $arch in amd64) plat=x86_64 ;; arm64) plat=aarch64 ;; *) die "unknown arch $arch" ;; esac
  mapfile -t deps < <(python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$REPO/pyproject.toml")
  # Cached per architecture, and downloaded again when pyproject.toml's list changes.
  if [ "$(cat "$WHEELS/$arch/.dependencies" 2>/dev/null)" = "$(printf '%s\n' "${deps[@]}")" ]; then
    return 0
  fi
  log "wheels $arch: downloading for CPython 3.11 into $WHEELS/$arch"
  rm -rf "$WHEELS/$arch.partial"; mkdir -p "$WHEELS/$arch.partial"
  # setuptools and wheel: the project's own build backend, for pip's isolated build.
  python3 -m pip download -q --disable-pip-version-check --dest "$WHEELS/$arch.partial" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 \
    --abi none --platform "manylinux2014_$plat" --platform "manylinux_2_17_$plat" \
    --platform "manylinux_2_28_$plat" "setuptools>=68" wheel "${deps[@]}" 2> >(grep -v ' is ignored: ' >&2)
  printf '%s\n' "${deps[@]}" >"$WHEELS/$arch.partial/.dependencies"
  rm -rf "${WHEELS:?}/$arch"; mv "$WHEELS/$arch.partial" "$WHEELS/$arch"
}
