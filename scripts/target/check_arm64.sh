#!/usr/bin/env bash
# The arm64 half of check.sh: a Raspberry Pi's architecture, a scratch copy of the Debian 12
# root file system run in a chroot under qemu-user (binfmt_misc). No systemd here (nspawn -b
# under emulation is too slow to be useful); the unit's behaviour is checked on amd64.
# Prints one "PASS|FAIL name: detail" line per check; exits 1 if any failed.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV=/opt/reservoir-edge/venv
E2E_SECONDS=${E2E_SECONDS:-45}
PIDS=()

# Run a command in the chroot with a clean environment (not the host's).
in_root() { chroot "$R" /usr/bin/env -i PATH="$CT_PATH" LANG=C.UTF-8 HOME=/root "$@"; }

# Start a command in the chroot in the background; it is killed on exit.
spawn() {  # spawn LOG COMMAND...
  local out=$1; shift
  chroot "$R" /usr/bin/env -i PATH="$CT_PATH" LANG=C.UTF-8 HOME=/root \
    EDGE_MQTT_PASSWORD="$CHECK_PASSWORD" "$@" >"$R$out" 2>&1 &
  PIDS+=($!)
  on_exit kill -KILL "$!"
}

# Anything still running with its root in the scratch copy (a child a killed process left
# behind) is ended by its PID before the mounts go.
kill_leftovers() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}

check_no_compiler() {
  local found
  # shellcheck disable=SC2016
  found=$(in_root /bin/sh -c 'for c in gcc cc c++ g++ clang; do command -v $c; done' || true)
  if [ -z "$found" ]; then
    check_line PASS arm64-no-compiler "no gcc/cc/c++/clang in the image ($(in_root uname -m), $(in_root python3 -V))"
  else
    check_line FAIL arm64-no-compiler "found: $(echo "$found" | tr '\n' ' ')"
  fi
}

check_pip_install() {
  local rc=0 t0 ms sdists wheels=("$R"/var/tmp/wheels/*.whl)
  t0=$(now_ms)
  # The two commands systemd/install.sh runs for the program (step 4), offline.
  { in_root python3 -m venv "$VENV" \
    && in_root "$VENV/bin/python" -m pip install --disable-pip-version-check --no-index \
      --find-links /var/tmp/wheels /usr/local/src/reservoir-edge; } \
    >"$SCRATCH_BASE/arm64-pip.log" 2>&1 || rc=$?
  ms=$(($(now_ms) - t0))
  sdists=$(find "$R/var/tmp/wheels" -maxdepth 1 -type f ! -name '*.whl')
  if [ "$rc" -eq 0 ] && [ -z "$sdists" ] && [ -x "$R$VENV/bin/edge" ]; then
    check_line PASS arm64-pip-install "venv + pip install of the source tree and ${#wheels[@]} wheels (numpy, pydantic-core, PyYAML: aarch64 wheels) in $(seconds "$ms") s under qemu, no compiler"
  else
    check_line FAIL arm64-pip-install "exit $rc after $(seconds "$ms") s (log: $SCRATCH_BASE/arm64-pip.log)"
  fi
}

check_example_site() {
  local rc=0 t0 ms summary
  t0=$(now_ms)
  summary=$(in_root env EDGE_MQTT_PASSWORD=x "$VENV/bin/edge" check \
    -c /usr/local/src/reservoir-edge/config/example-site.yaml 2>&1) || rc=$?
  ms=$(($(now_ms) - t0))
  if [ "$rc" -eq 0 ] && grep -qi '^config OK' <<<"$summary"; then
    check_line PASS arm64-edge-check "edge check of config/example-site.yaml: OK in $(seconds "$ms") s ($(grep -E '^(devices|rules):' <<<"$summary" | cut -d'(' -f1 | tr '\n' ' ' | sed 's/ *$//'))"
  else
    check_line FAIL arm64-edge-check "exit $rc in $(seconds "$ms") s: $(head -3 <<<"$summary" | tr '\n' ' ')"
  fi
}

check_end_to_end() {
  local mqtt modbus t_start t_stop rc=0 pid
  mqtt=$(free_port); modbus=$(free_port)
  mkdir -p "$R/etc/ret-check" "$R/var/tmp/ret-e2e"
  mosquitto_conf "$mqtt" /etc/ret-check/passwd >"$R/etc/ret-check/mosquitto.conf"
  in_root mosquitto_passwd -b -c /etc/ret-check/passwd "$CHECK_USER" "$CHECK_PASSWORD" 2>/dev/null
  in_root chown mosquitto:mosquitto /etc/ret-check/passwd
  site_yaml "$mqtt" "$modbus" /var/tmp/ret-e2e/edge.db >"$R/etc/ret-check/site.yaml"
  spawn /var/tmp/ret-mosquitto.log /usr/sbin/mosquitto -c /etc/ret-check/mosquitto.conf
  spawn /var/tmp/ret-simulate.log "$VENV/bin/edge" simulate -c /etc/ret-check/site.yaml
  wait_port "$mqtt" 30 || die "arm64 broker did not listen on $mqtt"
  wait_port "$modbus" 120 || die "arm64 simulator did not listen on $modbus"
  spawn /var/tmp/ret-sub.log mosquitto_sub -h 127.0.0.1 -p "$mqtt" -u "$CHECK_USER" \
    -P "$CHECK_PASSWORD" -q 1 -v -t 'reservoir/#'
  t_start=$(now_ms)
  spawn /var/tmp/ret-run.log "$VENV/bin/edge" run -c /etc/ret-check/site.yaml
  pid=${PIDS[-1]}
  sleep "$E2E_SECONDS"
  t_stop=$(now_ms)
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  sleep 1
  broker_summary "$R/var/tmp/ret-sub.log" --since-ms "$t_stop"
  if [ "$rc" -eq 0 ] && [ -z "$BL_seq_gaps" ] && [ "${BL_seq_max:-0}" -ge 10 ] \
    && [ -n "$BL_offline_ts" ]; then
    check_line PASS arm64-end-to-end "daemon + simulator + broker in the chroot for $(seconds $((t_stop - t_start))) s: seq $BL_seq_min-$BL_seq_max without a gap ($BL_readings readings, $BL_duplicates re-sent), SIGTERM -> exit 0 and 'offline'"
  else
    check_line FAIL arm64-end-to-end "exit $rc, seq ${BL_seq_min:-?}-${BL_seq_max:-?}, missing '${BL_seq_gaps}', offline ts '${BL_offline_ts}' (logs in $R/var/tmp/ret-*.log)"
  fi
}

main() {
  need_root
  ensure_binfmt_arm64
  ensure_wheels arm64
  scratch_copy arm64; R=$SCRATCH
  copy_project "$R" arm64
  chroot_mounts "$R"
  on_exit kill_leftovers
  echo "info arm64: Debian $(cat "$R/etc/debian_version") in a chroot under $(qemu-aarch64-static --version | head -1)"
  check_no_compiler
  check_pip_install
  [ -x "$R$VENV/bin/edge" ] || die "the venv was not installed"
  check_example_site
  check_end_to_end
  [ "$FAILED" -eq 0 ]
}
main "$@"
