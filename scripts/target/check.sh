#!/usr/bin/env bash
# reservoir-edge on a real target: the project installed as docs/install.md tells a user, then
# checked under a real systemd and on a Raspberry Pi's architecture (issue 20).
#
#   sudo scripts/target/check.sh            # both: amd64 (nspawn) then arm64 (qemu)
#   sudo scripts/target/check.sh amd64      # or one of them
#
# amd64 (check_amd64.sh): a scratch copy of a Debian 12 root file system booted with
#   systemd-nspawn -b (systemd 252 as PID 1); systemd/install.sh run in it; then: start returns
#   after READY, readings reach a broker inside, the STATUS= line follows devices going
#   offline and back, reload applies a change and refuses a broken
#   configuration, the watchdog restarts a SIGSTOPped daemon, a clean stop publishes
#   `offline`, no seq is lost throughout, a bad configuration fails `systemctl start` with its
#   FILE:LINE in the journal, and the `systemd-analyze security` exposure.
# arm64 (check_arm64.sh): a scratch copy of the arm64 root file system in a chroot under
#   qemu-user: no compiler in the image, the pip install timed, `edge check` of the example
#   site, and an end-to-end run (broker, simulator, daemon) with no seq gap.
#
# Prints one "PASS|FAIL name: detail" line per check (stdout; progress goes to stderr) and
# exits 1 if any check failed. Last results: docs/install.md, "Checking on a real target".
#
# Needs: root; debootstrap, systemd-container (systemd-nspawn), util-linux (nsenter),
# qemu-user-static and binfmt-support (arm64), python3 >= 3.11 (tomllib) with pip on the
# host, network on the host the first time (Debian mirror for the root file systems, PyPI for the wheels; both
# cached under /var/cache/reservoir-edge-target). Nothing inside the targets uses the
# network: pip installs with --no-index from the downloaded wheels. The targets share the
# host's network, so their broker and simulators take free ports, never 1883.
#
# Takes (2-core x86-64 VM, shared): about 2 min for amd64 and 4-5 min for arm64 (most of it
# pip install under emulation) once the root file systems are cached; building them first
# adds about 1 min (amd64) and 4 min (arm64).
# Leaves nothing behind: every container, chroot process and mount it made is undone on exit,
# pass, fail or Ctrl-C, and the scratch copies under /var/tmp/reservoir-edge-target removed.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  need_root
  local arches=("$@") arch t0 rc=0 total0
  [ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
  total0=$(date +%s)
  "$TARGET_DIR/rootfs.sh" "${arches[@]}"
  echo "info date: $(date -u +%FT%TZ), host: $(uname -srm), commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
  for arch in "${arches[@]}"; do
    case $arch in amd64 | arm64) ;; *) die "unknown architecture $arch (amd64 or arm64)" ;; esac
    t0=$(date +%s)
    "$TARGET_DIR/check_$arch.sh" || rc=1
    echo "info $arch: $(($(date +%s) - t0)) s"
  done
  echo "info total: $(($(date +%s) - total0)) s, $([ "$rc" -eq 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED')"
  return "$rc"
}
main "$@"
