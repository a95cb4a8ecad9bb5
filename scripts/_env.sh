# Shared by scripts/demo and scripts/test: a project virtualenv, Mosquitto and Chromium.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RESERVOIR_EDGE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_mosquitto() {
  if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then return; fi
  echo "installing mosquitto (apt-get)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
}

# mbpoll (Debian's libmodbus master) checks the simulator against a client that is not
# pymodbus: tests/drivers/test_simulator.py.
ensure_mbpoll() {
  if command -v mbpoll >/dev/null 2>&1; then return; fi
  echo "installing mbpoll (apt-get)..." >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mbpoll >/dev/null 2>&1 || {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mbpoll >/dev/null
  }
}

# The keeper's page tests drive Debian's Chromium through its chromedriver (tests/web).
# Screenshots for docs/ (RESERVOIR_EDGE_SCREENSHOTS=1) also need a Chinese font.
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing chromium and chromium-driver (apt-get)..." >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      chromium-driver >/dev/null
  fi
  if [ "${RESERVOIR_EDGE_SCREENSHOTS:-}" = "1" ] && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
    echo "installing fonts-noto-cjk for the screenshots (apt-get)..." >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null
  fi
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      # Debian ships venv support separately.
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
}
