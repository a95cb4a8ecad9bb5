"""The sample reservoir of the page tests: a real store with 30 days of the level, latest
readings of every kind of point (good, suspect, bad, stale, never read), alarms active,
acknowledged and cleared, and notifications."""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge.web.config import WebConfig
from edge.web.port import (
    BusHealth,
    CharacteristicLevel,
    DeviceHealth,
    LimitLine,
    Notification,
    RainfallSum,
    SiteInfo,
)
from tests.support import free_port
from tests.web.keeper import PointSpec, StoreKeeper, wave
from vocab.model import AlarmState, AlarmTransition, Quality, Reading, Severity, now_ms

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PIN = "246810"
LEVEL = "level-1/water_level"
STEP_MS = 300_000  # the level gauge's poll interval
HOUR = 3_600_000
DAY = 24 * HOUR


@dataclass
class Facts:
    """What was written, for the tests to check the pages against."""

    t0: int
    level: list[Reading] = field(default_factory=list)
    hole: tuple[int, int] = (0, 0)
    bad_ts: int = 0
    suspect_ts: int = 0


SITE = SiteInfo(
    id="yangjiayuan", name="杨家源水库", gateway="gw-01", timezone="Asia/Shanghai",
    levels=(CharacteristicLevel("dead", 110.2), CharacteristicLevel("flood_limit", 123.5),
            CharacteristicLevel("design_flood", 124.8),
            CharacteristicLevel("check_flood", 125.4), CharacteristicLevel("crest", 126.0)),
    level_point=LEVEL,
    rainfall=(RainfallSum("1h", "rain/rain_1h"), RainfallSum("3h", "rain/rain_3h"),
              RainfallSum("24h", "rain/rain_24h"), RainfallSum("day", "rain/rain_day")))

SPECS = (
    PointSpec(LEVEL, "坝前水位", "m", "water_level", "level", 300.0,
              (LimitLine(123.5, "warning", "high", "flood-limit"),
               LimitLine(124.8, "alarm", "high", "flood-limit"))),
    PointSpec("rain/rain_1h", "", "mm", "rainfall", "rainfall", 300.0),
    PointSpec("rain/rain_3h", "", "mm", "rainfall", "rainfall", 300.0),
    PointSpec("rain/rain_24h", "", "mm", "rainfall", "rainfall", 300.0),
    PointSpec("rain/rain_day", "", "mm", "rainfall", "rainfall", 300.0),
    PointSpec("vw-1/piezo_p1", "P1 渗压计（上游坝坡）", "m", "piezometric_level", "seepage",
              600.0, (LimitLine(106.0, "alarm", "high", "piezo-p1"),)),
    PointSpec("vw-1/piezo_p2", "P2 渗压计（坝轴线）", "m", "piezometric_level", "seepage",
              600.0),
    PointSpec("vw-1/piezo_p3", "P3 渗压计（下游坝坡）", "m", "piezometric_level", "seepage",
              600.0),
    PointSpec("derived/gradient_1_2", "P1–P2 坡降", "", "gradient", "gradient", 600.0),
    PointSpec("gnss-1/settlement_mm", "坝顶沉降", "mm", "settlement", "displacement", 3600.0),
    PointSpec("gnss-1/downstream_mm", "坝顶顺河向位移", "mm", "displacement", "displacement",
              3600.0),
    PointSpec("vw-1/temp_p1", "P1 温度", "degC", "temperature", "other", 600.0),
)


