"""Shared bits of the bench scripts: machine description, broker and process helpers."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import Broker, Recorder, free_port, start_edge, wait_for_port  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}")


def median(values: list[float]) -> float:
    return statistics.median(values)


__all__ = ["Broker", "Recorder", "free_port", "machine", "median", "start_edge",
           "wait_for_port"]
