"""End to end (issue #17): the keeper's page of a running gateway, in a headless Chromium.

Real processes as in tests/e2e: `edge simulate` serving the site's Modbus devices, a
private Mosquitto with a platform-side subscriber, and `edge run` with a ``web:`` section;
the browser is the phone. The simulated level sits below the flood limit, then rises over
it ``RISE_S`` after the simulator started, which raises the level alarm.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from selenium.webdriver.common.by import By

from edge.history import read_point_history
from edge.web.pin import hash_pin
from tests.support import (
    Broker,
    EdgeProcess,
    Recorder,
    free_port,
    site_config,
    start_edge,
    wait_for_port,
)
from tests.web.browsing import Browser, click_and_wait, css, one
from tests.web.sample import PIN, raw_request
from vocab.model import now_ms

GATEWAY = "gw-page"
ROOT = f"reservoir/test-site/{GATEWAY}"
LEVEL = "level-1/water_level"
INTERVAL_S = 1.0
RISE_S = 10.0  # simulator time at which the level goes over the flood limit
POINTS = {LEVEL, "level-1/rain_counter", "piezo-1/pressure", "derived/freeboard"}


@dataclass
class Running:
    web_port: int
    store: Path
    started_ms: int
    gateway: EdgeProcess
    platform: Recorder

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("gateway-page")
    modbus_port, web_port = free_port(), free_port()
    config = site_config(tmp, broker.port, modbus_port, interval=INTERVAL_S,
                         gateway_id=GATEWAY)
    data = yaml.safe_load(config.read_text())
    data["devices"][0]["points"][0]["name"] = "坝前水位"
    data["devices"][1]["points"][0]["name"] = "P1 渗压"
    data["derived"] = [{"id": "freeboard", "name": "超高",
                        "expression": "crest - {level-1/water_level}", "unit": "m"}]
    data["web"] = {"listen": f"127.0.0.1:{web_port}", "pin_hash": hash_pin(PIN),
                   "lockout_after": 3}
    config.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    script = tmp / "values.yaml"
    script.write_text(yaml.safe_dump({LEVEL: [[0, 123.0], [RISE_S, 124.0]],
                                      "level-1/rain_counter": [[0, 40]],
                                      "piezo-1/pressure": [[0, 152.37]]}))
    simulator = start_edge(["simulate", "-c", str(config), "--values", str(script)],
                           tmp / "sim.log")
    platform = Recorder(broker.port, f"{ROOT}/#")
    gateway: EdgeProcess | None = None
    try:
        wait_for_port(modbus_port)
        started = now_ms()
        gateway = start_edge(["run", "-c", str(config)], tmp / "gw.log")
        wait_for_port(web_port, 15)
        platform.wait_for(lambda r: bool(r.on("/telemetry")), 10, "the first reading")
        yield Running(web_port, tmp / "edge.db", started, gateway, platform)
        assert gateway.stop() == 0, gateway.output()[-3000:]
        assert "web_page_failed" not in gateway.output()
    finally:
        if gateway is not None:
            gateway.kill()
        simulator.kill()
        platform.close()


def test_the_overview_shows_the_simulated_level_with_its_unit(browser: Browser,
                                                              gateway: Running) -> None:
    browser.get(gateway.url("/"))
    row = one(browser, f'#level li.big[data-point="{LEVEL}"]')
    assert row.find_element(By.CSS_SELECTOR, ".name").text == "坝前水位"
    assert row.find_element(By.CSS_SELECTOR, ".val").text == "123"
    assert row.find_element(By.CSS_SELECTOR, ".unit").text == "m"
    assert row.find_element(By.CSS_SELECTOR, ".badge.q").text == "正常"
    freeboard = one(browser, 'li[data-point="derived/freeboard"]')
    assert freeboard.find_element(By.CSS_SELECTOR, ".name").text == "超高"
    assert freeboard.find_element(By.CSS_SELECTOR, ".val").text == "3"
    piezo = one(browser, '#seepage li[data-point="piezo-1/pressure"]')
    assert piezo.find_element(By.CSS_SELECTOR, ".val").text == "152.37"
    assert piezo.find_element(By.CSS_SELECTOR, ".unit").text == "kPa"


def test_bad_requests_get_a_clear_4xx(gateway: Running) -> None:
    port = gateway.web_port
    for method, path, status, message in (
            ("GET", "/plot/no/such", 404, "未知测点：no/such"),
            ("GET", "/nothing-here", 404, "没有这个页面"),
            ("GET", "/?x=1", 400, "x"),
            ("GET", f"/plot/{LEVEL}?period=1y", 400, "1y"),
            ("POST", "/alarms/ack", 403, "请刷新页面"),
            ("GET", "/inspect", 405, "GET")):
        got, _, text = raw_request(port, method, path, b"" if method == "POST" else None)
        assert got == status, (path, got)
        assert message in text and "Traceback" not in text, (path, text[-300:])


def test_the_level_plot_has_one_point_per_stored_reading(browser: Browser,
                                                          gateway: Running) -> None:
    # Polls, not messages: a message carries the rounds of a commit window.
    gateway.platform.wait_for(lambda r: sum(
        len(m["readings"]) for m in r.on("/telemetry")) >= 12 * 3, 20, "a few polls")
    # Stored by now: a commit window and its round's wait (3 s at most) ago.
    start, end = gateway.started_ms - 60_000, now_ms() - 4500
    with sqlite3.connect(f"file:{gateway.store}?mode=ro", uri=True) as conn:
        stored = read_point_history(conn, "level-1", "water_level", start, end, 100_000)
    good = [r for r in stored if r.quality == "good"]
    assert len(good) >= 2 and len(good) == len(stored)
    browser.get(gateway.url(f"/plot/{LEVEL}?from={start}&to={end}"))
    vertices = sum(len(line.get_attribute("points").split())
                   for line in css(browser, "svg.plot polyline.series"))
    singles = len(css(browser, "svg.plot circle.single"))
    assert vertices + singles == len(good)
    assert one(browser, "#plot-counts").text.startswith(f"{len(good)} 个正常值")
    limits = sorted(float(v.get_attribute("data-value"))
                    for v in css(browser, "svg.plot line.limit"))
    assert limits == [123.5, 124.8]  # the threshold rule's, from the configuration


def _alarm_messages(platform: Recorder, state: str) -> list[dict[str, Any]]:
    return [m["alarm"] for m in platform.on("/alarms") if m["alarm"]["state"] == state]


def test_a_raised_alarm_is_listed_at_once_and_acknowledged_with_the_pin(
        browser: Browser, gateway: Running) -> None:
    platform = gateway.platform
    platform.wait_for(lambda r: bool(_alarm_messages(r, "raised")), RISE_S + 15,
                      "the level alarm")
    raised = _alarm_messages(platform, "raised")[0]
    # Published after its commit; the page reads the alarm book the commit came from, so
    # the first page loaded now lists it: well within one poll of the reading.
    browser.get(gateway.url("/alarms"))
    card = one(browser, f'#active li.card[data-alarm="{raised["id"]}"]')
    seen_ms = now_ms()
    assert seen_ms - raised["ts"] < 2 * INTERVAL_S * 1000 + 2000
    assert card.find_element(By.CSS_SELECTOR, ".value").text == "124 m"
    assert card.find_element(By.CSS_SELECTOR, ".limit").text == "123.5 m"
    assert card.find_element(By.CSS_SELECTOR, ".ack-status").text == "未确认"

    def submit(pin: str) -> None:
        form = one(browser, f'li[data-alarm="{raised["id"]}"] form.ack')
        form.find_element(By.NAME, "name").send_keys("张三")
        form.find_element(By.NAME, "pin").send_keys(pin)
        click_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button"))

    submit("000000")
    assert "PIN 码错误，还可尝试 2 次" in one(browser, "#error-message").text
    assert _alarm_messages(platform, "acknowledged") == []
    submit(PIN)
    assert browser.current_url.endswith(f"/alarms?acked={quote(raised['id'], safe='')}")
    assert one(browser, "#notice").text == f"报警 {raised['id']} 已确认。"
    status = one(browser, f'li[data-alarm="{raised["id"]}"] .ack-status').text
    assert status.startswith("已由 张三（本地页面） 于")
    platform.wait_for(lambda r: bool(_alarm_messages(r, "acknowledged")), 10,
                      "the acknowledgement at the platform")
    [acked] = _alarm_messages(platform, "acknowledged")
    assert (acked["id"], acked["by"], acked["via"]) == (raised["id"], "张三", "page")
    history = [(r.get_attribute("data-alarm"), r.get_attribute("data-state"))
               for r in css(browser, "#history tr[data-alarm]")]
    assert history[:2] == [(raised["id"], "acknowledged"), (raised["id"], "raised")]


def test_the_inspection_button_returns_every_point(browser: Browser, gateway: Running) -> None:
    browser.get(gateway.url("/devices"))
    devices = {d.get_attribute("data-device") for d in css(browser, "li.device")}
    assert devices == {"level-1", "piezo-1"}
    mqtt = one(browser, 'li.channel[data-channel="mqtt"]')
    assert "q-good" in mqtt.get_attribute("class").split()  # connected to the broker
    asked = now_ms()
    click_and_wait(browser, one(browser, "#inspect-button"))
    rows = css(browser, "li.inspected-point")
    assert {r.get_attribute("data-point") for r in rows} == POINTS
    fresh = {r.get_attribute("data-point") for r in rows
             if r.find_elements(By.CSS_SELECTOR, ".badge.fresh")}
    assert fresh == POINTS, "every point was read after the button was pressed"
    summary = one(browser, "#inspect-summary").text
    assert re.search(r"\b4\b", summary), summary
    assert now_ms() - asked < 10_000
