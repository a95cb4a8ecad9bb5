"""The HST tests' site: a level and a seepage flow that follow a known HST law."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

FLOW, LEVEL = "piezo-1/flow", "level-1/water_level"
# 2022-01-01 00:00 Beijing time.
START = int(dt.datetime(2022, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp() * 1000)
HOURS = 3 * 365 * 24
NOISE = 0.01  # half-width of the uniform measurement noise, L/s


def level_at(t_days: np.ndarray) -> np.ndarray:
    # Seasonal pool plus a 23-day operating cycle, so head and season are separable.
    return 115.0 + 5.0 * np.sin(2 * np.pi * t_days / 365) + 1.5 * np.sin(2 * np.pi * t_days / 23)


def flow_law(t_days: np.ndarray, level: np.ndarray) -> np.ndarray:
    h = level - 110.0
    theta = (t_days - t_days[0]) / 100
    return (2.0 + 0.08 * h + 0.004 * h**2 + 0.0003 * h**3
            + 0.05 * np.sin(2 * np.pi * t_days / 365) + 0.03 * np.cos(2 * np.pi * t_days / 365)
            + 0.002 * theta + 0.05 * np.log1p(theta))
