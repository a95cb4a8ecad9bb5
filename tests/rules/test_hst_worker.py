"""An HST refit runs on the rules' worker: the event loop keeps its schedule meanwhile.

Two years of hourly level and seepage flow are read back from a real store (SQLite, the
daemon's HistoryReader) and fitted while a task on the loop ticks every 10 ms, as a bus
task's schedule would. The fit must run on the worker thread, the loop must keep ticking
through it, and the model it produces must be adopted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edge.history import HistoryReader
from edge.store import Store
from rules.engine import RuleEngine
from rules.hst import HstRule
from tests.rules.hst_site import FLOW, LEVEL, START, flow_law, level_at
from tests.rules.sample_site import DAY, HOUR, reading, settings
from vocab.model import Reading

HOURS = 2 * 365 * 24
RULE = {"id": "flow-hst", "type": "hst", "point": FLOW, "level": LEVEL,
        "head_reference": "dead", "fit": {"base_date": "2022-01-01", "history": "730d",
                                             "refit_every": "30d"}}


def fill_store(path: Path) -> int:
    """Two years of hourly readings, one message per day as the daemon stores them."""
    ts = START + np.arange(HOURS, dtype=np.int64) * HOUR
    level = level_at(ts / DAY)
    flow = flow_law(ts / DAY, level)
    store = Store(path)
    cycles = []
    for day in range(0, HOURS, 24):
        batch: list[Reading] = []
        for i in range(day, day + 24):
            batch.append(reading(LEVEL, int(ts[i]), float(level[i]), unit="m"))
            batch.append(reading(FLOW, int(ts[i]), float(flow[i]), unit="L/s"))
        cycles.append((batch, []))
    store.commit_cycles(cycles)
    store.close()
    return int(ts[-1])


def test_a_refit_of_two_years_runs_on_the_worker_while_the_loop_keeps_time(
        tmp_path: Path) -> None:
    last = fill_store(tmp_path / "edge.db")
    history = HistoryReader(tmp_path / "edge.db")
    readers: set[str] = set()

    def recorded(point: str, from_ms: int, to_ms: int) -> list[Reading]:
        readers.add(threading.current_thread().name)
        return history(point, from_ms, to_ms)

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-fit")
    engine = RuleEngine(settings([RULE], interval_s=3600).rule_site(), history=recorded,
                        worker=worker)
    rule = engine.rules["flow-hst"]
    assert isinstance(rule, HstRule)
    ticks: list[float] = []
    while_fitting = 0

    async def scenario() -> None:
        async def ticker() -> None:
            nonlocal while_fitting
            while True:
                ticks.append(time.monotonic())
                while_fitting += rule._fitting is not None
                await asyncio.sleep(0.01)

        clock = asyncio.create_task(ticker())
        now = last + HOUR
        engine.evaluate([reading(LEVEL, now, 116.0, unit="m")])
        engine.evaluate([reading(FLOW, now, 2.5, unit="L/s")])
        started = time.monotonic()
        assert rule._fitting is not None, "the refit was handed to the worker"
        while rule._fitting is not None and time.monotonic() - started < 60:
            await asyncio.sleep(0.05)
            now += 1000
            engine.evaluate([reading(FLOW, now, 2.5, unit="L/s")])
        clock.cancel()
        ticks.append(time.monotonic())
        assert rule._fitting is None, "the refit finished within a minute"
        # Not a timing bound (a loaded machine may not run the process for most of a
        # second): the loop went on ticking while the worker fitted.
        assert while_fitting >= 5, f"the loop ticked {while_fitting} times during the refit"

    try:
        asyncio.run(scenario())
    finally:
        worker.shutdown(wait=True)
        history.close()
    assert readers == {"rules-fit_0"}, "history was read on the worker, never on the loop"
    assert rule.model is not None and rule.model.n > 10_000
