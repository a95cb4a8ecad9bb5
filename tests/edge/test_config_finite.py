"""YAML's .inf, -.inf and .nan are errors wherever the configuration takes a number (#14).

An infinite crest level or alarm limit never alarms, a NaN compares false with everything;
each is reported as ``FILE:LINE: key: must be a finite number, got inf``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from tests.edge.test_config import GOOD, write

# (what is replaced in GOOD, its replacement with N for the number, the line, the key)
PLACES = [
    ("crest: 126.0}", "crest: N}", 2, "site.levels.crest"),
    ("{severity: alarm, value: 124.2}", "{severity: alarm, value: N}", 22,
     "rules[0].high[1].value"),
    ("hysteresis: 0.05}", "hysteresis: N}", 23, "rules[0].hysteresis"),
    ("poll_interval_s: 10", "poll_interval_s: N", 13, "devices[0].poll_interval_s"),
    ("type: float32, word_order: big}}",
     "type: float32, word_order: big},\n         calibration: {type: linear, a: N}}",
     17, "devices[0].points[0].calibration.a"),
    ("type: float32, word_order: big}}",
     "type: float32, word_order: big},\n         "
     "calibration: {type: polynomial, coefficients: [0.5, N]}}",
     17, "devices[0].points[0].calibration.coefficients[1]"),
    ("type: uint16}}", "type: uint16}, scale: N}", 18, "devices[0].points[1].scale"),
    ("port: 502, timeout_s: 1.0}", "port: 502, timeout_s: N}", 8, "buses[1].timeout_s"),
]


def test_finite_numbers_still_load(tmp_path: Path) -> None:
    old, new, _, _ = PLACES[4]
    loaded = load_config(write(tmp_path, GOOD.replace(old, new.replace("N", "1.0e3"), 1)))
    assert loaded.settings.site.levels["crest"] == 126.0


def test_a_limit_that_is_neither_number_nor_name_keeps_both_errors(tmp_path: Path) -> None:
    # Only the non-finite case folds the union's two errors into one.
    text = GOOD.replace("{severity: alarm, value: 124.2}", "{severity: alarm, value: [1]}")
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert len(raised.value.problems) == 2
