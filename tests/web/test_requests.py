"""Bad requests to the keeper's page: each gets a clear 4xx in the page's language and
never a traceback; the port's failures and hangs become a 5xx page, and the server goes
on serving. Raw HTTP on 127.0.0.1, no browser needed."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

import edge.web.plotpage
from edge.web.app import MAX_QUERY, KeeperWeb
from edge.web.port import AckOutcome, Inspection, PointStatus
from tests.web.keeper import LoopThread, StoreKeeper, serve
from tests.web.sample import DAY, LEVEL, PIN, Facts, raw_request, web_config

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def page(loop: LoopThread, site: tuple[StoreKeeper, Facts],
         pin_hash: str) -> Iterator[KeeperWeb]:
    server = serve(loop, site[0], web_config(pin=pin_hash))
    yield server
    loop.run(server.stop())


def no_traceback(body: str) -> None:
    assert "Traceback" not in body and 'File "' not in body, body[:500]


def refused(server: KeeperWeb, method: str, path: str, status: int, message: str,
            body: bytes | None = None, headers: dict[str, str] | None = None) -> str:
    got, response_headers, text = raw_request(server.config.port, method, path, body, headers)
    no_traceback(text)
    assert got == status, (path[:100], got, text[-400:])
    assert message in text, (path[:100], text[-400:])
    assert response_headers["content-type"].startswith("text/html")
    return text


def session(server: KeeperWeb, path: str = "/devices") -> dict[str, str]:
    """A session cookie and its CSRF token, as a browser gets them from a page."""
    status, headers, text = raw_request(server.config.port, "GET", path)
    assert status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', text)
    assert token is not None
    return {"Cookie": headers["set-cookie"].split(";")[0], "token": token.group(1)}


def test_unknown_point_or_page(page: KeeperWeb) -> None:
    refused(page, "GET", "/plot/no/such", 404, "未知测点：no/such")
    refused(page, "GET", "/plot/level-1/%3Cscript%3E", 404, "未知测点：level-1/&lt;script&gt;")
    refused(page, "GET", "/plot/level-1", 404, "没有这个页面：/plot/level-1")
    refused(page, "GET", "/config", 404, "没有这个页面")
    refused(page, "GET", "/inspect", 405, "此页面不接受 GET 请求")
    refused(page, "DELETE", "/alarms", 405, "不接受 DELETE")


@pytest.mark.parametrize(("query", "message"), [
    ("period=100y", "时段 100y 无效"),
    ("period=24h&period=7d", "参数 period 出现了多次"),
    ("from=1764900000000", "时间范围无效"),
    ("from=1764900000000&to=1764800000000", "时间范围无效"),
    ("from=1700000000000&to=1764900000000", "跨度不超过 31 天"),
    ("end=99999999999999", "时间 end=99999999999999 无效"),
    ("from=-5&to=1764900000000", "时间 from=-5 无效"),
    ("from=abc&to=1764900000000", "时间 from=abc 无效"),
    ("end=1999-12-31", "时间 end=1999-12-31 无效"),
    ("end=9999-01-01T00:00", "无效"),
    ("from=2026-12-01&to=2026-12-02&period=24h", "未知参数"),
    ("zoom=3", "未知参数：zoom"),
])
def test_absurd_time_ranges_and_parameters(page: KeeperWeb, query: str, message: str) -> None:
    refused(page, "GET", f"/plot/{LEVEL}?{query}", 400, message)


def test_a_range_in_site_time_is_accepted(page: KeeperWeb, site: tuple[StoreKeeper, Facts]
                                          ) -> None:
    _, facts = site
    status, _, text = raw_request(page.config.port, "GET",
                                  f"/plot/{LEVEL}?from={facts.t0 - 2 * DAY}&to={facts.t0}")
    assert status == 200 and "svg" in text


def test_huge_query_strings_and_headers(page: KeeperWeb) -> None:
    refused(page, "GET", "/?" + "a" * 5000, 414, f"查询字符串过长（5000 字符，上限 {MAX_QUERY}）")
    refused(page, "GET", f"/plot/{LEVEL}?period=" + "7" * 2000, 414, "查询字符串过长")
    before = page.counters["protocol_errors"]
    # Past the request-line limit aiohttp's parser answers itself: still a 4xx, no trace.
    status, _, text = raw_request(page.config.port, "GET", "/?" + "b" * 100_000)
    assert status == 400
    no_traceback(text)
    status, _, text = raw_request(page.config.port, "GET", "/",
                                  headers={"X-Filler": "c" * 20_000})
    assert status == 400
    no_traceback(text)
    assert page.counters["protocol_errors"] >= before + 2
    assert raw_request(page.config.port, "GET", "/")[0] == 200  # and serves on


def test_huge_or_malformed_posts(page: KeeperWeb) -> None:
    refused(page, "POST", "/alarms/ack", 413, "提交内容过大", b"x=" + b"y" * 20_000, FORM)
    me = session(page)
    headers = {**FORM, "Cookie": me["Cookie"]}
    refused(page, "POST", "/inspect", 400, "参数 csrf 出现了多次",
            f"csrf={me['token']}&csrf={me['token']}".encode(), headers)
    refused(page, "POST", "/inspect", 400, "未知参数：debug",
            f"csrf={me['token']}&debug=1".encode(), headers)


def test_ack_form_fields_checked(page: KeeperWeb, site: tuple[StoreKeeper, Facts]) -> None:
    keeper, _ = site
    calls = len(keeper.acks)
    me = session(page, "/alarms")
    headers = {**FORM, "Cookie": me["Cookie"]}
    token = me["token"]
    refused(page, "POST", "/alarms/ack", 400, "请填写确认人姓名",
            f"csrf={token}&alarm_id=a-level&name=&pin={PIN}".encode(), headers)
    refused(page, "POST", "/alarms/ack", 400, "请填写确认人姓名",
            f"csrf={token}&alarm_id=a-level&name={'n' * 41}&pin={PIN}".encode(), headers)
    refused(page, "POST", "/alarms/ack", 400, "请填写 PIN 码",
            f"csrf={token}&alarm_id=a-level&name=x&pin=".encode(), headers)
    refused(page, "POST", "/alarms/ack", 400, "报警编号无效",
            f"csrf={token}&alarm_id=&name=x&pin={PIN}".encode(), headers)
    assert len(keeper.acks) == calls


def test_ack_of_an_alarm_not_active(page: KeeperWeb) -> None:
    me = session(page, "/alarms")
    refused(page, "POST", "/alarms/ack", 409, "报警 a-piezo 不是未确认的当前报警",
            f"csrf={me['token']}&alarm_id=a-piezo&name=x&pin={PIN}".encode(),
            {**FORM, "Cookie": me["Cookie"]})


def test_pages_reveal_no_secret(page: KeeperWeb, pin_hash: str) -> None:
    salt = pin_hash.split("$")[3]
    for path in ("/", "/alarms", "/devices", f"/plot/{LEVEL}", "/nope", "/plot/x/y"):
        _, _, text = raw_request(page.config.port, "GET", path)
        assert pin_hash not in text and salt not in text and "scrypt" not in text
        assert "pin_hash" not in text


def test_notice_only_for_an_acknowledged_alarm(page: KeeperWeb) -> None:
    _, _, text = raw_request(page.config.port, "GET", "/alarms?acked=a-settle")
    assert 'id="notice"' not in text  # a-settle is not acknowledged: no fake notice
    _, _, text = raw_request(page.config.port, "GET", "/alarms?acked=a-piezo")
    assert "报警 a-piezo 已确认" in text


@dataclass
class FailingKeeper:
    """Delegates to the real keeper; points() fails or hangs, acknowledge fails."""

    real: StoreKeeper
    mode: str

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    async def points(self) -> Sequence[PointStatus]:
        if self.mode == "fail":
            raise RuntimeError("database disk image is malformed")
        if self.mode == "hang":
            await asyncio.sleep(30)
        return await self.real.points()

    async def acknowledge(self, alarm_id: str, by: str) -> AckOutcome:
        return AckOutcome("failed", "disk full")

    async def inspect(self) -> Inspection:
        raise OSError("serial port vanished")


def test_a_failing_port_gives_500_without_traceback(loop: LoopThread,
                                                    site: tuple[StoreKeeper, Facts],
                                                    pin_hash: str) -> None:
    server = serve(loop, FailingKeeper(site[0], "fail"), web_config(pin=pin_hash))
    try:
        text = refused(server, "GET", "/", 500, "页面出错，已记录")
        assert "malformed" not in text
        assert raw_request(server.config.port, "GET", "/devices")[0] == 200
    finally:
        loop.run(server.stop())


def test_an_acknowledgement_not_stored_is_said_so(loop: LoopThread,
                                                  site: tuple[StoreKeeper, Facts],
                                                  pin_hash: str) -> None:
    server = serve(loop, FailingKeeper(site[0], "ack"), web_config(pin=pin_hash))
    try:
        me = session(server, "/alarms")
        refused(server, "POST", "/alarms/ack", 503, "确认未能保存，请重试：disk full",
                f"csrf={me['token']}&alarm_id=a-settle&name=x&pin={PIN}".encode(),
                {**FORM, "Cookie": me["Cookie"]})
    finally:
        loop.run(server.stop())


def test_a_hanging_port_times_out_and_page_work_is_bounded(
        loop: LoopThread, site: tuple[StoreKeeper, Facts]) -> None:
    server = serve(loop, FailingKeeper(site[0], "hang"), web_config(language="en"),
                   page_timeout_s=1.5, slot_wait_s=0.3)
    results: list[tuple[int, str]] = []

    def fetch() -> None:
        status, _, text = raw_request(server.config.port, "GET", "/")
        results.append((status, text))

    try:
        threads = [threading.Thread(target=fetch) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        statuses = sorted(status for status, _ in results)
        assert statuses == [503] * 5
        busy = [t for _, t in results if "The gateway is busy" in t]
        late = [t for _, t in results if "did not answer in time" in t]
        assert len(busy) == 1 and len(late) == 4  # four slots, the fifth turned away
        assert raw_request(server.config.port, "GET", "/devices")[0] == 200
    finally:
        loop.run(server.stop())


def test_a_failed_inspection_is_a_500_page(loop: LoopThread, site: tuple[StoreKeeper, Facts],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(loop, FailingKeeper(site[0], "ack"), web_config())
    try:
        me = session(server)
        text = refused(server, "POST", "/inspect", 500, "页面出错，已记录",
                       f"csrf={me['token']}".encode(), {**FORM, "Cookie": me["Cookie"]})
        assert "vanished" not in text
    finally:
        loop.run(server.stop())
    assert "web_inspection_failed" in capsys.readouterr().out


def test_a_plot_past_its_reading_budget_says_so(page: KeeperWeb,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge.web.plotpage, "MAX_PLOT_READINGS", 1000)
    monkeypatch.setattr(edge.web.plotpage, "HISTORY_PAGE", 300)
    _, _, text = raw_request(page.config.port, "GET", f"/plot/{LEVEL}?period=30d")
    assert "读数过多，只绘制了前 1000 个" in text
    _, _, text = raw_request(page.config.port, "GET", f"/plot/{LEVEL}?period=24h")
    assert "读数过多" not in text  # 288 readings fit
