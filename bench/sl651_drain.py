"""How fast an SL 651 centre that was away catches up, and what one report costs to build.

A real store and outbox in a temporary directory, N test reports committed while the
centre is down, then a centre on loopback (simulator/sl651_centre.py, confirming each
report) comes up and the link drains the backlog with ``pace_s: 0``. Prints the machine,
the median of RUNS drains (reports/s, confirmed one at a time) and the median time to
build and encode one frame.

    python bench/sl651_drain.py [N] [RUNS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import machine  # noqa: E402
from edge.channels.sl651_link import CentreLink  # noqa: E402
from edge.channels.sl651_messages import KIND, frame_for  # noqa: E402
from edge.channels.sl651_reporter import Reporter  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.sl651_config import Sl651Config  # noqa: E402
from edge.store import Store, StoreWorker  # noqa: E402
from simulator.sl651_centre import Sl651Centre  # noqa: E402
from tests.support import free_port  # noqa: E402
from vocab.model import Reading  # noqa: E402


def config(port: int) -> Sl651Config:
    return Sl651Config.model_validate({
        "station_address": "0033080001", "pace_s": 0, "keepalive_s": 60,
        "centres": [{"address": 1, "host": "127.0.0.1", "port": port}],
        "elements": [{"point": "level-1/water_level", "element": "ZU"},
                     {"point": "rain/rain_1h", "element": "P1"},
                     {"point": "rain/rain_day", "element": "PD"},
                     {"point": "level-1/battery", "element": "VT"}]})


LATEST = {key: Reading(*key.split("/"), 0, value, "", "good") for key, value in (
    ("level-1/water_level", 123.456), ("rain/rain_1h", 12.5), ("rain/rain_day", 40.2),
    ("level-1/battery", 12.61))}


async def drain(n: int, work: Path) -> float:
    port = free_port()
    settings = config(port)
    store = StoreWorker(Store(work / "edge.db"))
    outbox = Outbox(store)
    await outbox.open({"sl651-centre-1": (KIND,)})
    reporter = Reporter(settings, outbox, lambda: LATEST)
    for _ in range(n):
        await reporter.test_report()
    link = CentreLink(settings, settings.centres[0], outbox.channel("sl651-centre-1"),
                      lambda: reporter.snapshot(0x37), store, 30)
    writer = asyncio.create_task(outbox.run_ack_writer())
    task = asyncio.create_task(link.run())
    async with Sl651Centre(address=1, port=port) as centre:
        start = time.perf_counter()
        await centre.wait_for(n, timeout=600)
        while link.counts["confirmed"] < n:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
    task.cancel()
    writer.cancel()
    await asyncio.gather(task, writer, return_exceptions=True)
    store.close()
    return n / elapsed


def encode_cost(repeat: int = 2000) -> float:
    settings = config(5001)
    reporter = Reporter(settings, None, lambda: LATEST)  # type: ignore[arg-type]  # no commit
    report = reporter.snapshot(0x32)
    start = time.perf_counter()
    for serial in range(1, repeat + 1):
        frame_for(report, settings, 1, serial, 1_764_900_000_000, 0)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rates = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(asyncio.run(drain(n, Path(tmp))))
    costs = [encode_cost() for _ in range(5)]
    print(machine())
    print(f"backlog of {n} reports, one in flight, confirmed each: median "
          f"{statistics.median(rates):.0f} reports/s over {runs} runs "
          f"(min {min(rates):.0f}, max {max(rates):.0f})")
    print(f"snapshot to frame (4 elements): median {statistics.median(costs):.1f} µs")


if __name__ == "__main__":
    main()