def build_site(path: Path) -> tuple[StoreKeeper, Facts]:
    t0 = now_ms()
    facts = Facts(t0)
    facts.hole = (t0 - 10 * HOUR, t0 - 8 * HOUR)
    buses = (
        BusHealth("rs485-1", "modbus_rtu", True, (
            DeviceHealth("level-1", "雷达水位计", True, t0 - 150_000, 8640, 2, 0, None),
            DeviceHealth("vw-1", "振弦采集仪", False, t0 - 3 * HOUR, 500, 40, 18,
                         "timeout after 1.0 s (no answer from unit 3)"))),
        BusHealth("lan", "modbus_tcp", True, (
            DeviceHealth("gnss-1", "GNSS 监测站", True, t0 - 200_000, 720, 0, 0, None),)))
    sent = (Notification(t0 - 3 * HOUR, "sms", "13812345678", "a-level", "sent"),
            Notification(t0 - 30 * 60_000, "siren", "siren-1", "a-settle", "failed",
                         "no answer"))
    keeper = StoreKeeper(path, SITE, SPECS, buses, sent)
    cycles: list[tuple[list[Reading], list[AlarmTransition]]] = []
    # 30 days of the level every 5 min, offset by half a step from t0 so no reading sits
    # on a period's edge; a 2-hour hole, one failed read and one suspect spike.
    for k in range(30 * 288, -1, -1):
        ts = t0 - 150_000 - k * STEP_MS
        if facts.hole[0] <= ts <= facts.hole[1]:
            continue
        reading = Reading("level-1", "water_level", ts, 123.45 if k == 0 else wave(k), "m",
                          "good")
        if k == 60:
            reading = Reading("level-1", "water_level", ts, None, "m", "bad",
                              reason="timeout")
            facts.bad_ts = ts
        elif k == 48:
            reading = Reading("level-1", "water_level", ts, 125.9, "m", "suspect",
                              reason="step_change")
            facts.suspect_ts = ts
        facts.level.append(reading)
        cycles.append(([reading], []))

    def latest(ref: str, value: float | None, age_ms: int, quality: Quality = "good",
               reason: str | None = None, unit: str = "") -> None:
        device, point = ref.split("/", 1)
        cycles.append(([Reading(device, point, t0 - age_ms, value, unit, quality,
                                reason=reason)], []))

    latest("rain/rain_1h", 2.5, 60_000, unit="mm")
    latest("rain/rain_3h", 6.0, 60_000, unit="mm")
    latest("rain/rain_24h", 18.5, 60_000, unit="mm")
    latest("rain/rain_day", 12.0, 60_000, unit="mm")
    latest("vw-1/piezo_p1", 105.234, 120_000, unit="m")
    latest("vw-1/piezo_p2", 104.1, 3 * HOUR, unit="m")
    latest("vw-1/piezo_p3", None, 100_000, "bad", "timeout", "m")
    latest("derived/gradient_1_2", 0.085, 120_000)
    latest("gnss-1/settlement_mm", 3.2, 200_000, "suspect", "rtk_float", "mm")
    latest("gnss-1/downstream_mm", 1.1, 200_000, unit="mm")

    def alarm(alarm_id: str, ref: str, severity: Severity, state: AlarmState, ts: int,
              value: float,
              limit: float, message: str) -> None:
        device, point = ref.split("/", 1)
        cycles.append(([], [AlarmTransition(alarm_id, f"rule-{alarm_id}", device, point,
                                            severity, state, value, limit, ts, message)]))

    alarm("a-old", "rain/rain_1h", "warning", "raised", t0 - 40 * DAY, 21.0, 20.0,
          "1 h rainfall 21.0 mm ≥ 20 mm")
    alarm("a-old", "rain/rain_1h", "warning", "cleared", t0 - 39 * DAY, 3.0, 20.0, "cleared")
    alarm("a-rain", "rain/rain_1h", "warning", "raised", t0 - 2 * DAY, 22.5, 20.0,
          "短时强降雨：1 小时雨量 22.5 mm ≥ 20 mm")
    alarm("a-rain", "rain/rain_1h", "warning", "cleared", t0 - DAY, 1.0, 20.0, "已解除")
    alarm("a-level", LEVEL, "warning", "raised", t0 - 3 * HOUR, 123.52, 123.5,
          "库水位 123.52 m 超汛限水位 123.50 m")
    alarm("a-piezo", "vw-1/piezo_p1", "alarm", "raised", t0 - 2 * HOUR, 106.2, 106.0,
          "P1 渗压水位 106.20 m 超过 106.00 m")
    alarm("a-piezo", "vw-1/piezo_p1", "alarm", "acknowledged", t0 - HOUR, 106.2, 106.0,
          "acknowledged")
    alarm("a-settle", "gnss-1/settlement_mm", "critical", "raised", t0 - 30 * 60_000, 3.2,
          3.0, "坝顶沉降 3.2 mm 超过 3.0 mm")
    keeper.write(cycles)
    keeper.mark_acknowledged("a-piezo", "李四", t0 - HOUR)
    return keeper, facts


def web_config(language: str = "zh", pin: str | None = None, **extra: object) -> WebConfig:
    raw: dict[str, object] = {"listen": f"127.0.0.1:{free_port()}", "language": language}
    if pin is not None:
        raw["pin_hash"] = pin
    raw.update(extra)
    return WebConfig.model_validate(raw)


def raw_request(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One raw request to the page; status, headers and body text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def screenshots_wanted() -> bool:
    return os.environ.get("RESERVOIR_EDGE_SCREENSHOTS") == "1"
