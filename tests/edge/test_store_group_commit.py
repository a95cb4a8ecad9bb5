"""Group commit: polls completing within the commit window share one transaction; a poll
that changes an alarm never waits for the window; nothing is published uncommitted."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import cast

import pytest

from edge.config import GatewaySettings
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.store import Store, StoreWorker
from rules.engine import RuleEngine
from tests.rules.sample_site import settings
from vocab.model import PollResult, Reading

T0 = 1_700_000_000_000
RULES = [{"id": "head-high", "type": "threshold", "point": "piezo-1/head",
          "high": [{"severity": "warning", "value": 104.0}]}]


async def _no_room(quota_bytes: int) -> None:
    raise AssertionError("the disk is not full in these tests")


def poll(device: str, point: str, i: int, value: float, mid_round: bool = False,
         bus: str = "lan") -> PollResult:
    return PollResult(bus, device, (
        Reading(device, point, T0 + i * 1000, value, "m", "good", None),), 1, True,
        mid_round=mid_round)


async def started(path: Path, window_ms: float, first_committed: bool = True,
                  round_wait_ms: float = 0.0) -> tuple[Pipeline, asyncio.Task[None]]:
    """A pipeline running; with ``first_committed`` past its first commit (seq 1), which
    never waits for the window, so what follows is in the windows of a running gateway."""
    worker = StoreWorker(Store(path))
    gateway = Pipeline(worker, Outbox(worker), _no_room, commit_window_ms=window_ms,
                       round_wait_ms=round_wait_ms)
    await gateway.rebuild_engine(lambda active: RuleEngine(settings(RULES).rule_site(), active))
    task = asyncio.create_task(gateway.run())
    if first_committed:
        await gateway.enqueue(poll("level-1", "water_level", -1, 119.0))
        await asyncio.wait_for(gateway.polled.wait(), 30)
        gateway.polled.clear()
        assert gateway.commits == 1
    return gateway, task


async def stopped(gateway: Pipeline, task: asyncio.Task[None]) -> None:
    """Stop the pipeline (its window's polls are committed) and close its store."""
    await gateway.stop()
    await task
    gateway.store.close()


def test_the_first_poll_after_start_commits_without_waiting_for_the_window(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=60_000,
                                      first_committed=False)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0))
        await asyncio.wait_for(gateway.polled.wait(), 30)  # not 60 s
        assert gateway.commits == 1
        await gateway.enqueue(poll("level-1", "water_level", 1, 121.0))
        await asyncio.sleep(0.05)
        assert gateway.commits == 1, "from the second on, polls wait for the window"
        await stopped(gateway, task)
        assert gateway.commits == 2

    asyncio.run(scenario())


def queued(path: Path, kind: str) -> list[dict[str, object]]:
    store = Store(path)
    try:
        return [json.loads(e.payload) for e in store.outbox.pending(kind, 0, 100)]
    finally:
        store.close()


def test_polls_within_the_window_share_one_transaction(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=60_000)
        for i in range(5):  # one at a time, as bus tasks finish their polls
            await gateway.enqueue(poll("level-1", "water_level", i, 120.0 + i))
            await asyncio.sleep(0.01)
        assert gateway.commits == 1, "the window is still open: nothing committed yet"
        await stopped(gateway, task)
        assert gateway.commits == 2

    asyncio.run(scenario())
    # One message, one seq, carrying every poll of the window in the order they came.
    [_, message] = queued(tmp_path / "edge.db", "telemetry")
    assert message["seq"] == 2
    assert [r["value"] for r in message["readings"]] == [  # type: ignore[index]
        120.0, 121.0, 122.0, 123.0, 124.0]


def test_an_alarm_transition_never_waits_for_the_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=60_000)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0))
        await gateway.enqueue(poll("level-1", "water_level", 1, 120.1))
        await gateway.enqueue(poll("piezo-1", "head", 2, 104.5))  # raises head-high
        # The alarm commits at once, taking the waiting polls with it: no stop needed.
        await asyncio.wait_for(gateway.polled.wait(), 30)
        assert gateway.commits == 2
        alarms = queued(tmp_path / "edge.db", "alarm")
        assert [a["alarm"]["state"] for a in alarms] == ["raised"]  # type: ignore[index]
        # The window's three polls are one message, numbered before the alarm.
        [_, telemetry] = queued(tmp_path / "edge.db", "telemetry")
        assert len(telemetry["readings"]) == 3  # type: ignore[arg-type]
        assert (telemetry["seq"], alarms[0]["seq"]) == (2, 3)
        await stopped(gateway, task)

    asyncio.run(scenario())


