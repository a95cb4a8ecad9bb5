"""Quality rule: screening of a point's readings before any other rule sees them.

Models the gross-error (粗差) screening and its companion checks of the domain reference
§3.3, and the device alarms of §4 (over range, communication lost):

* ``range``: outside the sensor's physical range → the reading becomes ``bad``;
* ``jump``: a change between consecutive good readings larger than the process can make
  in the time between them → ``suspect``; after ``confirm`` consecutive readings that
  agree with each other at the new level, the new level is accepted (a re-zeroed sensor
  or a real step must not stay suspect for ever);
* ``gross_error``: the online 3σ / robust screen against the previous good readings
  (``OnlineGrossErrorScreen``) → ``suspect``;
* ``stuck``: unchanged within ``epsilon`` for ``samples`` readings → ``suspect``;
* ``offline``: no good reading for ``after`` poll intervals.

Every check runs on every value within the range, and the reading's reason names each
that failed (``jump: ...; gross_error: ...``): a jump can also be a gross error, and a
sensor stuck after a jump must still be counted stuck. A value outside the range is
``bad`` and goes no further: it would only pollute the statistical checks' windows.
A dry piezometer's reading (vocab.model.DRY, already ``bad``) is not checked but counts
as the sensor answering: the water being below the sensor is no reason to call it offline.

Re-qualified readings are what the engine returns, stores and publishes, with the reason;
a suspect reading raises no threshold alarm on its own (the rules on it hold their state).
Out of range, offline and stuck also raise this rule's own alarm (one at a time, in that
order of priority, at ``severity``): they need a visit to the site. Jumps and gross errors
only re-qualify readings: each is one doubtful value, not a condition.

Gross-error screening suits slow quantities (piezometers, seepage flow, displacement);
on a reservoir level in a flood a real rise can be screened as gross for
``reseed_after`` polls, delaying the level alarm, so prefer ``jump`` there.

```yaml
- id: piezo-1-quality
  type: quality
  point: piezo-1/pressure
  severity: warning
  range: [0, 400]
  offline: {after: 3}
  jump: {max_step: 20}
  gross_error: {window: 30, floor: 2.0}
  stuck: {samples: 48, epsilon: 0.0}
```
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from pydantic import Field, model_validator

from rules.base import Judgement, RuleEnv, RuleShape, RuleType, Verdict
from rules.configtypes import Delay
from rules.limits import Debounce, debounce
from rules.smallstats import PAUTA_MIN_SAMPLES, OnlineGrossErrorScreen
from vocab.configbase import StrictModel
from vocab.durations import Duration
from vocab.ids import Ident, PointRef, SeverityName
from vocab.model import CLOCK_INVALID, Quality, Reading, Severity

__all__ = ["QualityConfig", "QualityRule", "build"]


class OfflineCheck(StrictModel):
    after: int = Field(default=3, ge=1, le=10_000)
    # Default: the point's poll interval (derived points: their slowest input's).
    interval: Duration | None = None


class JumpCheck(StrictModel):
    # Largest change possible over one poll interval; scaled when readings were missed.
    max_step: float = Field(gt=0)
    confirm: int = Field(default=3, ge=1, le=100)


class GrossErrorCheck(StrictModel):
    window: int = Field(default=30, ge=3, le=10_000)
    floor: float = Field(gt=0)
    sigma: float = Field(default=3.0, gt=0)
    min_samples: int = Field(default=PAUTA_MIN_SAMPLES, ge=3)
    robust_limit: float = Field(default=3.5, gt=0)
    reseed_after: int | None = Field(default=5, ge=1)

    def screen(self) -> OnlineGrossErrorScreen:
        return OnlineGrossErrorScreen(self.window, floor=self.floor, sigma=self.sigma,
                                      min_samples=self.min_samples,
                                      robust_limit=self.robust_limit,
                                      reseed_after=self.reseed_after)


class StuckCheck(StrictModel):
    samples: int = Field(ge=2, le=100_000)
    epsilon: float = Field(default=0.0, ge=0)


class QualityConfig(StrictModel, RuleShape):
    id: Ident
    type: Literal["quality"]
    point: PointRef
    severity: SeverityName = "warning"
    range: tuple[float, float] | None = None
    offline: OfflineCheck | None = None
    jump: JumpCheck | None = None
    gross_error: GrossErrorCheck | None = None
    stuck: StuckCheck | None = None
    on_delay: Delay | None = None
    off_delay: Delay | None = None

    @model_validator(mode="after")
    def _consistent(self) -> QualityConfig:
        checks = (self.range, self.offline, self.jump, self.gross_error, self.stuck)
        if all(check is None for check in checks):
            raise ValueError("a quality rule needs at least one of range, offline, jump, "
                             "gross_error, stuck")
        if self.range is not None and self.range[0] >= self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [min, max] with min < max")
        if self.gross_error is not None:
            self.gross_error.screen()  # its own consistency rules (window ≥ min_samples)
        return self


Condition = Literal["out_of_range", "offline", "stuck"]


class QualityRule:
    def __init__(self, config: QualityConfig, interval_s: float) -> None:
        self.id = config.id
        self.point = config.point
        self.inputs = (config.point,)
        self.alarm_points = (config.point,)
        self.severity: Severity = config.severity
        self.range = config.range
        self.offline = config.offline
        self.jump = config.jump
        self.stuck = config.stuck
        self.interval_ms = int((config.offline.interval if config.offline and
                                config.offline.interval else interval_s) * 1000)
        self.screen_ = config.gross_error.screen() if config.gross_error else None
        self.debounce: Debounce = debounce(config.on_delay, config.off_delay)
        self.watch_since_ms: int | None = None
        self.last_good_ms: int | None = None
        self.not_good_run = 0
        self.reference: tuple[int, float] | None = None
        self.jump_run: list[float] = []
        # Only with a stuck check: an empty deque still takes a 64-slot block (~770 B), for
        # each of a site's 200 instruments.
        self.recent: deque[float] | None = (deque(maxlen=config.stuck.samples)
                                            if config.stuck else None)
        # (value, bound crossed) of the latest value outside the range, until one is back in.
        self.out_of_range: tuple[float, float] | None = None
        self.last_had_value = True
        self.is_stuck = False

    def restore_alarm(self, point: str, severity: Severity, side: str) -> None:
        self.debounce.restore(severity, side)

    # --- the checks ----------------------------------------------------------------------

    def _check_range(self, value: float) -> str | None:
        if self.range is None:
            return None
        low, high = self.range
        if low <= value <= high:
            self.out_of_range = None
            return None
        self.out_of_range = (value, low if value < low else high)
        return f"out_of_range: {value:g} outside [{low:g}, {high:g}]"

    def _check_jump(self, ts_ms: int, value: float) -> str | None:
        if self.jump is None:
            return None
        if self.reference is None:
            self.reference = (ts_ms, value)
            return None
        ref_ts, ref_value = self.reference
        intervals = max(1.0, (ts_ms - ref_ts) / self.interval_ms)
        allowed = self.jump.max_step * intervals
        if abs(value - ref_value) <= allowed:
            self.reference = (ts_ms, value)
            self.jump_run.clear()
            return None
        if self.jump_run and abs(value - self.jump_run[-1]) > self.jump.max_step:
            self.jump_run.clear()  # not a new level: scattered values
        self.jump_run.append(value)
        if len(self.jump_run) >= self.jump.confirm:
            # The readings agree with each other at the new level: the process moved.
            self.reference = (ts_ms, value)
            self.jump_run.clear()
            return None
        return f"jump: {value - ref_value:+g} in {(ts_ms - ref_ts) / 1000:g} s (max {allowed:g})"

    def _check_gross(self, value: float) -> str | None:
        if self.screen_ is None:
            return None
        verdict = self.screen_.check(value)
        if not verdict.suspect:
            return None
        return f"gross_error: {verdict.score:.1f} ({verdict.method})"

    def _check_stuck(self, value: float) -> str | None:
        if self.stuck is None or self.recent is None:
            return None
        self.recent.append(value)
        self.is_stuck = (len(self.recent) == self.stuck.samples
                         and max(self.recent) - min(self.recent) <= self.stuck.epsilon)
        return f"stuck: unchanged for {self.stuck.samples} readings" if self.is_stuck else None

    def _checks(self, ts_ms: int, value: float, clock_only: bool) -> tuple[Quality, str | None]:
        """The quality of a value and every reason it is doubtful."""
        out_of_range = self._check_range(value)
        if out_of_range is not None:
            # An impossible value is no value of the process: fed to the statistical
            # checks it would only pollute their windows.
            return "bad", out_of_range
        # Every check sees every value and every failure is named: a jump may also be a
        # gross error, and a sensor stuck behind a jump must still be counted stuck.
        reasons = [why for why in (self._check_jump(ts_ms, value), self._check_gross(value),
                                   self._check_stuck(value)) if why]
        reason = "; ".join(reasons) or None
        return ("suspect" if reason or clock_only else "good"), reason

    def _is_offline(self, now_ms: int) -> bool:
        if self.offline is None:
            return False
        if self.not_good_run >= self.offline.after:
            return True
        since = self.last_good_ms if self.last_good_ms is not None else self.watch_since_ms
        # Half an interval of slack: polls jitter, and a device that stopped answering
        # altogether is still caught at the next poll of any other device.
        return since is not None and (
            now_ms - since >= (self.offline.after + 0.5) * self.interval_ms)

    # --- what the engine calls -----------------------------------------------------------

    def screen(self, reading: Reading) -> tuple[Reading, list[Judgement]]:
        """The reading as re-qualified by the checks, and this rule's alarm verdict."""
        if self.watch_since_ms is None:
            self.watch_since_ms = reading.ts_ms
        quality: Quality = reading.quality
        reason: str | None = None
        # A reading suspect only because the gateway's clock is wrong still proves the
        # sensor answers: its value is judged, and it keeps its suspect quality.
        clock_only = reading.quality == "suspect" and reading.reason == CLOCK_INVALID
        if (reading.quality == "good" or clock_only) and reading.value is not None \
                and not reading.dry:
            quality, reason = self._checks(reading.ts_ms, reading.value, clock_only)
        # A dry piezometer answers too: the water is below it, no fault of the sensor. Its
        # value (the sensor's elevation) is no level, so no check sees it.
        if quality == "good" or (clock_only and reason is None) or reading.dry:
            self.last_good_ms = reading.ts_ms
            self.not_good_run = 0
        else:
            self.not_good_run += 1
        self.last_had_value = reading.value is not None
        screened = reading
        if quality != reading.quality:
            why = reason if not reading.reason else f"{reason}; {reading.reason}"
            screened = Reading(reading.device, reading.point, reading.ts_ms, reading.value,
                               reading.unit, quality, reading.raw, why)
        return screened, [self._verdict(reading.ts_ms, reading.value)]

    def offline_due_ms(self) -> int | None:
        """The earliest poll time at which ``check_offline`` can have anything to say,
        until this rule screens or checks again; None for never.

        Lets the engine skip the rule on every poll before then: with 200 devices each
        poll would otherwise ask all 200 rules whether their point went offline.
        """
        if self.offline is None or self.debounce.side == "offline":
            return None  # no check, or already offline: silent until the next reading
        if self.not_good_run >= self.offline.after:
            return 0
        since = self.last_good_ms if self.last_good_ms is not None else self.watch_since_ms
        if since is None:
            return 0  # the first check starts the watch
        # now - since >= x holds for an integer now exactly when now >= since + ceil(x).
        return since + math.ceil((self.offline.after + 0.5) * self.interval_ms)

    def check_offline(self, now_ms: int) -> list[Judgement]:
        """Between the point's own readings: a point that stopped reporting altogether."""
        if self.watch_since_ms is None:
            self.watch_since_ms = now_ms
        if not self._is_offline(now_ms) or self.debounce.side == "offline":
            return []
        return [self._verdict(now_ms, None)]

    def _condition(self, now_ms: int) -> Condition | None:
        # A sensor reading out of range is also without good readings; name the specific
        # cause while it still answers, and offline once it has stopped answering too.
        if self.out_of_range is not None and self.last_had_value:
            return "out_of_range"
        if self._is_offline(now_ms):
            return "offline"
        if self.out_of_range is not None:
            return "out_of_range"
        if self.is_stuck:
            return "stuck"
        return None

    def _verdict(self, ts_ms: int, value: float | None) -> Verdict:
        condition = self._condition(ts_ms)
        self.debounce.step(ts_ms, self.severity if condition else None, condition or "")
        limit = None
        if self.debounce.side == "out_of_range" and self.out_of_range is not None:
            value, limit = self.out_of_range
        return Verdict(self.debounce.severity, value, limit, self.debounce.side,
                       quantity="quality")


def build(config: QualityConfig, env: RuleEnv) -> QualityRule:
    return QualityRule(config, env.interval_s(config.point))


RULE_TYPE = RuleType(QualityConfig, build)
