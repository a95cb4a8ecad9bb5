"""What the texts say (Chinese and English), how replies are read, and the codes."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.smspdu import encode_submit
from edge.channels.notify_texts import (
    AlarmFacts,
    PointWords,
    Reply,
    Texts,
    new_code,
    parse_reply,
    site_texts,
)
from edge.config import load_config

TZ = ZoneInfo("Asia/Shanghai")
# 2026-07-01 14:05 in Beijing.
TS = int(datetime(2026, 7, 1, 14, 5, tzinfo=TZ).timestamp() * 1000)
POINTS = {"level-1/water_level": ("water_level", "m"),
          "piezo-1/pressure": ("seepage_pressure", "kPa"),
          "piezo-2/pressure": ("seepage_pressure", "kPa"),
          "derived/freeboard": ("other", "m")}


def texts(language: str = "zh", names: dict[str, str] | None = None) -> Texts:
    return Texts(language, "某某水库", "Asia/Shanghai",
                 PointWords(language, names or {}, POINTS))


BASE = AlarmFacts("level-high@1", "level-1", "water_level", "alarm", 124.93, 124.8, TS,
                  "level-1/water_level alarm", "4821")


def facts(**changes: object) -> AlarmFacts:
    return replace(BASE, **changes)


def test_a_chinese_alarm_text_says_everything_in_one_sms() -> None:
    text = texts().alarm(facts())
    assert text == "【某某水库】报警：库水位 124.93m，高于限值 124.8m，07-01 14:05。回复1或4821确认"
    plan = encode_submit("+8613800000001", text, 1)
    assert plan.encoding == "ucs2" and len(plan.parts) == 1


def test_below_a_limit_and_the_other_severities() -> None:
    low = texts().alarm(facts(value=110.2, limit=110.5, severity="critical"))
    assert "危急：库水位 110.2m，低于限值 110.5m" in low
    assert "预警" in texts().alarm(facts(severity="warning"))


def test_an_english_alarm_text() -> None:
    text = texts("en").alarm(facts())
    assert text == ("[某某水库] ALARM: reservoir level 124.93 m, above the limit of 124.8 m, "
                    "at 07-01 14:05. Reply 1 or 4821 to acknowledge.")


def test_at_the_limit_itself() -> None:
    assert "库水位 124.8m，达到限值 124.8m" in texts().alarm(facts(value=124.8))
    assert "at the limit of 124.8 m" in texts("en").alarm(facts(value=124.8))
    assert texts().alarm_line(facts(value=124.8), "alarm").startswith("库水位 124.8m=124.8m")


def test_a_site_names_its_rainfall_sums_with_their_unit() -> None:
    settings = load_config(Path(__file__).resolve().parents[2] / "config" / "demo.yaml")
    words = site_texts(settings.settings).points
    assert words.unit("rain/rain_3h") == "mm"
    assert words.name("rain/rain_3h") == "rainfall rain_3h"
    assert words.name("level-1/water_level") == "reservoir level"


def test_points_in_words() -> None:
    words = PointWords("zh", {"piezo-2/pressure": "坝基渗压计P3"}, POINTS)
    assert words.name("level-1/water_level") == "库水位"
    # Two piezometers: the device tells them apart, unless the site named the point.
    assert words.name("piezo-1/pressure") == "渗压 piezo-1"
    assert words.name("piezo-2/pressure") == "坝基渗压计P3"
    assert words.name("derived/freeboard") == "derived/freeboard"
    assert words.name("gone/point") == "gone/point"
    assert words.unit("piezo-1/pressure") == "kPa"
    # Several of one quantity on one device: the point tells them apart.
    one_logger = PointWords("en", {}, {"level-1/upstream": ("water_level", "m"),
                                       "level-1/downstream": ("water_level", "m")})
    assert one_logger.name("level-1/downstream") == "reservoir level downstream"


def test_an_alarm_without_a_limit_says_what_the_rule_said() -> None:
    text = texts().alarm(facts(value=None, limit=None, message="传感器离线，无有效测值"))
    assert "报警：传感器离线，无有效测值，07-01 14:05" in text


def test_escalated_clear_test_and_relay_texts() -> None:
    zh = texts()
    assert zh.escalated(facts(severity="critical")).startswith("【某某水库】升级为危急：库水位")
    assert zh.clear(facts(value=123.4)) == \
        "【某某水库】已解除：库水位 恢复正常（123.4m），07-01 14:05。"
    assert "测试短信" in zh.test() and "无需回复" in zh.test()
    assert "siren-1" in zh.relay_failed("siren-1", "timeout")
    en = texts("en")
    assert en.clear(facts(value=None)) == "[某某水库] All clear: reservoir level back to " \
                                          "normal at 07-01 14:05."


def test_a_summary_names_every_alarm_and_asks_for_codes() -> None:
    zh = texts()
    lines = [zh.alarm_line(facts(), "alarm"),
             zh.alarm_line(facts(alarm_id="b", device="piezo-1", point="pressure", value=80.0,
                                 limit=75.0, code="5309"), "alarm"),
             zh.alarm_line(facts(), "clear")]
    assert lines[0] == "库水位 124.93m>124.8m 报警 14:05 码4821"
    text = zh.summary(lines, True)
    assert text.startswith("【某某水库】3条通知：1)库水位 124.93m>124.8m 报警 14:05 码4821；")
    assert "2)渗压 piezo-1 80kPa>75kPa 报警 14:05 码5309" in text
    assert "3)库水位已解除 14:05" in text
    assert text.endswith("回复1全部确认，或回复码确认一条。")
    assert "回复1" not in zh.summary([zh.alarm_line(facts(), "clear")], False)
    assert texts("en").summary(["a", "b"], True).endswith("or a code for one.")


@pytest.mark.parametrize(("reply", "read"), [
    ("1", Reply(True)), (" 1 ", Reply(True)), ("确认", Reply(True)), ("确认。", Reply(True)),
    ("ok", Reply(True)), ("4821", Reply(False, ("4821",))),
    ("确认 4821", Reply(False, ("4821",))), ("4821 5309 4821", Reply(False, ("4821", "5309"))),
    ("2", None), ("谢谢", None), ("12345", None), ("0123", None), ("", None),
])
def test_replies(reply: str, read: Reply | None) -> None:
    assert parse_reply(reply) == read


def test_codes_are_four_digits_and_never_taken() -> None:
    rng = random.Random(7)
    taken = {str(c) for c in range(1000, 9999)}  # all but 9999
    assert new_code(taken, rng) == "9999"
    codes = set()
    for _ in range(200):
        code = new_code(codes, rng)
        assert len(code) == 4 and code[0] != "0" and code not in codes
        codes.add(code)