def test_a_window_of_zero_commits_each_poll_as_it_comes(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=0)
        for i in range(3):
            await gateway.enqueue(poll("level-1", "water_level", i, 120.0 + i))
            await asyncio.wait_for(gateway.polled.wait(), 30)
            gateway.polled.clear()
        assert gateway.commits == 4
        await stopped(gateway, task)

    asyncio.run(scenario())


def test_a_window_not_well_under_the_fastest_poll_is_warned_about(tmp_path: Path) -> None:
    import yaml

    from edge.config import load_config

    site = settings(RULES, interval_s=0.25).model_dump(mode="json", exclude_defaults=True)
    site["store"] = {"path": str(tmp_path / "edge.db"), "commit_window_ms": 200}
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site))
    warnings = load_config(config).warnings
    assert any("store.commit_window_ms" in w and "level-1: 0.25 s" in w for w in warnings), \
        warnings
    site["store"]["commit_window_ms"] = 100
    config.write_text(yaml.safe_dump(site))
    assert not any("commit_window_ms" in w for w in load_config(config).warnings)


def test_a_window_of_several_rounds_is_allowed_up_to_ten_seconds_with_a_warning(
        tmp_path: Path) -> None:
    # A slow line of few readings a second spares its card only by committing several
    # rounds at once (docs/performance.md): allowed, warned about, bounded.
    import yaml

    from edge.config import ConfigError, load_config

    site = settings(RULES, interval_s=1.0).model_dump(mode="json", exclude_defaults=True)
    site["store"] = {"path": str(tmp_path / "edge.db"), "commit_window_ms": 5000}
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site))
    [warning] = [w for w in load_config(config).warnings if "commit_window_ms" in w]
    assert "telemetry waits up to the window" in warning and "alarms never wait" in warning
    site["store"]["commit_window_ms"] = 10_001
    config.write_text(yaml.safe_dump(site))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    # Where (the file and line of the key) and what: the key and its bound.
    assert re.match(r"site\.yaml:\d+: store\.commit_window_ms: ", str(refused.value)), \
        str(refused.value)
    assert "10000" in str(refused.value)


def test_a_window_longer_than_the_poll_gathers_rounds_and_never_holds_an_alarm(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=3_000)
        for i in range(3):  # three rounds of one device, 0.1 s apart, inside the window
            await gateway.enqueue(poll("level-1", "water_level", i, 120.0 + i))
            await asyncio.sleep(0.1)
        assert gateway.commits == 1, "the rounds wait for the window"
        await gateway.enqueue(poll("piezo-1", "head", 3, 104.5))  # raises head-high
        await asyncio.wait_for(gateway.polled.wait(), 2)  # at once, not after 3 s
        assert gateway.commits == 2
        await stopped(gateway, task)

    asyncio.run(scenario())
    [_, telemetry] = queued(tmp_path / "edge.db", "telemetry")
    assert [(r["device"], r["value"]) for r in telemetry["readings"]] == [  # type: ignore[index]
        ("level-1", 120.0), ("level-1", 121.0), ("level-1", 122.0), ("piezo-1", 104.5)]


def with_window(site: GatewaySettings, window_ms: float | None) -> GatewaySettings:
    return site.model_copy(update={"store": site.store.model_copy(
        update={"commit_window_ms": window_ms})})


def times(site: GatewaySettings, copies: int) -> GatewaySettings:
    """The site's devices ``copies`` times over (the window counts their points only)."""
    return site.model_copy(update={"devices": site.devices * copies})


def test_the_window_unset_takes_a_round_of_a_large_or_slow_site(tmp_path: Path) -> None:
    from edge.commitwindow import commit_window_ms, rounds_per_commit

    site = settings(RULES)  # two devices, five points, every 5 min
    assert site.store.commit_window_ms is None
    assert (commit_window_ms(site), rounds_per_commit(site)) == (250.0, 1)
    # 300 points a round is a commit's worth: a quarter of the fastest poll, 250 ms at most.
    assert commit_window_ms(times(settings(RULES, interval_s=1.0), 60)) == 250.0
    assert commit_window_ms(times(settings(RULES, interval_s=0.25), 60)) == 62.5
    assert commit_window_ms(with_window(settings(RULES, interval_s=0.25), 40.0)) == 40.0


