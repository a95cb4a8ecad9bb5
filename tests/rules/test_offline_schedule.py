"""The engine asks a quality screen whether its point went offline only when it is due.

Many small devices each polled on their own make many polls: a scan of every screen on
every poll costs screens × polls. The schedule must save that work without changing a
single transition: a silent point is still found at the first poll past its due time.
"""

from __future__ import annotations

import random
from typing import Any

from rules.engine import RuleEngine
from tests.rules.sample_site import MIN, T0, reading, settings
from vocab.model import AlarmTransition

STEP = 5 * MIN  # the sample site's poll interval
POINTS = ("level-1/water_level", "piezo-1/head", "piezo-1/head2", "piezo-1/flow")


def offline_rules(after: int = 3, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"q-{n}", "type": "quality", "point": point,
             "offline": {"after": after}, **extra} for n, point in enumerate(POINTS)]


def test_steady_polls_ask_no_screen_and_a_silent_point_is_found_when_due() -> None:
    engine = RuleEngine(settings(offline_rules()).rule_site())
    engine.evaluate([reading(p, T0, 118.0) for p in POINTS])
    checked = []
    found: list[AlarmTransition] = []
    for i in range(1, 8):
        # Each point its own poll, as many small devices are polled; the piezometer's
        # flow channel has stopped answering altogether after the first poll.
        for n, point in enumerate(POINTS[:-1]):
            found += engine.evaluate([reading(point, T0 + i * STEP + n, 118.0)]).transitions
            checked.append(engine.offline.checked)
    # 3.5 intervals without a reading of the flow: found at the first poll past T0 + 17.5
    # min (the level's at T0 + 20 min), asked once there and never before.
    assert [(t.point, t.state, t.side, t.ts_ms) for t in found] == [
        ("flow", "raised", "offline", T0 + 4 * STEP)]
    assert sum(checked) == 1
    assert checked[3 * 3] == 1  # the fourth round's first poll


def test_every_screen_the_schedule_skips_would_have_said_nothing() -> None:
    rng = random.Random(19)
    engine = RuleEngine(settings(offline_rules(after=2, off_delay={"samples": 2}))
                        .rule_site())
    found = skipped = 0
    for i in range(400):
        # Points that answer, answer with no value, or stay silent, at random.
        poll = [reading(p, T0 + i * STEP // 2, None if rng.random() < 0.3 else 118.0)
                for p in POINTS if rng.random() < 0.6]
        now = max((r.ts_ms for r in poll), default=engine.clock_ms or T0)
        seen = {r.key for r in poll}
        for screen in engine.offline.screens:
            due = screen.offline_due_ms()
            if screen.point not in seen and (due is None or due > now):
                # What the full scan asked; an answer of nothing changes no state.
                assert screen.check_offline(now) == []
                skipped += 1
        found += len(engine.evaluate(poll).transitions)
    assert found > 10 and skipped > 100
