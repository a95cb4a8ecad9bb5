"""What the keeper's page (issue #17) costs the daemon: RSS, start-up, page times, loop lag.

1. Imports, each in a fresh interpreter that has first imported what ``edge run`` loads
   (edge.gateway, edge.cli): the RSS and time ``edge.web.app`` (aiohttp) adds, and what
   the config section alone adds (``edge.web.config``, loaded even when the page is off).
   For comparison, where installed: starlette + uvicorn and microdot.
2. Serving, in one process: the sample reservoir of the tests in a real store plus a
   level read every minute for 30 days; the time from ``start()`` to listening and to the
   first page; RSS before the page, after start and after 200 pages; each page's median
   time; the longest the event loop was held while a 30-day plot and a PIN check ran.

Usage: python bench/web_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, machine

_CHILD = """
import sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
exec(sys.argv[1])
before, start = rss(), time.perf_counter()
exec(sys.argv[2])
print(rss() - before, time.perf_counter() - start)
"""

DAEMON = "import edge.gateway, edge.cli"
IMPORTS = [
    ("edge.web.config (always, with the config)", "import edge.web.config"),
    ("edge.web.app (aiohttp; only with web:)", "import edge.web.app"),
    ("starlette + uvicorn (compared)", "import starlette.applications, starlette.routing, "
     "starlette.responses, uvicorn.server, uvicorn.config, uvicorn.protocols.http.h11_impl"),
    ("microdot (compared)", "import microdot"),
]


def import_costs(runs: int) -> None:
    print(f"\n1. imports after the daemon's own ({DAEMON}), median of {runs} fresh "
          "interpreters:")
    for label, statement in IMPORTS:
        results = []
        for _ in range(runs):
            proc = subprocess.run([sys.executable, "-c", _CHILD, DAEMON, statement], cwd=REPO,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                break
            mib, seconds = (float(v) for v in proc.stdout.split())
            results.append((mib, seconds))
        if not results:
            print(f"  {label:<44} not installed")
            continue
        mib = statistics.median(r[0] for r in results)
        ms = statistics.median(r[1] for r in results) * 1000
        print(f"  {label:<44} +{mib:5.1f} MiB  {ms:6.1f} ms")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serving(runs: int) -> None:
    sys.path.insert(0, str(REPO))
    import edge.gateway  # noqa: F401  # the daemon's modules, as in a running gateway
    from edge.web.pin import hash_pin
    from tests.web.keeper import LoopThread, PointSpec
    from tests.web.sample import SPECS, build_site, raw_request, web_config
    from vocab.model import Reading, now_ms

    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    keeper, _ = build_site(work / "edge.db")
    month = PointSpec("level-2/water_level", "一分钟水位", "m", "water_level", "level", 60.0)
    keeper.specs = (*SPECS, month)
    start = now_ms() - 30 * 86_400_000
    keeper.write([([Reading("level-2", "water_level", start + (h * 60 + i) * 60_000,
                            120 + (h * 60 + i) % 97 / 100, "m", "good") for i in range(60)],
                   []) for h in range(720)])
    loop = LoopThread()
    config = web_config(pin=hash_pin("246810"))
    before = rss_mib()
    began = time.perf_counter()
    from edge.web.app import KeeperWeb

    async def start_server() -> KeeperWeb:
        server = KeeperWeb(keeper, config)
        await server.start()
        return server

    server = loop.run(start_server())
    listening = time.perf_counter() - began
    status = raw_request(config.port, "GET", "/")[0]
    first_page = time.perf_counter() - began
    assert status == 200
    after_start = rss_mib()
    print(f"\n2. serving (RSS {before:.1f} MiB: the daemon's modules, edge.web.app and the "
          "sample store, all loaded):")
    print(f"  start() to listening {listening * 1000:.0f} ms, to the first page "
          f"{first_page * 1000:.0f} ms; RSS +{after_start - before:.1f} MiB")

    pages = {"overview /": "/", "alarms": "/alarms", "devices": "/devices",
             "plot 24 h (288 readings)": "/plot/level-1/water_level?period=24h",
             "plot 30 d (8,640 readings)": "/plot/level-1/water_level?period=30d",
             "plot 30 d (43,200 readings)": "/plot/level-2/water_level?period=30d"}
    served = 0
    for label, path in pages.items():
        times, size = [], 0
        for _ in range(max(runs, 5)):
            t = time.perf_counter()
            status, _, body = raw_request(config.port, "GET", path)
            times.append(time.perf_counter() - t)
            size = len(body.encode())
            served += 1
            assert status == 200, (path, status)
        print(f"  {label:<30} median {statistics.median(times) * 1000:6.1f} ms, "
              f"{size / 1024:5.1f} KiB")
    while served < 200:
        raw_request(config.port, "GET", "/")
        served += 1
    print(f"  RSS after {served} pages: +{rss_mib() - before:.1f} MiB over the daemon's")

    def lag_while(request: Callable[[], object]) -> float:
        async def measure() -> float:
            work_done = asyncio.get_running_loop().run_in_executor(None, request)
            worst = 0.0
            while not work_done.done():
                t = time.monotonic()
                await asyncio.sleep(0.005)
                worst = max(worst, time.monotonic() - t - 0.005)
            await work_done
            return worst

        return loop.run(measure(), timeout=120)

    lags = [lag_while(lambda: raw_request(config.port, "GET",
                                          "/plot/level-2/water_level?period=30d"))
            for _ in range(runs)]
    print(f"  loop held at most {max(lags) * 1000:.1f} ms during a 43,200-reading plot "
          f"(worst of {runs})")
    _, headers, text = raw_request(config.port, "GET", "/devices")
    cookie = headers["set-cookie"].split(";")[0]
    token = text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    body = f"csrf={token}&alarm_id=a-level&name=x&pin=000000".encode()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    pin_lag = lag_while(lambda: raw_request(config.port, "POST", "/alarms/ack", body, form))
    t = time.perf_counter()
    raw_request(config.port, "POST", "/alarms/ack", body, form)
    print(f"  loop held at most {pin_lag * 1000:.1f} ms during a PIN check; a wrong PIN "
          f"answered in {(time.perf_counter() - t) * 1000:.0f} ms")
    loop.run(server.stop())
    loop.close()
    keeper.close()
    print(json.dumps({"counters": dict(server.counters)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    import_costs(args.runs)
    serving(args.runs)


if __name__ == "__main__":
    main()