def test_the_window_unset_gathers_rounds_of_a_small_site_polled_fast(tmp_path: Path) -> None:
    # A fsynced commit costs a 4 KiB page or two however few readings it holds: 10 × 10
    # at 1 s wrote 77-80 B a datapoint with a commit a round (docs/performance.md).
    from edge.commitwindow import commit_window_ms, round_wait_ms, rounds_per_commit

    small = times(settings(RULES, interval_s=1.0), 20)  # 100 points a second
    assert (rounds_per_commit(small), commit_window_ms(small)) == (3, 2500.0)
    # The last round may end past the window (a quarter poll), never into the next one.
    assert round_wait_ms(small) == 2750.0
    assert rounds_per_commit(times(settings(RULES, interval_s=1.0), 40)) == 2  # 200 a round
    # Few points polled fast: as many rounds as fit in 3 s, never more.
    tiny = settings(RULES, interval_s=0.25)
    assert (rounds_per_commit(tiny), commit_window_ms(tiny)) == (12, 2875.0)
    assert round_wait_ms(tiny) == 2937.5  # telemetry waits 3 s at most, its round's wait in
    faster = settings(RULES, interval_s=0.3)
    assert (rounds_per_commit(faster), round_wait_ms(faster)) == (10, 2925.0)
    assert rounds_per_commit(settings(RULES, interval_s=1.3)) == 2  # 2.275 s in all
    assert commit_window_ms(settings(RULES, interval_s=2.0)) == 250.0  # two do not fit
    # The site's own choice is taken as it is.
    assert rounds_per_commit(with_window(small, 250.0)) == 1
    assert commit_window_ms(with_window(small, 250.0)) == 250.0


# --- the round-done window: a bus whose round is not finished holds the window open ----


def values(message: dict[str, object]) -> list[object]:
    """The values of a telemetry message's readings, in order."""
    return [r["value"] for r in cast(list[dict[str, object]], message["readings"])]


