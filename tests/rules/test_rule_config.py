"""Rule and derived-point configuration errors, reported as FILE:LINE: key.path: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from tests.support import run_edge

SITE = """\
site: {id: yangjiayuan, timezone: Asia/Shanghai, language: zh,
       levels: {dead: 110.0, flood_limit: 123.5, design_flood: 124.8, crest: 126.0}}
gateway: {id: gw-01}
mqtt: {host: 127.0.0.1}
store: {path: /tmp/edge-test.db}
buses:
  - {id: lan, type: modbus_tcp, host: 192.168.1.50}
devices:
  - id: level-1
    bus: lan
    poll_interval_s: 300
    points:
      - {id: water_level, quantity: water_level, unit: m,
         register: {table: holding, address: 0, type: float32}}
      - {id: rain, quantity: rainfall_counter, unit: mm,
         register: {table: holding, address: 2}, tipping_bucket: {mm_per_tip: 0.5}}
  - id: piezo-1
    bus: lan
    poll_interval_s: 3600
    points:
      - {id: head, quantity: piezometric_level, unit: m, register: {table: input, address: 0}}
      - {id: head2, quantity: piezometric_level, unit: m, register: {table: input, address: 1}}
derived:
  - {id: freeboard, expression: "crest - {level-1/water_level}", unit: m}
  - {id: gradient, expression: "({piezo-1/head} - {piezo-1/head2}) / L", constants: {L: 12.5}}
rules:
  - {id: level-high, type: threshold, point: level-1/water_level,
     high: [{severity: warning, value: flood_limit}], hysteresis: 0.05,
     on_delay: {samples: 2}}
  - {id: level-rise, type: rate, point: level-1/water_level, method: least_squares,
     window: 1h, per: m/h, high: [{severity: warning, value: 0.3}]}
  - {id: level-q, type: quality, point: level-1/water_level, range: [100, 130],
     offline: {after: 3}, jump: {max_step: 0.5}}
  - {id: freeboard-low, type: threshold, point: derived/freeboard,
     low: [{severity: warning, value: 1.0}]}
  - id: rain
    type: accumulation
    point: level-1/rain
    windows:
      - {window: 1h, high: [{severity: warning, value: 20}]}
      - {window: 3h, high: [{severity: alarm, value: 50}]}
    event: {dry_gap: 6h}
  - {id: seepage-hst, type: hst, point: piezo-1/head, level: level-1/water_level,
     head_reference: dead, fit: {base_date: 2023-01-01, history: 365d}}
  - {id: piezo-lag, type: lag_correlation, point: piezo-1/head,
     level: level-1/water_level, lag: 10d, low: [{severity: warning, value: 0.5}]}
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_every_rule_type_and_derived_points_load(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, SITE)).settings
    assert [r.type for r in s.rules] == ["threshold", "rate", "quality", "threshold",
                                         "accumulation", "hst", "lag_correlation"]
    assert [d.key for d in s.derived] == ["derived/freeboard", "derived/gradient"]
    assert s.store.retention_days == 400
    assert s.rules[1].window == 3600.0  # "1h"


def test_edge_check_counts_every_rule_type(tmp_path: Path) -> None:
    result = run_edge(["check", "-c", str(write(tmp_path, SITE))])
    assert result.returncode == 0, result.stderr
    assert ("rules: 7 (1 accumulation, 1 hst, 1 lag_correlation, 1 quality, 1 rate, "
            "2 threshold)") in result.stdout


def test_rules_may_use_the_sums_of_an_accumulation_rule(tmp_path: Path) -> None:
    text = SITE + ("  - {id: rain-day, type: threshold, point: rain/rain_day,\n"
                   "     high: [{severity: warning, value: 50}]}\n")
    assert load_config(write(tmp_path, text)).settings.rules[-1].point == "rain/rain_day"
    wrong = text.replace("point: rain/rain_day", "point: rain/rain_24h")
    assert errors(tmp_path, wrong) == [
        "site.yaml:47: rules[7].point: rule 'rain-day' refers to point 'rain/rain_24h', "
        "which is not defined (device exists but has no such point)"]


