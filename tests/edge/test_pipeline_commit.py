"""Polls committed together: one that cannot be stored costs no other poll anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.config import load_config
from edge.gateway import Gateway
from edge.store import Store, StoreWorker
from tests.support import site_config
from vocab.model import AlarmTransition, Reading

T0 = 1_700_000_000_000


def level(value: complex | float, ts: int) -> Reading:
    return Reading("level-1", "water_level", ts, value, "m", "good", None)  # type: ignore[arg-type]


def raised(ts: int) -> AlarmTransition:
    return AlarmTransition("level-high@1", "level-high", "level-1", "water_level", "warning",
                           "raised", 123.6, 123.5, ts, "level above flood limit", "above")


def test_a_poll_that_cannot_be_stored_fails_alone_and_keeps_its_alarm(tmp_path: Path) -> None:
    config = site_config(tmp_path, 1, 1)
    gateway = Gateway(load_config(config), config)
    store = Store(tmp_path / "edge.db")
    gateway.store = StoreWorker(store)
    # The middle poll holds a value JSON cannot encode: the batch's transaction fails.
    polls = [("level-1", [level(123.0, T0)], []),
             ("level-1", [level(1j, T0 + 1000)], [raised(T0 + 1000)]),
             ("level-1", [level(123.7, T0 + 2000)], [])]
    stored, anything = asyncio.run(gateway._commit_polls(polls))
    assert stored == [True, False, True] and anything
    assert gateway._uncommitted == [], "the alarm was stored without its readings"
    telemetry = [json.loads(e.payload)["readings"][0]["value"]
                 for e in store.pending("telemetry", 0, 10)]
    assert telemetry == [123.0, 123.7]
    alarms = [json.loads(e.payload)["alarm"] for e in store.pending("alarm", 0, 10)]
    assert [(a["id"], a["state"]) for a in alarms] == [("level-high@1", "raised")]
    assert [e.seq for e in store.pending("telemetry", 0, 10)] == [1, 3], "no seq gap"
    assert store.pending("alarm", 0, 10)[0].seq == 2
    gateway.store.close()


def test_alarms_that_cannot_be_stored_are_carried_to_the_next_commit(tmp_path: Path) -> None:
    config = site_config(tmp_path, 1, 1)
    gateway = Gateway(load_config(config), config)
    store = Store(tmp_path / "edge.db")
    gateway.store = StoreWorker(store)
    broken = AlarmTransition("x@1", "x", "level-1", "water_level", "warning", "raised",
                             1j, 1.0, T0, "m", "above")  # type: ignore[arg-type]
    stored, anything = asyncio.run(gateway._commit_polls(
        [("level-1", [level(123.0, T0)], [broken])]))
    assert (stored, anything) == ([False], False)
    assert gateway._uncommitted == [broken]
    assert store.pending("telemetry", 0, 10) == [] and store.last_seq == 0
    gateway.store.close()
