"""The page on the daemon's loop: it starts without its address, stops cleanly, and its
heaviest work (decimating and drawing a 30-day plot, a PIN check) runs on worker threads,
never on the loop. Which thread did the work is checked, not how long the loop waited:
a timing bound would pass or fail with the machine's load.

(bench/web_cost.py measures the loop's lag during that work: 38 ms for 30 days.)"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import edge.web.pin as pin_module
import edge.web.plotpage as plotpage_module
from edge.web.app import KeeperWeb
from edge.web.plots import Decimator
from tests.web.keeper import LoopThread, PointSpec, StoreKeeper, serve
from tests.web.sample import SITE, raw_request, web_config
from vocab.model import AlarmTransition, Reading, now_ms

T = TypeVar("T")

MIN = 60_000


def test_starts_without_its_address_and_listens_once_free(loop: LoopThread,
                                                          tmp_path: Path) -> None:
    keeper = StoreKeeper(tmp_path / "edge.db", SITE, ())
    config = web_config()
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", config.port))
    taken.listen()
    server = serve(loop, keeper, config, retry_s=0.2)
    try:
        assert not server.listening  # the daemon went on; the page waits for its port
        taken.close()
        deadline = time.monotonic() + 10
        while not server.listening and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.listening
        assert raw_request(config.port, "GET", "/")[0] == 200
    finally:
        taken.close()
        loop.run(server.stop())
        keeper.close()
    with socket.socket() as again:  # stop() let the port go
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", config.port))


@pytest.fixture(scope="module")
def month(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory,
          pin_hash: str) -> Iterator[tuple[KeeperWeb, StoreKeeper]]:
    """A level read every minute for 30 days: 43,200 readings in a real store."""
    spec = PointSpec("level-1/water_level", "坝前水位", "m", "water_level", "level", 60.0)
    keeper = StoreKeeper(tmp_path_factory.mktemp("month") / "edge.db", SITE, (spec,))
    start = now_ms() - 30 * 1440 * MIN
    cycles: list[tuple[list[Reading], list[AlarmTransition]]] = []
    for hour in range(30 * 24):
        cycles.append(([Reading("level-1", "water_level", start + (hour * 60 + i) * MIN,
                                120 + (hour * 60 + i) % 97 / 100, "m", "good")
                        for i in range(60)], []))
    keeper.write(cycles)
    server = serve(loop, keeper, web_config(pin=pin_hash))
    yield server, keeper
    loop.run(server.stop())
    keeper.close()


def on_threads(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> set[str]:
    """Record the names of the threads that call ``owner.name``."""
    threads: set[str] = set()
    original = getattr(owner, name)

    def recorded(*args: object, **kwargs: object) -> object:
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return threads


def test_a_30_day_plot_is_drawn_off_the_loop(loop: LoopThread,
                                            month: tuple[KeeperWeb, StoreKeeper],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server, keeper = month
    port = server.config.port
    drawing = on_threads(monkeypatch, plotpage_module, "render_svg")
    decimating = on_threads(monkeypatch, Decimator, "feed")
    status, _, text = raw_request(port, "GET", "/plot/level-1/water_level?period=30d")
    assert status == 200
    counts = re.search(r'id="plot-counts">(\d+) ', text)
    assert counts is not None and int(counts.group(1)) >= 43_000
    assert len(text) < 60_000  # decimated: the page stays small on a phone's link
    assert drawing and decimating
    assert "test-loop" not in drawing | decimating, "the plot was drawn on the loop"
    assert keeper.history_calls >= 9  # read page by page


def test_a_pin_check_runs_off_the_loop(loop: LoopThread,
                                      month: tuple[KeeperWeb, StoreKeeper],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    hashing = on_threads(monkeypatch, pin_module, "_scrypt")
    port = month[0].config.port
    _, headers, text = raw_request(port, "GET", "/devices")
    cookie = headers["set-cookie"].split(";")[0]
    token = re.search(r'name="csrf" value="([^"]+)"', text)
    assert token is not None
    body = f"csrf={token.group(1)}&alarm_id=x&name=x&pin=000000".encode()
    answer = raw_request(port, "POST", "/alarms/ack", body,
                         {"Content-Type": "application/x-www-form-urlencoded",
                          "Cookie": cookie})
    assert answer[0] == 403
    assert hashing and "test-loop" not in hashing, "the PIN was hashed on the loop"
