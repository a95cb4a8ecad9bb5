#!/usr/bin/env bash
# The amd64 half of check.sh: the project installed by systemd/install.sh into a scratch copy
# of the Debian 12 root file system, booted with systemd-nspawn -b (systemd 252 as PID 1).
# Prints one "PASS|FAIL name: detail" line per check; exits 1 if any failed.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

UNIT=reservoir-edge.service
CONF=/etc/reservoir-edge/site.yaml
SUB_LOG=/var/tmp/ret-sub.log
# systemd's limits for the watchdog check (the unit's WatchdogSec= and RestartSec=) plus the
# margin the daemon needs to start again and systemd to notice.
WATCHDOG_SEC=30 RESTART_SEC=10 WATCHDOG_MARGIN_SEC=15
# docs/install.md: "Overall exposure level for reservoir-edge.service: 1.5 OK".
MAX_EXPOSURE=${MAX_EXPOSURE:-1.5}

# Run a command inside the container, with a clean environment (not the host's).
ct() { nsenter -t "$LEADER" -a env -i PATH="$CT_PATH" LANG=C.UTF-8 "$@"; }
prop() { ct systemctl show -p "$1" --value "$UNIT"; }
journal_since() { ct journalctl -u "$UNIT" --since "@$1" -o cat --no-pager; }

# The container's PID 1 as the host sees it: nspawn's child named systemd, in another PID
# namespace. Before it execs, nspawn's child is nspawn itself in the host's namespace:
# entering that one would run the checks on the host.
find_leader() {
  local pid
  pid=$(ps --ppid "$NSPAWN_PID" -o pid=,comm= 2>/dev/null | awk '$2 == "systemd" { print $1; exit }' || true)
  if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; then
    echo "$pid"
  fi
}

boot() {  # boot ROOTFS NAME: sets NSPAWN_PID and LEADER (the container's PID 1, host view)
  # Its own session: a Ctrl-C meant for this script must reach the clean-up, which powers
  # the container off, not nspawn, which would halt it half-way and be killed meanwhile.
  setsid systemd-nspawn -b -D "$1" -M "$2" --register=no --keep-unit --console=passive \
    >"$SCRATCH_BASE/amd64-console.log" 2>&1 &
  NSPAWN_PID=$!
  on_exit stop_container
  local i
  for i in $(seq 100); do
    LEADER=$(find_leader)
    [ -n "$LEADER" ] && break
    sleep 0.1
  done
  [ -n "$LEADER" ] || die "systemd-nspawn did not start (see $SCRATCH_BASE/amd64-console.log)"
  # Until then units are still starting: a tmpfs mounted over /tmp mid-install, for one,
  # takes pip's temporary files away. systemctl fails while the bus is not up yet.
  local state=
  for _ in $(seq 300); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) return 0 ;; esac
    sleep 0.2
  done
  die "the container did not finish booting (state '$state')"
}

# Power the container off through its systemd; kill it if that does not end it in 30 s.
stop_container() {
  [ -n "${NSPAWN_PID:-}" ] || return 0
  # Interrupted while booting: the leader may not have been found yet.
  [ -n "${LEADER:-}" ] || LEADER=$(find_leader)
  if kill -0 "$NSPAWN_PID" 2>/dev/null; then
    ct systemctl poweroff --no-block >/dev/null 2>&1 || kill -TERM "$NSPAWN_PID" 2>/dev/null
    if ! timeout 30 tail --pid="$NSPAWN_PID" -f /dev/null; then
      # Killing nspawn alone would leave the container's systemd running, orphaned.
      [ -z "${LEADER:-}" ] || kill -KILL "$LEADER" 2>/dev/null
      kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  # nspawn killed from outside (a signal to the whole process group) leaves PID 1 behind.
  if [ -n "${LEADER:-}" ] && [ -e "/proc/$LEADER" ] \
    && [ "$(readlink "/proc/$LEADER/ns/pid")" != "$(readlink /proc/self/ns/pid)" ]; then
    kill -KILL "$LEADER" 2>/dev/null
  fi
  NSPAWN_PID=
}

