"""The keeper's page in a real headless Chromium, served from a real store.

One browser for the module; each server is a real aiohttp site on 127.0.0.1 on a loop of
its own thread, as the daemon's loop would run it. With RESERVOIR_EDGE_SCREENSHOTS=1 the
run also writes docs/screenshots/ (overview, alarms, a plot), committed once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from edge.web.app import KeeperWeb
from tests.web.browsing import Browser, click_and_wait, css, one
from tests.web.keeper import LoopThread, StoreKeeper, serve
from tests.web.sample import (
    HOUR,
    LEVEL,
    PIN,
    Facts,
    raw_request,
    screenshots_wanted,
    web_config,
)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def page(loop: LoopThread, site: tuple[StoreKeeper, Facts],
         pin_hash: str) -> Iterator[KeeperWeb]:
    keeper, _ = site
    server = serve(loop, keeper, web_config(pin=pin_hash))
    yield server
    loop.run(server.stop())


def url(server: KeeperWeb, path: str) -> str:
    return f"http://127.0.0.1:{server.config.port}{path}"


def shoot(browser: Browser, name: str) -> None:
    """A full-page PNG at phone width, only when RESERVOIR_EDGE_SCREENSHOTS=1."""
    if not screenshots_wanted():
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(412, min(int(height) + 90, 2400))
    try:
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    finally:
        browser.set_window_size(412, 900)


def test_overview_shows_level_with_unit_time_and_marks_stale_and_bad(
        browser: Browser, page: KeeperWeb) -> None:
    browser.get(url(page, "/"))
    level = one(browser, f'#level li.big[data-point="{LEVEL}"]')
    assert level.find_element(By.CSS_SELECTOR, ".val").text == "123.45"
    assert level.find_element(By.CSS_SELECTOR, ".unit").text == "m"
    assert level.find_element(By.CSS_SELECTOR, ".name").text == "坝前水位"  # config name
    assert level.find_element(By.CSS_SELECTOR, ".badge.q").text == "正常"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", level.text), level.text
    levels = {row.get_attribute("data-level"): row.text for row in css(browser, "tr[data-level]")}
    assert "汛限水位" in levels["flood_limit"] and "低于 0.05 m" in levels["flood_limit"]
    assert "坝顶高程" in levels["crest"] and "126.00 m" in levels["crest"]
    freeboard = one(browser, "li.freeboard")
    assert freeboard.find_element(By.CSS_SELECTOR, ".val").text == "2.55"
    rain = one(browser, "li.rain-24h")
    assert rain.find_element(By.CSS_SELECTOR, ".val").text == "18.5"
    assert "近 24 小时" in rain.text and "mm" in rain.text

    stale = one(browser, 'li[data-point="vw-1/piezo_p2"]')
    assert "stale" in stale.get_attribute("class").split()
    assert stale.find_element(By.CSS_SELECTOR, ".badge.stale").text == "已过期"
    assert "小时前" in stale.text  # its age, not passed off as now
    bad = one(browser, 'li[data-point="vw-1/piezo_p3"]')
    assert "q-bad" in bad.get_attribute("class").split()
    assert bad.find_element(By.CSS_SELECTOR, ".badge.q").text == "无效"
    assert bad.find_element(By.CSS_SELECTOR, ".val").text == "—"
    assert "timeout" in bad.find_element(By.CSS_SELECTOR, ".reason").text
    suspect = one(browser, 'li[data-point="gnss-1/settlement_mm"]')
    assert suspect.find_element(By.CSS_SELECTOR, ".badge.q").text == "可疑"
    assert "rtk_float" in suspect.text
    never = one(browser, 'li[data-point="vw-1/temp_p1"]')
    assert "q-never" in never.get_attribute("class").split()
    assert never.find_element(By.CSS_SELECTOR, ".badge.q").text == "未读取"
    # Every shown value carries a quality badge: none is left unmarked.
    for row in css(browser, "#seepage li, #displacement li, #gradient li"):
        assert row.find_elements(By.CSS_SELECTOR, ".badge.q"), row.text
    assert one(browser, "a.banner").text == "当前报警 3 条"
    shoot(browser, "overview")


def test_no_resource_from_elsewhere(browser: Browser, page: KeeperWeb) -> None:
    browser.get(url(page, "/"))
    html = browser.page_source
    assert "<script" not in html
    external = re.findall(r'(?:src|href)="(https?:)?//', html)
    assert external == []
    status, headers, _ = raw_request(page.config.port, "GET", "/")
    assert status == 200
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"


def test_alarms_list_active_first_then_history_and_notifications(
        browser: Browser, page: KeeperWeb, site: tuple[StoreKeeper, Facts]) -> None:
    browser.get(url(page, "/alarms"))
    sections = [s.get_attribute("id") for s in css(browser, "main section")]
    assert sections == ["active", "history", "notifications"]
    cards = css(browser, "#active li.card")
    assert [c.get_attribute("data-alarm") for c in cards] == ["a-settle", "a-piezo", "a-level"]
    level = cards[2]
    assert "预警" in level.text
    assert level.find_element(By.CSS_SELECTOR, ".value").text == "123.52 m"
    assert level.find_element(By.CSS_SELECTOR, ".limit").text == "123.5 m"
    assert "3 小时前" in level.find_element(By.CSS_SELECTOR, ".since").text
    assert level.find_element(By.CSS_SELECTOR, ".ack-status").text == "未确认"
    assert level.find_elements(By.CSS_SELECTOR, "form.ack")
    acked = cards[1]
    assert "李四（本地页面）" in acked.find_element(By.CSS_SELECTOR, ".ack-status").text
    assert not acked.find_elements(By.CSS_SELECTOR, "form.ack")
    history = [(r.get_attribute("data-alarm"), r.get_attribute("data-state"))
               for r in css(browser, "#history tr[data-alarm]")]
    assert ("a-rain", "cleared") in history and ("a-rain", "raised") in history
    assert ("a-piezo", "acknowledged") in history
    assert not any(alarm == "a-old" for alarm, _ in history)  # 40 days old
    notifications = one(browser, "#notifications").text
    assert "*******5678" in notifications and "13812345678" not in notifications
    shoot(browser, "alarms")


def test_plot_has_a_vertex_per_good_reading_and_a_gap_where_readings_are_missing(
        browser: Browser, page: KeeperWeb, site: tuple[StoreKeeper, Facts]) -> None:
    _, facts = site
    start, end = facts.t0 - 24 * HOUR, facts.t0
    browser.get(url(page, f"/plot/{LEVEL}?from={start}&to={end}"))
    good = [r for r in facts.level if start <= r.ts_ms <= end and r.quality == "good"]
    lines = css(browser, "svg.plot polyline.series")
    vertices = sum(len(line.get_attribute("points").split()) for line in lines)
    singles = len(css(browser, "svg.plot circle.single"))
    assert vertices + singles == len(good)
    # Broken at the 2-hour hole and at the failed read: three stretches of line.
    assert len(lines) + singles == 3
    gaps = [(int(g.get_attribute("data-from")), int(g.get_attribute("data-to")))
            for g in css(browser, "svg.plot rect.gap")]
    hole = [g for g in gaps if g[0] < facts.hole[0] and g[1] > facts.hole[1]]
    assert len(hole) == 1 and hole[0][1] - hole[0][0] < 2 * HOUR + 2 * 300_000
    assert any(g[0] < facts.bad_ts < g[1] for g in gaps)
    assert len(css(browser, "svg.plot line.bad")) == 1
    suspect = one(browser, "svg.plot circle.suspect")
    assert float(suspect.get_attribute("data-value")) == 125.9
    limits = sorted(float(v.get_attribute("data-value"))
                    for v in css(browser, "svg.plot line.limit"))
    assert limits == [123.5, 124.8]  # the flood-limit level shares the warning's line
    assert f"{len(good)} 个正常值" in one(browser, "#plot-counts").text
    ticks = [t.text for t in css(browser, "svg.plot text.xtick")]
    assert ticks and all(re.fullmatch(r"\d\d:00", t) for t in ticks)


def test_plot_periods_render_from_the_store(browser: Browser, page: KeeperWeb) -> None:
    for period, min_good in (("24h", 250), ("7d", 1900), ("30d", 8000)):
        browser.get(url(page, f"/plot/{LEVEL}?period={period}"))
        counts = one(browser, "#plot-counts").text
        match = re.match(r"(\d+)", counts)
        assert match is not None, counts
        assert int(match.group(1)) >= min_good, counts
        points = sum(len(p.get_attribute("points").split())
                     for p in css(browser, "svg.plot polyline.series"))
        assert points <= 2 * 430 + 10  # decimated: at most two vertices per column
        assert one(browser, '.periods a.on').text == {"24h": "24 小时", "7d": "7 天",
                                                       "30d": "30 天"}[period]
        if period == "24h":
            shoot(browser, "plot")


def submit_ack(browser: Browser, alarm_id: str, name: str, pin: str) -> None:
    form = one(browser, f'li[data-alarm="{alarm_id}"] form.ack')
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "pin").send_keys(pin)
    click_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button"))


def test_wrong_pin_refused_right_pin_acknowledges_through_the_port(
        browser: Browser, page: KeeperWeb, site: tuple[StoreKeeper, Facts]) -> None:
    keeper, _ = site
    browser.get(url(page, "/alarms"))
    submit_ack(browser, "a-level", "张三", "111111")
    assert "PIN 码错误，还可尝试 4 次" in one(browser, "#error-message").text
    assert keeper.acks == []
    submit_ack(browser, "a-level", "张三", PIN)
    assert browser.current_url.endswith("/alarms?acked=a-level")
    assert one(browser, "#notice").text == "报警 a-level 已确认。"
    assert keeper.acks == [("a-level", "张三")]
    card = one(browser, 'li[data-alarm="a-level"]')
    assert "张三（本地页面）" in card.find_element(By.CSS_SELECTOR, ".ack-status").text
    assert not card.find_elements(By.CSS_SELECTOR, "form.ack")
    history = [(r.get_attribute("data-alarm"), r.get_attribute("data-state"))
               for r in css(browser, "#history tr[data-alarm]")]
    assert history[0] == ("a-level", "acknowledged")


def test_lockout_after_repeated_wrong_pins(browser: Browser, loop: LoopThread,
                                          site: tuple[StoreKeeper, Facts],
                                          pin_hash: str) -> None:
    keeper, _ = site
    calls = len(keeper.acks)
    server = serve(loop, keeper, web_config(pin=pin_hash, lockout_after=3,
                                            lockout_site_after=10))
    try:
        browser.get(url(server, "/alarms"))
        for left in (2, 1):
            submit_ack(browser, "a-settle", "王五", "000000")
            assert f"还可尝试 {left} 次" in one(browser, "#error-message").text
        submit_ack(browser, "a-settle", "王五", "000000")
        assert "已锁定" in one(browser, "#error-message").text
        submit_ack(browser, "a-settle", "王五", PIN)  # right, but locked out
        assert "已锁定" in one(browser, "#error-message").text
        assert len(keeper.acks) == calls
        assert server.guard.lockouts_total == 1
    finally:
        loop.run(server.stop())


def test_missing_or_invalid_csrf_token_refused(browser: Browser, page: KeeperWeb,
                                              site: tuple[StoreKeeper, Facts]) -> None:
    keeper, _ = site
    calls = len(keeper.acks)
    browser.get(url(page, "/alarms"))
    form = one(browser, 'li[data-alarm="a-settle"] form.ack')
    browser.execute_script("arguments[0].value = 'forged'",
                           form.find_element(By.NAME, "csrf"))
    submit_ack(browser, "a-settle", "张三", PIN)
    assert "表单已过期" in one(browser, "#error-message").text
    port = page.config.port
    body = f"alarm_id=a-settle&name=x&pin={PIN}".encode()
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, text = raw_request(port, "POST", "/alarms/ack", body, form_type)
    assert status == 403 and "表单已过期" in text  # no cookie, no token
    session = browser.get_cookie("keeper_session")["value"]
    status, _, _ = raw_request(port, "POST", "/alarms/ack", body,
                               {**form_type, "Cookie": f"keeper_session={session}"})
    assert status == 403  # the session's cookie without its token
    browser.get(url(page, "/alarms"))
    token = css(browser, 'input[name="csrf"]')[0].get_attribute("value")
    status, _, _ = raw_request(port, "POST", "/alarms/ack", body + f"&csrf={token}".encode(),
                               {**form_type, "Cookie": f"keeper_session={session}",
                                "Origin": "http://evil.example"})
    assert status == 403  # a right token sent from another site's page
    status, _, _ = raw_request(port, "POST", "/inspect", b"csrf=x", form_type)
    assert status == 403
    assert len(keeper.acks) == calls


def test_read_only_without_a_pin(browser: Browser, loop: LoopThread,
                                 site: tuple[StoreKeeper, Facts]) -> None:
    keeper, _ = site
    server = serve(loop, keeper, web_config())
    try:
        browser.get(url(server, "/alarms"))
        assert css(browser, "form.ack") == []
        assert "只读" in one(browser, "#ack-disabled").text
        browser.get(url(server, "/"))
        assert css(browser, "form") == []
    finally:
        loop.run(server.stop())


def test_english_by_config(browser: Browser, loop: LoopThread,
                           site: tuple[StoreKeeper, Facts], pin_hash: str) -> None:
    keeper, _ = site
    server = serve(loop, keeper, web_config(language="en", pin=pin_hash))
    try:
        browser.get(url(server, "/"))
        assert one(browser, "#level h2").text == "Reservoir level"
        assert one(browser, 'li[data-point="vw-1/piezo_p2"] .badge.stale').text == "stale"
        assert "Flood-limit level" in one(browser, 'tr[data-level="flood_limit"]').text
        assert one(browser, "html").get_attribute("lang") == "en"
        browser.get(url(server, "/alarms"))
        assert one(browser, "#active h2").text == "Active alarms"
        browser.get(url(server, f"/plot/{LEVEL}?period=1y"))
        assert "Period 1y is invalid" in one(browser, "#error-message").text
        browser.get(url(server, "/plot/no/such"))
        assert "Unknown point: no/such" in one(browser, "#error-message").text
    finally:
        loop.run(server.stop())


def test_inspection_button_shows_every_point(browser: Browser, page: KeeperWeb,
                                            site: tuple[StoreKeeper, Facts]) -> None:
    keeper, _ = site
    before = keeper.inspections
    browser.get(url(page, "/devices"))
    offline = one(browser, 'li[data-device="vw-1"]')
    assert "离线" in offline.text and "no answer from unit 3" in offline.text
    assert "待发" in one(browser, 'li[data-channel="platform"]').text
    click_and_wait(browser, one(browser, "#inspect-button"))
    assert keeper.inspections == before + 1
    rows = css(browser, "li.inspected-point")
    assert [r.get_attribute("data-point") for r in rows] == [s.ref for s in keeper.specs]
    fresh = [r.get_attribute("data-point") for r in rows
             if r.find_elements(By.CSS_SELECTOR, ".badge.fresh")]
    assert LEVEL in fresh and "vw-1/temp_p1" not in fresh
    assert "个测点已更新" in one(browser, "#inspect-summary").text
    level = one(browser, f'li.inspected-point[data-point="{LEVEL}"]')
    assert "秒前" in level.text
