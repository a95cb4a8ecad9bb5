"""What the alarm texts say, in Chinese (the default) or English, and how replies are read.

A keeper reads a text on an old phone, often outdoors: it must say at once which
reservoir, which measurement in words (库水位, not ``level-1/water_level``), the value
with its unit, the limit, how serious, and when (in the site's time zone), and how to
acknowledge. Chinese goes as UCS-2, 70 characters in one SMS (67 a part when longer), so
an alarm text is kept to one SMS. Every alarm carries a four-digit code: a reply of
``1`` or ``确认`` acknowledges every alarm the person was told of, a reply with a code
only that one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from vocab.model import now_ms

if TYPE_CHECKING:
    from edge.config import GatewaySettings

# How texts name a point by its quantity when point_names does not.
QUANTITY_WORDS = {
    "zh": {"water_level": "库水位", "rainfall_counter": "雨量", "rainfall": "雨量",
           "seepage_pressure": "渗压", "piezometric_level": "测压管水位",
           "seepage_flow": "渗流量", "weir_head": "量水堰水头", "displacement": "位移",
           "settlement": "沉降", "temperature": "温度", "vw_frequency": "振弦频率",
           "battery_voltage": "电池电压", "status": "状态"},
    "en": {"water_level": "reservoir level", "rainfall_counter": "rainfall",
           "rainfall": "rainfall", "seepage_pressure": "seepage pressure",
           "piezometric_level": "piezometric level", "seepage_flow": "seepage flow",
           "weir_head": "weir head", "displacement": "displacement",
           "settlement": "settlement", "temperature": "temperature",
           "vw_frequency": "VW frequency", "battery_voltage": "battery voltage",
           "status": "status"},
}
SEVERITY_WORDS = {"zh": {"warning": "预警", "alarm": "报警", "critical": "危急"},
                  "en": {"warning": "WARNING", "alarm": "ALARM", "critical": "CRITICAL"}}
# Replies that acknowledge every alarm the sender was told of.
ACK_ALL = frozenset({"1", "确认", "收到确认", "OK", "ACK", "YES", "Y"})
CODE = re.compile(r"(?<![0-9])([1-9][0-9]{3})(?![0-9])")
_NOISE = re.compile(r"[\s.,;:!?。，；：！？、'\"“”‘’()（）【】\[\]-]+")


@dataclass(frozen=True, slots=True)
class AlarmFacts:
    """An alarm as its texts need it (from the alarm transition)."""

    alarm_id: str
    device: str
    point: str
    severity: str | None
    value: float | None
    limit: float | None
    ts_ms: int
    message: str
    code: str = ""

    @property
    def ref(self) -> str:
        return f"{self.device}/{self.point}"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a reply asks: every alarm the sender was told of, or those with these codes."""

    everything: bool
    codes: tuple[str, ...] = ()


def parse_reply(text: str) -> Reply | None:
    """``1``, ``确认`` (or OK/ACK) → all; four-digit codes → those; else None."""
    codes = tuple(dict.fromkeys(CODE.findall(text)))
    if codes:
        return Reply(False, codes)
    word = _NOISE.sub("", text).upper()
    return Reply(True) if word in ACK_ALL else None


def new_code(taken: Iterable[str], rng: random.Random | None = None) -> str:
    """A four-digit code no pending alarm has (never starting with 0, never ``1``)."""
    used = set(taken)
    pick = rng or random.Random()
    for _ in range(1000):
        code = str(pick.randrange(1000, 10000))
        if code not in used:
            return code
    # 9000 codes: this many pending alarms means the site is flooded with them anyway.
    return next(str(c) for c in range(1000, 10000) if str(c) not in used)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


class PointWords:
    """Each point in words and its unit, from the site's configuration."""

    def __init__(self, language: str, names: Mapping[str, str],
                 points: Mapping[str, tuple[str, str]]) -> None:
        """``points``: ref → (quantity, unit) of every device and derived point."""
        self.language = language
        self.names = dict(names)
        self.points = dict(points)
        by_quantity: dict[str, list[str]] = {}
        for ref, (quantity, _) in self.points.items():
            by_quantity.setdefault(quantity, []).append(ref)
        # Where several points measure one quantity (piezometers), texts tell them apart
        # by device, or by point when one device has them all, or by both.
        self._suffix: dict[str, str] = {}
        for refs in by_quantity.values():
            if len(refs) < 2:
                continue
            devices = [r.split("/", 1)[0] for r in refs]
            points = [r.split("/", 1)[1] for r in refs]
            use = devices if len(set(devices)) == len(refs) else \
                points if len(set(points)) == len(refs) else refs
            self._suffix.update(zip(refs, use, strict=True))

    def name(self, ref: str) -> str:
        if ref in self.names:
            return self.names[ref]
        quantity = self.points.get(ref, ("", ""))[0]
        word = QUANTITY_WORDS[self.language].get(quantity)
        if word is None:
            return ref
        suffix = self._suffix.get(ref)
        return f"{word} {suffix}" if suffix else word

    def unit(self, ref: str) -> str:
        return self.points.get(ref, ("", ""))[1]


