#!/usr/bin/env bash
# Install or upgrade reservoir-edge on Raspberry Pi OS / Debian. Safe to re-run: the store in
# /var/lib/reservoir-edge and any config in /etc/reservoir-edge are never overwritten.
# See docs/install.md.
set -euo pipefail

readonly SERVICE=reservoir-edge
readonly UNIT_NAME=reservoir-edge.service
# Debian's interpreter, not whatever python3 is first on PATH (pyenv, conda): the venv must
# survive as long as the OS package does. PYTHON overrides it.
PYTHON=${PYTHON:-/usr/bin/python3}
readonly MIN_PY_MAJOR=3 MIN_PY_MINOR=11

usage() {
    cat <<EOF
Usage: install.sh [--dry-run] [--prefix DIR] [SOURCE_DIR]

Installs reservoir-edge from SOURCE_DIR (default: the source tree this script belongs to)
into /opt/reservoir-edge/venv, installs the systemd unit, enables it and (re)starts it
after 'edge check' has accepted the configuration in /etc/reservoir-edge.

  --dry-run       print the commands instead of running them (read-only probes still run)
  --prefix DIR    install under DIR instead of / (DESTDIR=DIR does the same). Creating the
                  user, chown and every systemctl/timedatectl call are skipped in this mode,
                  and the venv only works at DIR/opt/... (venvs are not relocatable), so it is
                  meant for tests and inspection, not for building images.
  -h, --help      show this help

Environment: PYTHON (default /usr/bin/python3, must be >= ${MIN_PY_MAJOR}.${MIN_PY_MINOR}).
Exit status: 0 installed, 1 error, 2 usage, 3 configuration refused by 'edge check'.
EOF
}

DRY_RUN=0
ROOT=${DESTDIR:-}
SRC=""
while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --prefix)
            (($# >= 2)) || { usage >&2; exit 2; }
            ROOT=$2
            shift
            ;;
        --prefix=*) ROOT=${1#--prefix=} ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *)
            [[ -z $SRC ]] || { echo "install.sh: only one SOURCE_DIR" >&2; exit 2; }
            SRC=$1
            ;;
    esac
    shift
done

if [[ -n $ROOT ]]; then
    # Relative prefixes would change meaning after the 'cd /' before 'edge check'.
    ROOT=$(realpath -m -- "$ROOT")
    [[ $ROOT != / ]] || ROOT=""
fi
PREFIX_MODE=0
[[ -z $ROOT ]] || PREFIX_MODE=1

if [[ -z $SRC ]]; then
    SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
fi
SRC=$(realpath -e -- "$SRC") || { echo "install.sh: source tree not found" >&2; exit 1; }

readonly OPT_DIR=$ROOT/opt/$SERVICE
readonly VENV=$OPT_DIR/venv
readonly CONF_DIR=$ROOT/etc/$SERVICE
readonly ENV_FILE=$CONF_DIR/env
readonly STATE_DIR=$ROOT/var/lib/$SERVICE
readonly UNIT_DIR=$ROOT/etc/systemd/system
readonly UNIT_SRC=$SRC/systemd/$UNIT_NAME
readonly EXAMPLE_CONF=$SRC/config/example-site.yaml

SUMMARY=()
note() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit "${2:-1}"; }
did() { SUMMARY+=("$*"); }

# Every state-changing command goes through run: it is echoed (the "what it did" log) and,
# under --dry-run, only echoed.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    ((DRY_RUN)) || "$@"
}

# install(1) with ownership only when installing for real: in prefix mode the user and group
# may not exist on the build host and chown would need root.
install_as() {
    local owner=$1 group=$2
    shift 2
    if ((PREFIX_MODE)); then
        run install "$@"
    else
        run install -o "$owner" -g "$group" "$@"
    fi
}

