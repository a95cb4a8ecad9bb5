"""Polls committed together: one that cannot be stored costs no other poll anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.store import Store, StoreWorker
from vocab.model import AlarmTransition, Reading

T0 = 1_700_000_000_000


def level(value: complex | float, ts: int) -> Reading:
    return Reading("level-1", "water_level", ts, value, "m", "good", None)  # type: ignore[arg-type]


async def _no_room(quota_bytes: int) -> None:
    raise AssertionError("the disk is not full in these tests")


def pipeline(store: StoreWorker) -> Pipeline:
    return Pipeline(store, Outbox(store), _no_room)


def raised(ts: int) -> AlarmTransition:
    return AlarmTransition("level-high@1", "level-high", "level-1", "water_level", "warning",
                           "raised", 123.6, 123.5, ts, "level above flood limit", "above")


def test_a_poll_that_cannot_be_stored_fails_alone_and_keeps_its_alarm(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    gateway = pipeline(StoreWorker(store))
    # The middle poll holds a value JSON cannot encode: the batch's transaction fails.
    polls = [("level-1", [level(123.0, T0)], []),
             ("level-1", [level(1j, T0 + 1000)], [raised(T0 + 1000)]),
             ("level-1", [level(123.7, T0 + 2000)], [])]
    stored, anything = asyncio.run(gateway.commit_polls(polls))
    assert stored == [True, False, True] and anything
    assert gateway._uncommitted == [], "the alarm was stored without its readings"
    telemetry = [json.loads(e.payload)["readings"][0]["value"]
                 for e in store.outbox.pending("telemetry", 0, 10)]
    assert telemetry == [123.0, 123.7]
    alarms = [json.loads(e.payload)["alarm"] for e in store.outbox.pending("alarm", 0, 10)]
    assert [(a["id"], a["state"]) for a in alarms] == [("level-high@1", "raised")]
    assert [e.seq for e in store.outbox.pending("telemetry", 0, 10)] == [1, 3], "no seq gap"
    assert store.outbox.pending("alarm", 0, 10)[0].seq == 2
    gateway.store.close()


def test_alarms_that_cannot_be_stored_are_carried_to_the_next_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db")
    gateway = pipeline(StoreWorker(store))
    broken = AlarmTransition("x@1", "x", "level-1", "water_level", "warning", "raised",
                             1j, 1.0, T0, "m", "above")  # type: ignore[arg-type]
    stored, anything = asyncio.run(gateway.commit_polls(
        [("level-1", [level(123.0, T0)], [broken])]))
    assert (stored, anything) == ([False], False)
    assert gateway._uncommitted == [broken]
    assert store.outbox.pending("telemetry", 0, 10) == [] and store.last_seq == 0
    gateway.store.close()


def test_a_poll_counts_from_its_first_reading_for_the_inspection(tmp_path: Path) -> None:
    """An inspection asked for while a poll was reading must not take that poll as its
    answer: the poll is dated by its first reading, not by its commit."""
    from rules.engine import RuleEngine
    from tests.rules.sample_site import settings
    from vocab.model import PollResult

    async def scenario() -> None:
        gateway = pipeline(StoreWorker(Store(tmp_path / "edge.db")))
        await gateway.rebuild_engine(lambda active: RuleEngine(settings([]).rule_site(), active))
        task = asyncio.create_task(gateway.run())
        await gateway.enqueue(PollResult("lan", "level-1", (
            level(123.0, T0 + 500), level(123.1, T0)), 2, True))
        await gateway.stop()
        await task
        assert gateway.last_poll == {"level-1": T0}
        gateway.store.close()

    asyncio.run(scenario())