@pytest.mark.parametrize("module_name", ["threshold", "rate", "accumulation", "quality", "hst",
                                         "lag_correlation", "derived"])
def test_the_yaml_examples_in_the_rule_modules_are_valid(module_name: str) -> None:
    import importlib
    import re

    import yaml

    module = importlib.import_module(f"rules.{module_name}")
    (block,) = re.findall(r"```yaml\n(.*?)```", module.__doc__ or "", re.S)
    data = yaml.safe_load(block)
    model = next(getattr(module, name) for name in module.__all__ if name.endswith("Config"))
    items = data["derived"] if module_name == "derived" else data
    assert items
    for item in items:
        model.model_validate(item)


ANALYSES = """\
  - {id: p1-potential, type: potential, point: piezo-1/head, reservoir: level-1/water_level,
     downstream: dead, high: [{severity: warning, value: 0.6}]}
  - {id: forecast, type: time_to_level, point: level-1/water_level,
     targets: [{level: crest, alarms: [{severity: critical, within: 3h}]}]}
  - {id: p1-sl, type: seepage_level, point: piezo-1/head, level: level-1/water_level,
     lag_rule: piezo-lag, high: [{severity: warning, value: 2}]}
  - {id: alpha-high, type: threshold, point: p1-potential/alpha,
     high: [{severity: alarm, value: 0.7}]}
"""


def test_the_analyses_load_and_their_readings_are_points(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, SITE + ANALYSES)).settings
    assert [r.type for r in s.rules[7:]] == ["potential", "time_to_level", "seepage_level",
                                            "threshold"]
    result = run_edge(["check", "-c", str(write(tmp_path, SITE + ANALYSES))])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("downstream: dead", "downstream: tailwater",
     "site.yaml:48: rules[7].downstream: rule 'p1-potential' uses site level 'tailwater', "
     "which is not in site.levels (dead, flood_limit, design_flood, crest)"),
    ("downstream: dead", "downstream: level-1/rain",
     "site.yaml:48: rules[7].downstream: rule 'p1-potential': point 'level-1/rain' is in "
     "'mm'; the piezometric potential needs levels in m"),
    ("{level: crest,", "{level: check_flood,",
     "site.yaml:50: rules[8].targets[0].level: rule 'forecast' uses site level "
     "'check_flood', which is not in site.levels (dead, flood_limit, design_flood, crest)"),
    ("type: time_to_level, point: level-1/water_level", "type: time_to_level, point: "
     "level-1/rain",
     "site.yaml:49: rules[8].point: rule 'forecast': point 'level-1/rain' is in 'mm'; "
     "time to a level needs a level in m"),
    ("lag_rule: piezo-lag", "lag_rule: level-rise",
     "site.yaml:52: rules[9].lag_rule: rule 'p1-sl': lag_rule 'level-rise' is not a "
     "lag_correlation rule of this site"),
    ("point: p1-potential/alpha", "point: p1-potential/alpha_drift",
     "site.yaml:53: rules[10].point: rule 'alpha-high' refers to point "
     "'p1-potential/alpha_drift', which is not defined (device exists but has no such "
     "point)"),
])
def test_analysis_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert errors(tmp_path, SITE + ANALYSES.replace(old, new)) == [expected]


def test_seepage_level_history_and_lag_must_be_retained(tmp_path: Path) -> None:
    text = (SITE + ANALYSES).replace("store: {path: /tmp/edge-test.db}",
                                     "store: {path: /tmp/edge-test.db, retention_days: 370}")
    assert errors(tmp_path, text) == [
        "site.yaml:51: rules[9].history: rule 'p1-sl' needs 375d of history (history + the "
        "lag), longer than the store keeps"]