# A transient unit in the container (stopped with it): the broker, simulator and subscriber.
ct_service() {  # ct_service NAME COMMAND...
  local name=$1; shift
  ct systemd-run --quiet --collect --unit="$name" -E EDGE_MQTT_PASSWORD="$CHECK_PASSWORD" "$@"
}

write_conf() {  # write_conf CONTENT_FILE: the site configuration as a technician would
  cp "$1" "$R$CONF"
  ct chown root:reservoir-edge "$CONF"
  ct chmod 0640 "$CONF"
}

check_fresh_install() {
  local out rc=0 t0 ms state restarts
  t0=$(now_ms)
  out=$(ct env PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/tmp/wheels \
    /usr/local/src/reservoir-edge/systemd/install.sh 2>&1) || rc=$?
  ms=$(($(now_ms) - t0))
  printf '%s\n' "$out" >"$SCRATCH_BASE/install.log"
  state=$(ct systemctl is-active "$UNIT" || true)
  restarts=$(prop NRestarts)
  if [ "$rc" -eq 3 ] && grep -q 'EDGE_MQTT_PASSWORD=<value>' <<<"$out" && [ "$state" = inactive ] \
    && [ "$restarts" = 0 ] && [ "$(ct systemctl is-enabled "$UNIT")" = enabled ]; then
    check_line PASS fresh-install "install.sh exit 3 in ${ms} ms, says 'EDGE_MQTT_PASSWORD=<value>' to add to /etc/reservoir-edge/env, unit enabled and not started ($state, NRestarts=$restarts)"
  else
    check_line FAIL fresh-install "install.sh exit $rc in ${ms} ms, unit $state, NRestarts=$restarts (output: $SCRATCH_BASE/install.log)"
  fi
}

setup_site() {
  MQTT_PORT=$(free_port); MODBUS_PORT=$(free_port)
  mkdir -p "$R/etc/ret-check"
  mosquitto_conf "$MQTT_PORT" /etc/ret-check/passwd >"$R/etc/ret-check/mosquitto.conf"
  ct mosquitto_passwd -b -c /etc/ret-check/passwd "$CHECK_USER" "$CHECK_PASSWORD" 2>/dev/null
  ct chown mosquitto:mosquitto /etc/ret-check/passwd
  site_yaml "$MQTT_PORT" "$MODBUS_PORT" /var/lib/reservoir-edge/edge.db >"$R/etc/ret-check/good.yaml"
  site_yaml "$MQTT_PORT" "$MODBUS_PORT" /var/lib/reservoir-edge/edge.db \
    'derived:
  - {id: check_marker, expression: "{level-1/water_level} + 0", unit: m}' \
    >"$R/etc/ret-check/reloaded.yaml"
  # An unknown key on the last line: its FILE:LINE must reach the journal.
  cp "$R/etc/ret-check/good.yaml" "$R/etc/ret-check/bad.yaml"
  echo "polling_mode: turbo" >>"$R/etc/ret-check/bad.yaml"
  BAD_LINE=$(wc -l <"$R/etc/ret-check/bad.yaml")
  write_conf "$R/etc/ret-check/good.yaml"
  # What the installer asked for: the password in the env file.
  echo "EDGE_MQTT_PASSWORD=$CHECK_PASSWORD" >>"$R/etc/reservoir-edge/env"
  ct_service ret-mosquitto /usr/sbin/mosquitto -c /etc/ret-check/mosquitto.conf
  ct_service ret-simulate /opt/reservoir-edge/venv/bin/edge simulate -c /etc/ret-check/good.yaml
  wait_port "$MQTT_PORT" 20 || die "the container's broker did not listen on $MQTT_PORT"
  wait_port "$MODBUS_PORT" 60 || die "the simulator did not listen on $MODBUS_PORT"
  ct_service ret-subscribe /bin/sh -c "exec mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT \
    -u $CHECK_USER -P $CHECK_PASSWORD -q 1 -v -t 'reservoir/#' >$SUB_LOG"
  log "site: broker on $MQTT_PORT, Modbus simulator on $MODBUS_PORT"
}

