"""Where the daemon's status snapshot lives: in memory-backed ``/run`` when systemd gives
the service a runtime directory, beside the store otherwise.

The snapshot (every device's state, the outbox, the process) is rewritten every
``health.interval_s`` and is only of use while the daemon runs or just after it stopped:
`edge status` reads it. Beside the store it was 64 KiB at 200 devices, a file written to
the SD card once a health interval for nothing that must survive a power cut (at the
reservoir-shape bench's 10 s interval, a third of all the bytes the gateway wrote per
datapoint). The unit's ``RuntimeDirectory=reservoir-edge`` puts it on tmpfs, and systemd
hands the daemon that folder as ``$RUNTIME_DIRECTORY``.

`edge status` runs in the keeper's shell, without that variable: it looks in the
conventional ``/run/reservoir-edge`` (and ``$RUNTIME_DIRECTORY`` when set), and takes a
snapshot there only if it names the same store, so two gateways on one host (tests, a
technician's laptop) never read each other's. Then beside the store, where the daemon
writes when it has no runtime directory (``edge run`` in a terminal, the demo, tests).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("edge.health")

STATUS_FILE = "status.json"
# The systemd unit's RuntimeDirectory= (systemd/reservoir-edge.service).
RUN_DIR = Path("/run/reservoir-edge")


def _runtime_dir() -> Path | None:
    """systemd's ``$RUNTIME_DIRECTORY`` (the first, if the unit names several)."""
    value = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value) if value else None


def status_path(db: Path) -> Path:
    """Where the daemon writing to ``db`` keeps its status file."""
    runtime = _runtime_dir()
    if runtime is not None and runtime.is_dir():
        return runtime / STATUS_FILE
    return db.parent / STATUS_FILE


def write_status_file(db: Path, snapshot: dict[str, Any]) -> None:
    """Replace the status file atomically; a failure is logged, never raised."""
    path = status_path(db)
    tmp = path.with_suffix(".tmp")
    beside_store = db.parent / STATUS_FILE
    try:
        body = {**snapshot, "pid": os.getpid(), "store_path": str(db.resolve())}
        tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
        if path != beside_store:
            # Left by a run without a runtime directory: `edge status` must not read it.
            beside_store.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("status_file_failed", path=str(path), error=str(exc))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def read_status(db: Path) -> dict[str, Any]:
    """The latest snapshot of the daemon writing to ``db``; {} if there is none."""
    store = str(db.resolve())
    runtime = [d for d in (_runtime_dir(), RUN_DIR) if d is not None]
    for folder in dict.fromkeys(runtime):
        status = _read(folder / STATUS_FILE)
        if status is not None and status.get("store_path") == store:
            return status
    return _read(db.parent / STATUS_FILE) or {}