# Write stdin to DEST with MODE; under --dry-run say so without creating even a temp file.
write_new_file() {
    local mode=$1 owner=$2 group=$3 dest=$4 tmp
    if ((DRY_RUN)); then
        printf '+ write %q (mode %s, %s:%s)\n' "$dest" "$mode" "$owner" "$group"
        cat >/dev/null
        return
    fi
    tmp=$(mktemp)
    cat >"$tmp"
    install_as "$owner" "$group" -m "$mode" "$tmp" "$dest"
    rm -f -- "$tmp"
}

# --- Preflight -------------------------------------------------------------------------------
((PREFIX_MODE)) && note "prefix mode: installing under $ROOT"
((DRY_RUN)) && note "dry run: commands are printed, not run"
if ((!PREFIX_MODE && !DRY_RUN)) && [[ $(id -u) != 0 ]]; then
    die "must run as root (sudo $0), or use --dry-run / --prefix"
fi
for f in "$SRC/pyproject.toml" "$UNIT_SRC" "$EXAMPLE_CONF"; do
    [[ -f $f ]] || die "$f missing: is $SRC a reservoir-edge source tree?"
done

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
PY_VER=$(py_version "$PYTHON") || die "cannot run $PYTHON (apt-get install python3)"
[[ $PY_VER =~ ^[0-9]+\.[0-9]+$ ]] || die "$PYTHON reported an unreadable version: $PY_VER"
IFS=. read -r py_major py_minor <<<"$PY_VER"
if ((py_major < MIN_PY_MAJOR || (py_major == MIN_PY_MAJOR && py_minor < MIN_PY_MINOR))); then
    die "$PYTHON is Python $PY_VER; reservoir-edge needs >= $MIN_PY_MAJOR.$MIN_PY_MINOR"
fi
note "using $PYTHON (Python $PY_VER), source tree $SRC"

# Debian splits ensurepip out of python3; without it 'python3 -m venv' fails half-way.
if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    if ((PREFIX_MODE)); then
        die "$PYTHON lacks ensurepip; install python3-venv"
    fi
    run apt-get update
    run apt-get install -y python3-venv
    did "installed python3-venv"
fi

# --- Service account -------------------------------------------------------------------------
if ((PREFIX_MODE)); then
    note "prefix mode: skipping user creation and chown (user $SERVICE is not created)"
elif getent passwd "$SERVICE" >/dev/null; then
    note "user $SERVICE exists"
    # Serial nodes are root:dialout 0660; an account created by hand may lack the group.
    if ! id -nG "$SERVICE" | tr ' ' '\n' | grep -qx dialout; then
        run usermod -a -G dialout "$SERVICE"
        did "added $SERVICE to group dialout"
    fi
else
    # A group left behind by a removed account would make --user-group fail.
    if getent group "$SERVICE" >/dev/null; then
        group_opt=(--gid "$SERVICE")
    else
        group_opt=(--user-group)
    fi
    # No login shell and the state dir as home: the account only runs the daemon.
    run useradd --system "${group_opt[@]}" --groups dialout \
        --home-dir "/var/lib/$SERVICE" --no-create-home --shell /usr/sbin/nologin \
        --comment "reservoir-edge gateway daemon" "$SERVICE"
    did "created system user $SERVICE (groups: $SERVICE, dialout)"
fi

# --- Directories -----------------------------------------------------------------------------
# Config: root-owned so the daemon can read but not rewrite it; group-readable for the daemon,
# closed to others because of the MQTT password in env. Matches ConfigurationDirectoryMode.
install_as root "$SERVICE" -d -m 0750 "$CONF_DIR"
# Store: only the daemon writes here. Matches StateDirectoryMode.
install_as "$SERVICE" "$SERVICE" -d -m 0750 "$STATE_DIR"
install_as root root -d -m 0755 "$OPT_DIR"
# Only created for a bare prefix; on a real system it exists and its mode is not ours to set.
[[ -d $UNIT_DIR ]] || run mkdir -p -- "$UNIT_DIR"