# Poll the subscriber's log until seq MIN_SEQ has arrived (and, given POINT, telemetry of
# POINT stamped at or after SINCE_MS). Sets the BL_* variables either way.
wait_readings() {  # wait_readings SECONDS MIN_SEQ [SINCE_MS POINT]
  local deadline=$(($(date +%s) + $1)) min=$2 since=${3:-0} point=${4:-}
  while :; do
    if [ -n "$point" ]; then
      broker_summary "$R$SUB_LOG" --since-ms "$since" --point "$point"
    else
      broker_summary "$R$SUB_LOG" --since-ms "$since"
    fi
    if [ "${BL_seq_max:-0}" -ge "$min" ] && { [ -z "$point" ] || [ "$BL_point_seen" = yes ]; }; then
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}


check_start() {
  local rc=0 t0 wall state started active
  t0=$(now_ms)
  ct systemctl start "$UNIT" || rc=$?
  wall=$(($(now_ms) - t0))
  state=$(ct systemctl is-active "$UNIT" || true)
  started=$(prop ExecMainStartTimestampMonotonic)
  active=$(prop ActiveEnterTimestampMonotonic)
  START_MS=$(((active - started) / 1000))
  if [ "$rc" -eq 0 ] && [ "$state" = active ] && [ "$(prop Type)" = notify ]; then
    check_line PASS start-after-ready "systemctl start returned in $wall ms with the unit active (Type=notify: after READY=1); start -> active $START_MS ms"
  else
    check_line FAIL start-after-ready "systemctl start exit $rc after $wall ms, state $state"
  fi
}

check_readings() {
  if wait_readings 30 3; then
    check_line PASS readings-at-broker "seq $BL_seq_min-$BL_seq_max, $BL_readings readings at the container's broker (port $MQTT_PORT)"
  else
    check_line FAIL readings-at-broker "after 30 s: ${BL_messages:-0} messages, seq max ${BL_seq_max:-none}"
  fi
}