class Texts:
    """The texts of one site in one language."""

    def __init__(self, language: str, site_name: str, timezone: str,
                 points: PointWords) -> None:
        self.zh = language == "zh"
        self.lang = "zh" if self.zh else "en"
        self.site = site_name
        self.tz = ZoneInfo(timezone)
        self.points = points

    # -- pieces -----------------------------------------------------------------------------

    def head(self) -> str:
        return f"【{self.site}】" if self.zh else f"[{self.site}] "

    def when(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%m-%d %H:%M")

    def _clock(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%H:%M")

    def quantity(self, value: float | None, ref: str) -> str:
        unit = self.points.unit(ref)
        if not unit:
            return _number(value)
        return f"{_number(value)}{unit}" if self.zh else f"{_number(value)} {unit}"

    def severity(self, severity: str | None) -> str:
        return SEVERITY_WORDS[self.lang].get(severity or "", severity or "")

    def _condition(self, a: AlarmFacts) -> str:
        """'库水位 125m，高于限值 124.8m' or, without a limit, the rule's own words."""
        name = self.points.name(a.ref)
        if a.limit is None or a.value is None:
            return a.message
        value, limit = self.quantity(a.value, a.ref), self.quantity(a.limit, a.ref)
        where = "above" if a.value > a.limit else "below" if a.value < a.limit else "at"
        if self.zh:
            word = {"above": "高于", "below": "低于", "at": "达到"}[where]
            return f"{name} {value}，{word}限值 {limit}"
        return f"{name} {value}, {where} the limit of {limit}"

    def _ask(self, code: str) -> str:
        return f"回复1或{code}确认" if self.zh else f"Reply 1 or {code} to acknowledge."

    # -- whole texts ------------------------------------------------------------------------

    def alarm(self, a: AlarmFacts) -> str:
        sev = self.severity(a.severity)
        if self.zh:
            return f"{self.head()}{sev}：{self._condition(a)}，{self.when(a.ts_ms)}。" \
                   f"{self._ask(a.code)}"
        return f"{self.head()}{sev}: {self._condition(a)}, at {self.when(a.ts_ms)}. " \
               f"{self._ask(a.code)}"

    def escalated(self, a: AlarmFacts) -> str:
        sev = self.severity(a.severity)
        if self.zh:
            return f"{self.head()}升级为{sev}：{self._condition(a)}，{self.when(a.ts_ms)}。" \
                   f"{self._ask(a.code)}"
        return f"{self.head()}Now {sev}: {self._condition(a)}, at {self.when(a.ts_ms)}. " \
               f"{self._ask(a.code)}"

    def clear(self, a: AlarmFacts) -> str:
        name = self.points.name(a.ref)
        value = self.quantity(a.value, a.ref) if a.value is not None else ""
        if self.zh:
            now = f"（{value}）" if value else ""
            return f"{self.head()}已解除：{name} 恢复正常{now}，{self.when(a.ts_ms)}。"
        now = f" ({value})" if value else ""
        return f"{self.head()}All clear: {name} back to normal{now} at {self.when(a.ts_ms)}."

    def test(self, note: str = "") -> str:
        stamp = self.when(now_ms())
        extra = f" {note}" if note else ""
        if self.zh:
            return f"{self.head()}测试短信：报警短信通道正常，{stamp}。无需回复。{extra}".rstrip()
        return f"{self.head()}Test message: the alarm SMS channel works ({stamp}). " \
               f"No reply needed.{extra}"

    def summary(self, lines: list[str], codes: bool) -> str:
        """One text for several: every line, numbered, and how to acknowledge them."""
        joiner = "；" if self.zh else "; "
        body = joiner.join(f"{n}){line}" for n, line in enumerate(lines, 1))
        if self.zh:
            ask = "回复1全部确认，或回复码确认一条。" if codes else ""
            return f"{self.head()}{len(lines)}条通知：{body}。{ask}"
        ask = " Reply 1 to acknowledge all, or a code for one." if codes else ""
        return f"{self.head()}{len(lines)} notices: {body}.{ask}"

    # -- summary lines: one alarm in a few words --------------------------------------------

    def alarm_line(self, a: AlarmFacts, kind: str) -> str:
        name = self.points.name(a.ref)
        clock = self._clock(a.ts_ms)
        if kind == "clear":
            return f"{name}已解除 {clock}" if self.zh else f"{name} all clear {clock}"
        if a.limit is None or a.value is None:
            what = f"{name} {self.severity(a.severity)}"
        else:
            sign = ">" if a.value > a.limit else "<" if a.value < a.limit else "="
            what = f"{name} {self.quantity(a.value, a.ref)}{sign}" \
                   f"{self.quantity(a.limit, a.ref)} {self.severity(a.severity)}"
        if kind == "escalated":
            what = f"升级 {what}" if self.zh else f"now {what}"
        return f"{what} {clock} 码{a.code}" if self.zh else f"{what} {clock} code {a.code}"

    def test_line(self) -> str:
        return "测试短信" if self.zh else "test message"

    # -- the relay alarm's own message ------------------------------------------------------

    def relay_failed(self, siren: str, error: str) -> str:
        if self.zh:
            return f"警报器 {siren} 的继电器无应答或状态不符：{error}"
        return f"siren {siren}: its relay does not answer or disagrees: {error}"

    def relay_back(self, siren: str) -> str:
        return f"警报器 {siren} 的继电器已恢复应答" if self.zh else \
            f"siren {siren}: its relay answers again"


def site_texts(settings: GatewaySettings) -> Texts:
    """The texts of a site with a notify section, in its language and time zone."""
    config = settings.notify
    assert config is not None
    from rules.engine import producer_specs

    points = {f"{d.id}/{p.id}": (p.quantity, p.unit) for d, p in settings.iter_points()}
    # Derived points and the sums rules publish (rain/rain_3h) have units too.
    for spec in producer_specs(settings.rule_site()):
        sums = spec.from_rule and spec.config.type == "accumulation"
        quantity = "rainfall" if sums else "other"
        points.update({out: (quantity, spec.units.get(out, "")) for out in spec.outputs})
    return Texts(config.language, settings.site.name or settings.site.id,
                 settings.site.timezone, PointWords(config.language, config.point_names,
                                                    points))