# --- Virtualenv and package ------------------------------------------------------------------
# A venv is bound to the interpreter it was made with; after an OS upgrade changes the Python
# minor version it is dead, so it is rebuilt rather than patched.
if [[ -e $VENV ]]; then
    venv_ver=$(py_version "$VENV/bin/python" || true)
    if [[ $venv_ver == "$PY_VER" ]]; then
        note "reusing $VENV"
    else
        note "venv is Python ${venv_ver:-(unusable)}, system is $PY_VER: rebuilding it"
        run rm -rf -- "$VENV"
        run "$PYTHON" -m venv "$VENV"
        did "rebuilt $VENV for Python $PY_VER"
    fi
else
    run "$PYTHON" -m venv "$VENV"
    did "created $VENV"
fi
# --upgrade reinstalls the project from the tree even when the version number is unchanged;
# dependencies move only when the tree's requirements demand it.
run "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade \
    --upgrade-strategy only-if-needed "$SRC"
did "installed reservoir-edge from $SRC into $VENV"

# --- Configuration ---------------------------------------------------------------------------
# 'edge run -c DIR' reads every *.yaml in DIR, so any of them means a technician's config
# exists; the example is only a starting point for a bare gateway.
shopt -s nullglob
existing_conf=("$CONF_DIR"/*.yaml)
shopt -u nullglob
if ((${#existing_conf[@]})); then
    note "keeping existing config: ${existing_conf[*]}"
    did "kept existing config in $CONF_DIR (not overwritten)"
else
    install_as root "$SERVICE" -m 0640 "$EXAMPLE_CONF" "$CONF_DIR/site.yaml"
    did "installed example config as $CONF_DIR/site.yaml: edit it for this site"
fi

if [[ -e $ENV_FILE ]]; then
    # Tighten, never rewrite: the content is the technician's, the exposure is ours to fix.
    perms=$(stat -c '%a' -- "$ENV_FILE")
    if ((8#$perms & 8#0007)); then
        warn "$ENV_FILE is world-accessible (mode $perms); restricting it to 0640"
        run chmod 0640 -- "$ENV_FILE"
        did "restricted $ENV_FILE to mode 0640"
    fi
else
    write_new_file 0640 root "$SERVICE" "$ENV_FILE" <<'EOF'
# Environment for reservoir-edge.service, read by systemd (as root) before the daemon starts.
# One NAME=value per line, no "export". The MQTT password goes here under the name given as
# mqtt.password_env in the site config, e.g. with "password_env: EDGE_MQTT_PASSWORD":
#   EDGE_MQTT_PASSWORD=the-broker-password
# so the secret never sits in the YAML or in the unit. Keep this file mode 0640, owner root,
# group reservoir-edge.
EOF
    did "created $ENV_FILE (mode 0640) for the MQTT password variables"
fi

# --- systemd unit ----------------------------------------------------------------------------
if [[ -f $UNIT_DIR/$UNIT_NAME ]] && cmp -s -- "$UNIT_SRC" "$UNIT_DIR/$UNIT_NAME"; then
    note "unit $UNIT_DIR/$UNIT_NAME is up to date"
else
    install_as root root -m 0644 "$UNIT_SRC" "$UNIT_DIR/$UNIT_NAME"
    did "installed $UNIT_DIR/$UNIT_NAME (site changes belong in a drop-in, see docs/install.md)"
fi
if ((PREFIX_MODE)); then
    note "prefix mode: skipping systemctl daemon-reload / enable / restart"
else
    run systemctl daemon-reload
    run systemctl enable "$UNIT_NAME"
    did "enabled $UNIT_NAME at boot"
fi

# --- Clock -----------------------------------------------------------------------------------
# A Pi has no RTC: until NTP syncs, readings and alarm timestamps carry the last shutdown time.
if ((PREFIX_MODE)); then
    note "prefix mode: skipping the time synchronisation check (host clock is not the target's)"
else
    synced=$(timedatectl show -p NTPSynchronized --value 2>/dev/null || true)
    if [[ $synced != yes ]]; then
        warn "system clock is not NTP-synchronised (NTPSynchronized=${synced:-unknown});" \
            "timestamps will be wrong until it is: see docs/install.md, 'Time'"
    fi
fi

# --- Validate, then (re)start ----------------------------------------------------------------
# The check sees what the daemon will see: same user (so unreadable files show up) and the
# NAME=value lines of the env file. Values are passed, never printed.
env_args=()
if [[ -r $ENV_FILE ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        val=${BASH_REMATCH[2]}
        if [[ $val =~ ^\"(.*)\"$ || $val =~ ^\'(.*)\'$ ]]; then
            val=${BASH_REMATCH[1]}
        fi
        env_args+=("$key=$val")
    done <"$ENV_FILE"
fi
check_cmd=("$VENV/bin/edge" check -c "$CONF_DIR")
((PREFIX_MODE)) || check_cmd=(runuser -u "$SERVICE" -- "${check_cmd[@]}")
printf '+ (cd / && env <%d variables from %s>' "${#env_args[@]}" "$ENV_FILE"
printf ' %q' "${check_cmd[@]}"
printf ')\n'
check_ok=1
missing_vars=()
if ((!DRY_RUN)); then
    check_err=$(mktemp)
    # cd /: the service user may not be able to enter the installer's working directory.
    (cd / && env "${env_args[@]}" "${check_cmd[@]}") 2>"$check_err" || check_ok=0
    cat -- "$check_err" >&2
    # A variable the configuration names (mqtt.password_env) but the env file does not set
    # would make every start fail: say exactly what to add instead of starting the unit.
    mapfile -t missing_vars < <(sed -n \
        's/.*environment variable \([A-Za-z_][A-Za-z0-9_]*\) is not set.*/\1/p' \
        "$check_err" | sort -u)
    rm -f -- "$check_err"
fi

print_summary() {
    echo
    if ((DRY_RUN)); then
        echo "Dry run: nothing was changed. A real run would have:"
    else
        echo "reservoir-edge install:"
    fi
    local line
    for line in "${SUMMARY[@]}"; do
        printf '  - %s\n' "$line"
    done
}

if ((!check_ok)); then
    print_summary
    if ((!PREFIX_MODE)) && systemctl is-active --quiet "$UNIT_NAME"; then
        warn "'edge check' refused the configuration in $CONF_DIR: NOT restarting." \
            "The running daemon keeps its old configuration (and old code in memory);" \
            "its next restart or a reboot will fail until the configuration is fixed."
    else
        warn "'edge check' refused the configuration in $CONF_DIR: NOT starting."
    fi
    if ((${#missing_vars[@]})); then
        warn "the configuration names variables that $ENV_FILE does not set. Add:"
        for var in "${missing_vars[@]}"; do
            printf '    %s=<value>\n' "$var" >&2
        done
        warn "with: sudoedit $ENV_FILE   then re-run install.sh (or: systemctl restart" \
            "$UNIT_NAME)"
    fi
    die "fix the configuration, then re-run install.sh" 3
fi

if ((DRY_RUN)); then
    did "run 'edge check' on $CONF_DIR and stopped there if it refused the configuration"
else
    did "'edge check' accepted $CONF_DIR"
fi
if ((!PREFIX_MODE)); then
    # restart, not reload: the code in the venv may have changed, and restart also starts a
    # stopped unit.
    ((DRY_RUN)) && note "the restart below runs only if 'edge check' accepts the configuration"
    run systemctl restart "$UNIT_NAME"
    did "restarted $UNIT_NAME"
fi

print_summary
if ((!PREFIX_MODE)); then
    echo "Follow the daemon with: journalctl -u $SERVICE -f"
fi