# systemctl status's STATUS= line follows a device going offline and back at once, not at
# the next health interval (issue 20, item 4): the site's health.interval_s is 60 s, so a
# change seen within STATUS_LIMIT_SEC came from the daemon noticing it.
STATUS_LIMIT_SEC=15
wait_status() {  # wait_status TEXT SECONDS: true once StatusText contains TEXT
  local deadline=$(($(now_ms) + $2 * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    case $(prop StatusText) in *"$1"*) return 0 ;; esac
    sleep 0.2
  done
  return 1
}

check_status_line() {
  local t0 down=0 up=0 before
  before=$(prop StatusText)
  t0=$(now_ms)
  ct systemctl stop ret-simulate
  wait_status "devices online 0/2" "$STATUS_LIMIT_SEC" && down=$(($(now_ms) - t0))
  t0=$(now_ms)
  ct_service ret-simulate /opt/reservoir-edge/venv/bin/edge simulate -c /etc/ret-check/good.yaml
  wait_status "devices online 2/2" $((STATUS_LIMIT_SEC + 15)) && up=$(($(now_ms) - t0))
  if [ "$down" -gt 0 ] && [ "$up" -gt 0 ]; then
    check_line PASS status-line "STATUS= '$before'; simulator stopped -> 'devices online 0/2' in $down ms, restarted -> '2/2' in $up ms (health interval 60 s)"
  else
    check_line FAIL status-line "simulator stopped -> 0/2 after ${down} ms (0: not within ${STATUS_LIMIT_SEC} s), back -> 2/2 after ${up} ms; now '$(prop StatusText)'"
  fi
}

check_reload() {
  local pid rc=0 t0 ms
  pid=$(prop MainPID)
  write_conf "$R/etc/ret-check/reloaded.yaml"
  t0=$(now_ms)
  ct systemctl reload "$UNIT" || rc=$?
  ms=$(($(now_ms) - t0))
  if [ "$rc" -eq 0 ] && wait_readings 20 1 "$t0" derived/check_marker \
    && [ "$(prop MainPID)" = "$pid" ]; then
    check_line PASS reload-applied "systemctl reload exit 0 in $ms ms; the new derived point check_marker in telemetry, same PID $pid"
  else
    check_line FAIL reload-applied "systemctl reload exit $rc in $ms ms, check_marker seen: ${BL_point_seen:-no}, PID $pid -> $(prop MainPID)"
  fi
}

check_bad_reload() {
  local pid rc=0 t0 ms before state where
  pid=$(prop MainPID)
  before=$BL_seq_max
  write_conf "$R/etc/ret-check/bad.yaml"
  t0=$(now_ms)
  ct systemctl reload "$UNIT" 2>/dev/null || rc=$?
  ms=$(($(now_ms) - t0))
  state=$(ct systemctl is-active "$UNIT" || true)
  where=$(journal_since $((t0 / 1000)) | grep -o "site\.yaml:$BAD_LINE:[^\"]*" | head -1 || true)
  wait_readings 15 $((before + 3)) || true
  if [ "$rc" -ne 0 ] && [ "$state" = active ] && [ "$(prop MainPID)" = "$pid" ] && [ -n "$where" ] \
    && [ "${BL_seq_max:-0}" -gt "$before" ]; then
    check_line PASS bad-reload-refused "systemctl reload exit $rc in $ms ms, daemon kept running (PID $pid, seq $before -> $BL_seq_max); journal: $where"
  else
    check_line FAIL bad-reload-refused "reload exit $rc, state $state, PID $pid -> $(prop MainPID), journal FILE:LINE '${where}', seq $before -> ${BL_seq_max:-?}"
  fi
  # The configuration the daemon runs with, back on disk for the next checks.
  write_conf "$R/etc/ret-check/reloaded.yaml"
}

check_watchdog() {
  local pid restarts t0 deadline limit=$(((WATCHDOG_SEC + RESTART_SEC + WATCHDOG_MARGIN_SEC) * 1000))
  local back=0 newpid before
  pid=$(prop MainPID); restarts=$(prop NRestarts)
  broker_summary "$R$SUB_LOG"; before=$BL_seq_max
  t0=$(now_ms)
  # bash's kill: the image has no /bin/kill.
  # shellcheck disable=SC2016
  ct bash -c 'kill -STOP "$1"' _ "$pid"
  deadline=$((t0 + limit + 30000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    newpid=$(prop MainPID)
    if [ "$newpid" != 0 ] && [ "$newpid" != "$pid" ] && [ "$(prop ActiveState)" = active ]; then
      back=$(($(now_ms) - t0)); break
    fi
    sleep 0.25
  done
  wait_readings 30 $((before + 5)) || true
  if [ "$back" -gt 0 ] && [ "$back" -le "$limit" ] && [ -z "$BL_seq_gaps" ] \
    && journal_since $((t0 / 1000)) | grep -q 'Watchdog timeout'; then
    check_line PASS watchdog-restart "SIGSTOP -> watchdog timeout -> active again in $(seconds "$back") s (limit ${WATCHDOG_SEC}+${RESTART_SEC}+${WATCHDOG_MARGIN_SEC} s), NRestarts $restarts -> $(prop NRestarts), seq $before -> $BL_seq_max with no gap ($BL_duplicates re-sent)"
  else
    check_line FAIL watchdog-restart "back after ${back} ms (0: never; limit $limit ms), PID $pid -> $(prop MainPID), seq gaps '${BL_seq_gaps}'"
  fi
}

check_stop() {
  local rc=0 t0 ms code status result
  t0=$(now_ms)
  ct systemctl stop "$UNIT" || rc=$?
  ms=$(($(now_ms) - t0))
  code=$(prop ExecMainCode); status=$(prop ExecMainStatus); result=$(prop Result)
  sleep 1
  broker_summary "$R$SUB_LOG" --since-ms "$t0"
  # ExecMainCode 1 is CLD_EXITED: the daemon exited by itself, not killed by the signal.
  if [ "$rc" -eq 0 ] && [ "$code" = 1 ] && [ "$status" = 0 ] && [ "$result" = success ] \
    && [ -n "$BL_offline_ts" ]; then
    check_line PASS clean-stop "systemctl stop in $ms ms, daemon exit status 0, 'offline' published $((BL_offline_ts - t0)) ms after the stop began"
  else
    check_line FAIL clean-stop "stop exit $rc in $ms ms, ExecMainCode=$code ExecMainStatus=$status Result=$result, offline ts '${BL_offline_ts}'"
  fi
  if [ -z "$BL_seq_gaps" ] && [ -n "$BL_seq_max" ]; then
    check_line PASS no-seq-gap "seq 1-$BL_seq_max over start, reloads, watchdog restart and stop: none missing ($BL_duplicates re-sent)"
  else
    check_line FAIL no-seq-gap "missing seqs: ${BL_seq_gaps:-none}, max ${BL_seq_max:-none}"
  fi
}

check_bad_config_start() {
  local rc=0 t0 ms where
  write_conf "$R/etc/ret-check/bad.yaml"
  t0=$(now_ms)
  ct systemctl start "$UNIT" 2>/dev/null || rc=$?
  ms=$(($(now_ms) - t0))
  where=$(journal_since $((t0 / 1000)) | grep -o "site\.yaml:$BAD_LINE:[^\"]*" | head -1 || true)
  ct systemctl stop "$UNIT"   # Restart=always would retry every 10 s
  write_conf "$R/etc/ret-check/good.yaml"
  if [ "$rc" -ne 0 ] && [ -n "$where" ]; then
    check_line PASS bad-config-start "systemctl start exit $rc in $ms ms; journal: $where"
  else
    check_line FAIL bad-config-start "systemctl start exit $rc, FILE:LINE in journal: '${where}'"
  fi
}

check_security() {
  local line level
  line=$(ct systemd-analyze security --no-pager "$UNIT" | grep 'Overall exposure level' || true)
  level=$(sed -n 's/.*: \([0-9.]*\) .*/\1/p' <<<"$line")
  if [ -n "$level" ] && awk -v a="$level" -v b="$MAX_EXPOSURE" 'BEGIN { exit !(a <= b) }'; then
    check_line PASS security-exposure "systemd-analyze security: $level (documented: $MAX_EXPOSURE)"
  else
    check_line FAIL security-exposure "'$line' (documented: $MAX_EXPOSURE)"
  fi
}

main() {
  need_root
  need_cmd systemd-nspawn systemd-container
  need_cmd nsenter util-linux
  ensure_wheels amd64
  scratch_copy amd64; R=$SCRATCH
  copy_project "$R" amd64
  boot "$R" "ret-check-$$"
  log "amd64: Debian $(cat "$R/etc/debian_version"), $(ct systemctl --version | head -1)," \
    "$(ct python3 -V)"
  echo "info amd64: Debian $(cat "$R/etc/debian_version"), $(ct systemctl --version | head -1 | cut -d' ' -f1-2), $(ct python3 -V)"
  check_fresh_install
  [ -x "$R/opt/reservoir-edge/venv/bin/edge" ] || die "install.sh did not install the venv"
  setup_site
  check_start
  check_readings
  check_status_line
  check_reload
  check_bad_reload
  check_watchdog
  check_stop
  check_bad_config_start
  check_security
  [ "$FAILED" -eq 0 ]
}
main "$@"