async def committed_after(gateway: Pipeline, limit_s: float = 30) -> float:
    """Seconds until the next commit that stored polls."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(gateway.polled.wait(), limit_s)
    gateway.polled.clear()
    return loop.time() - began


def test_a_mid_round_bus_holds_the_window_open_until_its_round_is_done(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=50,
                                      round_wait_ms=2000)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True))
        await asyncio.sleep(0.3)  # six windows long: the round is still under way
        assert gateway.commits == 1, "a mid-round bus keeps the window open"
        await gateway.enqueue(poll("level-1", "water_level", 1, 120.1, mid_round=True))
        await asyncio.sleep(0.2)
        assert gateway.commits == 1
        await gateway.enqueue(poll("piezo-1", "head", 2, 100.0))  # the round's last
        assert await committed_after(gateway) < 0.2, "the round done, the window closes"
        assert gateway.commits == 2
        await stopped(gateway, task)

    asyncio.run(scenario())
    [_, message] = queued(tmp_path / "edge.db", "telemetry")
    assert values(message) == [120.0, 120.1, 100.0], "the whole round is one message"


def test_a_round_that_never_finishes_waits_round_wait_and_not_beyond(
        tmp_path: Path) -> None:
    async def scenario() -> float:
        gateway, task = await started(tmp_path / "edge.db", window_ms=50,
                                      round_wait_ms=400)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True))
        waited = await committed_after(gateway)
        assert gateway.commits == 2
        await stopped(gateway, task)
        return waited

    waited = asyncio.run(scenario())
    assert 0.35 < waited < 1.5, waited


def test_the_window_waits_for_every_bus_that_is_mid_round(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=50,
                                      round_wait_ms=2000)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True,
                                   bus="line-a"))
        await gateway.enqueue(poll("piezo-1", "head", 1, 100.0, mid_round=True,
                                   bus="line-b"))
        await gateway.enqueue(poll("level-1", "water_level", 2, 120.1, bus="line-a"))
        await asyncio.sleep(0.3)
        assert gateway.commits == 1, "line-b's round is not done yet"
        await gateway.enqueue(poll("piezo-1", "head", 3, 100.1, bus="line-b"))
        assert await committed_after(gateway) < 0.2
        assert gateway.commits == 2
        await stopped(gateway, task)

    asyncio.run(scenario())


def test_an_alarm_commits_at_once_mid_round(tmp_path: Path) -> None:
    async def scenario() -> None:
        gateway, task = await started(tmp_path / "edge.db", window_ms=60_000,
                                      round_wait_ms=2000)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True))
        await gateway.enqueue(poll("piezo-1", "head", 1, 104.5, mid_round=True))  # raises
        assert await committed_after(gateway) < 1.0, "an alarm never waits for the round"
        assert gateway.commits == 2
        alarms = queued(tmp_path / "edge.db", "alarm")
        assert [cast(dict[str, object], a["alarm"])["state"] for a in alarms] == ["raised"]
        [_, telemetry] = queued(tmp_path / "edge.db", "telemetry")
        assert values(telemetry) == [120.0, 104.5], "the waiting poll went with the alarm"
        await stopped(gateway, task)

    asyncio.run(scenario())


def test_a_round_wait_of_zero_keeps_the_commit_window_alone(tmp_path: Path) -> None:
    async def scenario() -> float:
        gateway, task = await started(tmp_path / "edge.db", window_ms=50, round_wait_ms=0)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True))
        waited = await committed_after(gateway)
        await stopped(gateway, task)
        return waited

    assert asyncio.run(scenario()) < 0.3, "closed at the commit window, mid-round or not"


def test_the_first_commit_after_start_waits_for_no_round(tmp_path: Path) -> None:
    async def scenario() -> float:
        gateway, task = await started(tmp_path / "edge.db", window_ms=50,
                                      first_committed=False, round_wait_ms=2000)
        await gateway.enqueue(poll("level-1", "water_level", 0, 120.0, mid_round=True))
        waited = await committed_after(gateway)
        await stopped(gateway, task)
        return waited

    assert asyncio.run(scenario()) < 0.5


def test_round_wait_is_three_quarters_of_a_round_or_a_quarter_poll_past_several(
        tmp_path: Path) -> None:
    from edge.commitwindow import round_wait_ms

    assert round_wait_ms(with_window(settings(RULES, interval_s=1.0), 250.0)) == 750.0
    assert round_wait_ms(with_window(settings(RULES, interval_s=0.25), 50.0)) == 187.5
    assert round_wait_ms(settings(RULES)) == 2000.0  # 5 min polls
    # A chosen window of several rounds waits a quarter poll past it for its last round.
    assert round_wait_ms(with_window(settings(RULES, interval_s=1.0), 5000.0)) == 5250.0
    off = with_window(settings(RULES, interval_s=1.0), 0.0)
    assert round_wait_ms(off) == 0.0, "no group commit, no waiting for rounds"


def test_the_gateway_s_window_round_wait_and_message_bound_follow_a_reload(
        tmp_path: Path) -> None:
    import yaml

    from edge.config import load_config
    from edge.gateway import Gateway

    site = settings(RULES, interval_s=1.0).model_dump(mode="json", exclude_defaults=True)
    site["store"] = {"path": str(tmp_path / "edge.db")}
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site))

    async def scenario() -> list[tuple[float, float, int]]:
        gateway = Gateway(load_config(config), config)
        seen = [(gateway.pipeline.commit_window_s, gateway.pipeline.round_wait_s,
                 gateway.store.max_message_bytes)]
        try:
            # A reload that brings a faster device and a broker's smaller packet limit:
            # the window, the round wait and the message bound follow it.
            await gateway.outbox.open({"mqtt": ("telemetry", "alarm")})  # as at start
            site["devices"][0]["poll_interval_s"] = 0.25
            site["mqtt"]["max_message_bytes"] = 2048
            config.write_text(yaml.safe_dump(site))
            assert await gateway.reload() == []
            seen.append((gateway.pipeline.commit_window_s, gateway.pipeline.round_wait_s,
                         gateway.store.max_message_bytes))
        finally:
            await gateway.buses.stop_all()
            gateway.store.close()
            gateway.history.close()
        return seen

    # Five points a second gather three rounds; with a device at 0.25 s, twelve of it.
    assert asyncio.run(scenario()) == [(2.5, 2.75, 49_152), (2.875, 2.9375, 2048)]
