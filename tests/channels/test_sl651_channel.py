"""The SL 651 channel end to end in one event loop: a gateway polling a real Modbus server,
reporting to SL 651 centres on loopback that decode with their own code and confirm."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from simulator.sl651_centre import Sl651Centre
from tests.channels.sl651_harness import STATION, Site

TEST, TIMED, ADDED, QUERY = 0x30, 0x32, 0x33, 0x37


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 90))


def delivered(centre: Sl651Centre, function: int = TEST) -> list[float]:
    """ZU of each report the centre received, once per serial (a resend before the
    confirmation arrived repeats its serial), in arrival order."""
    seen: dict[int, float] = {}
    for report in centre.reports(function):
        seen.setdefault(report.serial, report.values["ZU"])
    return list(seen.values())


async def send_tests(site: Site, levels: list[float]) -> None:
    assert site.service is not None
    for level in levels:
        await site.read_level(level)
        await site.service.send_test()


def test_test_report_carries_every_element_type_and_sign(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=3) as centre, Site(tmp_path, [centre]) as site:
            await send_tests(site, [123.457])
            [report] = await centre.wait_for(1, function=TEST)
            assert report.station == report.body_station == STATION
            assert report.centre == 3 and report.category == "K" and report.password == 0
            assert report.values == {"ZU": 123.457, "ZB": -0.5, "PT": 10.0, "VT": 12.6}
            await site.until(lambda: site.health(centre)["confirmed"] == 1, "confirmation")
            await site.until(lambda: site.health(centre)["backlog"] == 0, "an empty backlog")
    run(scenario)


def test_a_centre_away_for_a_while_gets_every_report_in_order_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        centre = Sl651Centre(address=1)
        await centre.start()
        async with Site(tmp_path, [centre]) as site:
            await send_tests(site, [120.001, 120.002])
            await site.until(lambda: site.health(centre)["confirmed"] == 2, "confirmations")
            await centre.stop()
            await send_tests(site, [120.003, 120.004, 120.005])
            await site.until(lambda: not site.health(centre)["connected"], "the link down")
            await centre.start()  # the same port
            await send_tests(site, [120.006])
            await site.until(lambda: len(delivered(centre)) >= 6, "six reports", 15)
            assert delivered(centre) == [120.001, 120.002, 120.003, 120.004, 120.005, 120.006]
            # Confirmed reports are never sent again; one caught by the stop may be (its
            # confirmation was lost with the connection), under its own serial.
            serials = [r.serial for r in centre.reports(TEST)]
            assert serials[:2] == [1, 2] and sorted(set(serials)) == list(range(1, 7))
            assert serials == sorted(serials)
            await site.until(lambda: site.health(centre)["backlog"] == 0, "an empty backlog")
        await centre.stop()
    run(scenario)


def test_a_centre_that_never_confirms_does_not_hold_the_other(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as county, \
                Sl651Centre(address=2, mode="silent") as province, \
                Site(tmp_path, [county, province]) as site:
            levels = [121.001, 121.002, 121.003, 121.004]
            await send_tests(site, levels)
            await site.until(lambda: delivered(county) == levels, "the county's reports")
            assert delivered(province) == levels[:1]  # still resending the first
            await site.until(lambda: site.health(province)["last_error"] is not None
                             and "no confirmation" in site.health(province)["last_error"],
                             "the province's error", 10)
            assert site.health(province)["confirmed"] == 0
            assert site.health(province)["backlog"] == len(levels)
            province.set_mode("confirm")
            await site.until(lambda: delivered(province) == levels, "the province's reports",
                             15)
    run(scenario)


def test_a_confirmation_with_a_wrong_crc_is_ignored_and_the_report_resent(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1, mode="bad_crc") as centre, \
                Site(tmp_path, [centre]) as site:
            await send_tests(site, [122.5])
            await centre.wait_for(2, function=TEST)  # sent, then sent again
            assert site.health(centre)["bad_frames"] >= 1
            assert site.health(centre)["confirmed"] == 0
            centre.set_mode("confirm")
            await site.until(lambda: site.health(centre)["confirmed"] == 1, "confirmation")
            assert {r.serial for r in centre.reports(TEST)} == {1}
    run(scenario)


def test_a_report_the_centre_refuses_is_set_aside_not_sent_forever(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1, mode="nak") as centre, \
                Site(tmp_path, [centre]) as site:
            await send_tests(site, [122.1])
            await site.until(lambda: site.health(centre)["set_aside"] == 1, "set aside")
            assert len(centre.reports(TEST)) == 3  # max_resends 2: three sends
            centre.set_mode("confirm")
            await send_tests(site, [122.2])
            await site.until(lambda: site.health(centre)["confirmed"] == 1, "the next one")
            assert delivered(centre) == [122.1, 122.2]
    run(scenario)


def test_an_alarm_causes_an_added_report_within_a_poll(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as centre, Site(tmp_path, [centre]) as site:
            site.set(level=124.2)
            [report] = await centre.wait_for(1, function=ADDED)
            assert report.values["ZU"] == 124.2
    run(scenario)


def test_timed_report_on_its_interval(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as centre, \
                Site(tmp_path, [centre], timed_report_min=0.01) as site:
            reports = await centre.wait_for(2, function=TIMED, timeout=10)
            assert all(r.values["ZU"] == 123.456 for r in reports)
            assert site.service is not None
            assert site.service.health()["reports"]["timed"] >= 2
    run(scenario)


def test_a_bad_reading_is_reported_as_missing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as centre, Site(tmp_path, [centre]) as site:
            assert site.gateway is not None
            site.rain.silent = True
            await site.until(lambda: (r := site.gateway.pipeline.latest.get(
                "rain/rain_total")) is not None and r.value is None, "the gauge offline")
            await send_tests(site, [123.0])
            [report] = await centre.wait_for(1, function=TEST)
            assert report.values["PT"] is None and report.values["ZU"] == 123.0
    run(scenario)


def test_the_real_time_query_is_answered_with_current_values(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as centre, Site(tmp_path, [centre]) as site:
            await send_tests(site, [123.25])
            await centre.wait_for(1, function=TEST)
            await centre.query_realtime(serial=9)
            [answer] = await centre.wait_for(1, function=QUERY)
            assert answer.serial == 9 and answer.values["ZU"] == 123.25
            await site.until(lambda: site.health(centre)["queries_answered"] == 1, "count")
    run(scenario)



def test_decode_tool_and_frames_record_of_everything_sent(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """Every frame the gateway sent and every confirmation decode with ``edge sl651
    decode``, CRC OK and the values the centre read; ``edge sl651 frames`` lists them."""
    centre = Sl651Centre(address=1)

    async def scenario() -> None:
        await centre.start()
        async with Site(tmp_path, [centre]) as site:
            assert site.gateway is not None
            router = site.gateway._router()
            reply = await router.handle(f"{site.gateway.settings.topic_root}/cmd/sl651_test",
                                        json.dumps({"id": 1}).encode())
            assert reply is not None and json.loads(reply.payload)["ok"], reply
            await centre.wait_for(1, function=TEST)
            site.set(level=124.3)  # over the threshold: an added report
            await centre.wait_for(1, function=ADDED)
            await centre.wait_for(1, function=0x2F, timeout=15)  # a keep-alive when idle
            await site.until(lambda: site.health(centre)["confirmed"] == 2, "confirmations")
        await centre.stop()

    run(scenario)
    frames = [r.raw for r in centre.received] + centre.sent
    assert len(frames) >= 5
    for frame in frames:
        assert main(["sl651", "decode", frame.hex(" ")]) == 0
        out = capsys.readouterr().out
        assert "CRC received" in out and out.rstrip().endswith(": OK"), out
    added = next(r for r in centre.received if r.function == ADDED)
    assert main(["sl651", "decode", added.raw.hex()]) == 0
    assert "124.300 m" in capsys.readouterr().out
    assert main(["sl651", "decode", "7E7E00"]) == 1
    assert "error: SL 651 frame: header at byte 3: short frame" in capsys.readouterr().out
    assert main(["sl651", "frames", "-c", str(tmp_path / "site.yaml")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[6] for line in listed] == ["30H", "33H"], listed
    assert all("confirmed at" in line for line in listed)


def test_a_centre_added_by_a_reload_is_sent_reports_without_a_restart(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as county, Sl651Centre(address=2) as city, \
                Site(tmp_path, [county]) as site:
            assert site.gateway is not None
            path = tmp_path / "site.yaml"
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            await send_tests(site, [123.1])
            await site.until(lambda: delivered(county) == [123.1], "the county's report")
            mqtt = site.gateway.outbox.channel("mqtt")
            config["sl651"]["centres"].append({"address": 2, "host": "127.0.0.1",
                                               "port": city.port})
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            assert await site.gateway.reload() == []
            assert site.service is not None and site.service.waiting == []
            assert site.gateway.outbox.channel("mqtt") is mqtt, "the uplink keeps its place"
            await send_tests(site, [123.2])
            # The new centre gets what is committed after the reload, not the county's past.
            await site.until(lambda: delivered(city) == [123.2], "the city's report")
            # The restarted service goes on with the county's serials (delivered() keys by
            # serial: a counter started again at 1 would hide 123.2 behind 123.1).
            await site.until(lambda: delivered(county) == [123.1, 123.2], "the county's")
            # And a reload that takes it away again releases its channel.
            config["sl651"]["centres"].pop()
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            assert await site.gateway.reload() == []
            assert "sl651-centre-2" not in site.gateway.outbox.channels
            assert "sl651-centre-1" in site.gateway.outbox.channels
            await send_tests(site, [123.3])
            await site.until(lambda: delivered(county) == [123.1, 123.2, 123.3], "the county")
            assert delivered(city) == [123.2]
    run(scenario)


def test_serials_go_on_after_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as county:
            async with Site(tmp_path, [county]) as site:
                await send_tests(site, [121.1, 121.2])
                await site.until(lambda: site.health(county)["confirmed"] == 2, "two")
            async with Site(tmp_path, [county]) as site:  # the same store: a restart
                await send_tests(site, [121.3])
                await site.until(lambda: site.health(county)["confirmed"] == 1, "the third")
            assert [r.serial for r in county.reports(TEST)] == [1, 2, 3]
            assert delivered(county) == [121.1, 121.2, 121.3]
    run(scenario)


def test_a_store_failing_at_a_reload_leaves_the_new_centre_waiting_and_the_others_reporting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=1) as county, Sl651Centre(address=2) as city, \
                Site(tmp_path, [county]) as site:
            assert site.gateway is not None
            await send_tests(site, [122.1])
            await site.until(lambda: delivered(county) == [122.1], "the county's report")

            async def store_fails(kinds: object) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(site.gateway.outbox, "open", store_fails)
            path = tmp_path / "site.yaml"
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
            config["sl651"]["centres"].append({"address": 2, "host": "127.0.0.1",
                                               "port": city.port})
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            assert await site.gateway.reload() == []
            # The service came back with the channels it had; the new centre waits for
            # the next start and says so (health), the county goes on.
            assert site.service is not None and site.service.waiting == ["sl651-centre-2"]
            assert site.service.health()["waiting_for_restart"] == ["sl651-centre-2"]
            await send_tests(site, [122.2])
            await site.until(lambda: delivered(county) == [122.1, 122.2], "the county's")
            assert city.connections == 0
    run(scenario)


def test_serials_start_at_1_when_the_record_of_frames_cannot_be_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.channels import sl651_record

    def unreadable(conn: object, channel: str) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sl651_record, "last_serial", unreadable)

    async def scenario() -> None:
        async with Sl651Centre(address=1) as county, Site(tmp_path, [county]) as site:
            await send_tests(site, [121.9])
            await site.until(lambda: site.health(county)["confirmed"] == 1, "a report")
            assert [r.serial for r in county.reports(TEST)] == [1]
    run(scenario)
