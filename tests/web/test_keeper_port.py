"""KeeperPort on the daemon's own parts (edge/web/keeper_port.py, edge/web/catalogue.py):
a real store, outbox, pipeline and rule engine in this process, readings fed as bus tasks
hand them over."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
import structlog

from edge.web.catalogue import Catalogue
from edge.web.keeper_port import DaemonKeeper
from edge.web.port import CharacteristicLevel, LimitLine, RainfallSum
from tests.web.daemon import HOUR, MIN, Daemon, level, running, site
from vocab.model import Reading, now_ms


def test_the_configuration_gives_names_sections_limits_and_the_featured_points(
        tmp_path: Path) -> None:
    catalogue = Catalogue(site(tmp_path / "edge.db"))
    s = catalogue.site
    assert (s.id, s.name, s.gateway, s.timezone) == ("yangjiayuan", "杨家源水库", "gw-01",
                                                     "Asia/Shanghai")
    assert s.levels == (CharacteristicLevel("dead", 110.0),
                        CharacteristicLevel("flood_limit", 123.5),
                        CharacteristicLevel("design_flood", 124.8),
                        CharacteristicLevel("crest", 126.0))
    # The tailwater comes first, but only the reservoir level is judged against the site's
    # named levels.
    assert s.level_point == "level-1/water_level"
    assert s.rainfall == (RainfallSum("1h", "rain/rain_1h"), RainfallSum("3h", "rain/rain_3h"),
                          RainfallSum("24h", "rain/rain_24h"),
                          RainfallSum("day", "rain/rain_day"))  # 2 h is no standard window
    table = {p.ref: (p.name, p.unit, p.quantity, p.section) for p in catalogue.points}
    assert list(table) == [
        "level-1/tailwater", "level-1/water_level", "level-1/rain", "piezo-1/head1",
        "piezo-1/head2", "derived/gradient", "derived/freeboard", "rain/rain_1h",
        "rain/rain_3h", "rain/rain_2h", "rain/rain_24h", "rain/rain_day"]
    assert table["level-1/water_level"] == ("坝前水位", "m", "water_level", "level")
    assert table["level-1/rain"] == ("", "mm", "rainfall_counter", "rainfall")
    assert table["piezo-1/head1"] == ("P1 渗压计", "m", "piezometric_level", "seepage")
    # Dimensionless from piezometers: a hydraulic gradient; from the level: with the level.
    assert table["derived/gradient"] == ("P1–P2 坡降", "", "gradient", "gradient")
    assert table["derived/freeboard"] == ("超高", "m", "derived", "level")
    assert table["rain/rain_1h"] == ("", "mm", "rainfall", "rainfall")
    by_ref = catalogue.by_ref
    assert by_ref["level-1/water_level"].limits == (
        LimitLine(123.5, "warning", "high", "level-high"),
        LimitLine(124.8, "alarm", "high", "level-high"),
        LimitLine(110.0, "warning", "low", "level-high"))  # not the rate rule's m/h
    assert by_ref["rain/rain_1h"].limits == (LimitLine(20.0, "warning", "high", "rain"),)
    assert by_ref["rain/rain_3h"].limits == ()
    # Stale after offline_after polls of its device; a derived point after 3 intervals of
    # its slowest input.
    assert by_ref["level-1/water_level"].stale_after_ms == 3 * MIN
    assert by_ref["piezo-1/head1"].stale_after_ms == 5 * 2 * MIN
    assert by_ref["derived/gradient"].interval_s == 120
    assert by_ref["derived/gradient"].stale_after_ms == 3 * 2 * MIN
    assert by_ref["rain/rain_1h"].interval_s == 60


def test_without_a_judged_level_the_first_water_level_is_the_reservoir(tmp_path: Path) -> None:
    assert Catalogue(site(tmp_path / "a.db", rules=[])).site.level_point == "level-1/tailwater"
    catalogue = Catalogue(site(tmp_path / "b.db", rules=[]).model_copy(update={"devices": []}))
    assert catalogue.site.level_point is None and catalogue.site.rainfall == ()


def test_latest_readings_from_the_pipeline_then_from_the_store_after_a_restart(
        tmp_path: Path) -> None:
    settings = site(tmp_path / "edge.db")

    async def first_run() -> None:
        async with running(settings) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            now = now_ms()
            await daemon.poll("level-1", level(now - 1000, 123.2), level(now - 1000, 20.4,
                                                                         "tailwater"))
            await daemon.poll("piezo-1", Reading("piezo-1", "head1", now - 20 * MIN, 105.1,
                                                 "m", "good"),
                              Reading("piezo-1", "head2", now - 20 * MIN, None, "m", "bad",
                                      None, "timeout"))
            points = {p.point: p for p in await keeper.points()}
            await keeper.close()
            water = points["level-1/water_level"]
            assert (water.value, water.unit, water.quality, water.stale) == (123.2, "m",
                                                                             "good", False)
            assert water.interval_s == 60 and len(water.limits) == 3
            # 20 min without a reading: past 5 polls of 2 min, the piezometer is stale.
            assert points["piezo-1/head1"].stale and points["piezo-1/head1"].value == 105.1
            assert (points["piezo-1/head2"].quality, points["piezo-1/head2"].reason) == (
                "bad", "timeout")
            assert points["derived/freeboard"].value == pytest.approx(2.8)
            assert points["derived/freeboard"].section == "level"
            assert points["rain/rain_1h"].quality is None  # the gauge was never read
            assert points["rain/rain_1h"].value is None and not points["rain/rain_1h"].stale

    async def after_restart() -> None:
        async with running(settings) as daemon:
            assert daemon.pipeline.latest == {}  # nothing polled yet since the start
            keeper = DaemonKeeper(daemon.ports)
            points = {p.point: p for p in await keeper.points()}
            again = {p.point: p for p in await keeper.points()}
            await keeper.close()
            assert points["level-1/water_level"].value == 123.2
            assert points["derived/freeboard"].value == pytest.approx(2.8)
            assert points["piezo-1/head1"].stale
            assert points["rain/rain_1h"].quality is None
            assert again == points

    asyncio.run(first_run())
    asyncio.run(after_restart())


def test_alarms_active_acknowledged_through_the_pipeline_and_in_the_log(tmp_path: Path
                                                                        ) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            now = now_ms()
            await daemon.poll("level-1", level(now - 3000, 123.6))  # over the flood limit
            await daemon.poll("level-1", level(now - 2000, 109.0, "tailwater"))
            [alarm] = await keeper.active_alarms()
            assert (alarm.point, alarm.rule, alarm.severity, alarm.state, alarm.value,
                    alarm.limit, alarm.acknowledged) == ("level-1/water_level", "level-high",
                                                         "warning", "raised", 123.6, 123.5,
                                                         False)
            assert alarm.since_ms == now - 3000 and alarm.acknowledged_by is None
            outcome = await keeper.acknowledge(alarm.alarm_id, "张三")
            assert outcome.status == "acknowledged"
            [acked] = await keeper.active_alarms()
            assert (acked.acknowledged, acked.acknowledged_by, acked.acknowledged_via) == (
                True, "张三", "page")
            assert acked.acknowledged_ms is not None and acked.acknowledged_ms >= now
            again = await keeper.acknowledge(alarm.alarm_id, "李四")
            assert again.status == "not_active" and alarm.alarm_id in again.detail
            assert (await keeper.acknowledge("no-such", "李四")).status == "not_active"
            later = now_ms() + 10  # after the acknowledgement
            await daemon.poll("level-1", level(later, 125.0))  # escalated
            log = await keeper.alarm_history(now - HOUR, later, 10)
            assert [(e.state, e.severity) for e in log] == [
                ("escalated", "alarm"), ("acknowledged", "warning"), ("raised", "warning")]
            assert (log[1].by, log[1].via) == ("张三", "page")
            assert log[0].by is None and log[0].point == "level-1/water_level"
            assert [e.state for e in await keeper.alarm_history(now - HOUR, later, 1)] == [
                "escalated"]
            [escalated] = await keeper.active_alarms()
            assert (escalated.state, escalated.severity, escalated.value, escalated.limit,
                    escalated.since_ms, escalated.updated_ms) == (
                "escalated", "alarm", 125.0, 124.8, now - 3000, later)
            assert escalated.acknowledged and "125" in escalated.message
            assert await keeper.alarm_history(now - 2 * HOUR, now - HOUR, 10) == []
            await keeper.close()

    asyncio.run(scenario())


def test_an_acknowledgement_the_store_refuses_fails_and_may_be_given_again(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            await daemon.poll("level-1", level(now_ms(), 123.7))
            [alarm] = await keeper.active_alarms()
            writer = daemon.store._store._conn  # the writer's own connection
            await daemon.store.run(writer.execute, "PRAGMA query_only = 1")
            refused = await keeper.acknowledge(alarm.alarm_id, "张三")
            assert refused.status == "failed" and "could not be stored" in refused.detail
            assert not (await keeper.active_alarms())[0].acknowledged
            await daemon.store.run(writer.execute, "PRAGMA query_only = 0")
            assert (await keeper.acknowledge(alarm.alarm_id, "张三")).status == "acknowledged"
            await keeper.close()

    asyncio.run(scenario())


def test_store_reads_run_on_the_reader_while_the_writer_is_busy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            now = now_ms()
            for k in range(5):
                await daemon.poll("level-1", level(now - (5 - k) * 1000, 123.0 + k / 10))
            release = threading.Event()
            busy = asyncio.ensure_future(daemon.store.run(release.wait, 10))
            try:
                # The writer's thread is held: the page's reads do not wait for it.
                history = await asyncio.wait_for(
                    keeper.history("level-1/water_level", now - HOUR, now, 3), 2)
                log = await asyncio.wait_for(keeper.alarm_history(now - HOUR, now, 10), 2)
                notified = await asyncio.wait_for(keeper.notifications(0, now, 10), 2)
            finally:
                release.set()
                await busy
            assert [r.value for r in history] == [123.0, 123.1, 123.2]
            assert log == [] and notified == []
            await keeper.close()

    asyncio.run(scenario())


def test_channels_backlog_acknowledgements_and_connection(tmp_path: Path) -> None:
    health = {"mqtt": {"connected": True, "inflight": 0},
              "sl651": {"kind": "sl651", "channels": {"sl651-county": {"connected": False}}}}

    async def scenario() -> None:
        settings = site(tmp_path / "edge.db")
        daemon = Daemon(settings, health)
        await daemon.start({"mqtt": ("telemetry", "alarm", "event"),
                            "sl651-county": ("telemetry",), "sms": ("alarm",)})
        try:
            keeper = DaemonKeeper(daemon.ports)
            now = now_ms()
            await daemon.poll("level-1", level(now - 2000, 123.0))
            await daemon.poll("level-1", level(now - 1000, 123.1))
            mqtt = daemon.outbox.channel("mqtt")
            batch = await mqtt.next_batch(1)
            mqtt.acknowledge([batch[0].seq])
            await daemon.outbox.flush_acks()
            found = {c.channel: c for c in await keeper.channels()}
            assert found["mqtt"].kind == "mqtt" and found["mqtt"].connected
            assert found["mqtt"].backlog == 1 and found["mqtt"].last_ack_ms is not None
            assert found["mqtt"].oldest_ms is not None
            county = found["sl651-county"]
            assert (county.kind, county.connected, county.backlog, county.last_ack_ms) == (
                "sl651-county", False, 2, None)
            assert county.detail == ""
            sms = found["sms"]  # nothing reports its state: not shown as connected
            assert (sms.connected, sms.backlog, sms.detail) == (
                False, 0, "no connection state reported")
            await keeper.close()
        finally:
            await daemon.stop()

    asyncio.run(scenario())


def _notification_table(path: Path, columns: str, rows: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE notifications ({columns})")
        marks = ",".join("?" * len(rows[0])) if rows else ""
        conn.executemany(f"INSERT INTO notifications VALUES ({marks})", rows)


def test_notifications_come_from_the_notification_log_once_there_is_one(tmp_path: Path
                                                                         ) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            now = now_ms()
            assert await keeper.notifications(now - HOUR, now, 10) == []  # no log yet
            _notification_table(
                tmp_path / "edge.db",
                "id INTEGER PRIMARY KEY, ts_ms INTEGER, channel TEXT, recipient TEXT, "
                "alarm_id TEXT, status TEXT, detail TEXT",
                [(1, now - 3 * HOUR, "sms", "13812345678", "a-1", "sent", ""),
                 (2, now - 600_000, "sms", "13812345678", "a-1", "delivered", ""),
                 (3, now - 60_000, "siren", "siren-1", None, "timed_out", "no answer")])
            found = await keeper.notifications(now - HOUR, now, 10)
            assert [(n.channel, n.status, n.alarm_id, n.detail) for n in found] == [
                ("siren", "failed", None, "timed_out no answer"),
                ("sms", "delivered", "a-1", "")]
            assert len(await keeper.notifications(now - HOUR, now, 1)) == 1
            await keeper.close()

    asyncio.run(scenario())


def test_a_notification_log_it_cannot_read_leaves_the_alarms_page_working(tmp_path: Path
                                                                          ) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            _notification_table(tmp_path / "edge.db", "ts_ms INTEGER, phone TEXT",
                                [(now_ms(), "13812345678")])
            keeper = DaemonKeeper(daemon.ports)
            with structlog.testing.capture_logs() as logs:
                for _ in range(3):
                    assert await keeper.notifications(0, now_ms(), 10) == []
            await keeper.close()
        problems = [e for e in logs if e["event"] == "web_notifications_unreadable"]
        assert len(problems) == 1  # once, not per page
        assert "channel, recipient, alarm_id, status, detail" in problems[0]["error"]

    asyncio.run(scenario())


def test_a_reload_changes_the_points_without_a_restart_of_the_page(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db")) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            before = [p.point for p in await keeper.points()]
            daemon.settings = site(tmp_path / "edge.db", extra_points=[
                {"id": "battery", "name": "电池电压", "quantity": "battery_voltage",
                 "unit": "V", "register": {"table": "input", "address": 9}}])
            after = {p.point: p for p in await keeper.points()}
            await keeper.close()
        assert "level-1/battery" not in before
        assert (after["level-1/battery"].name, after["level-1/battery"].section) == (
            "电池电压", "other")

    asyncio.run(scenario())


def test_buses_and_devices_as_the_bus_tasks_see_them(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a Modbus TCP endpoint that refuses connections
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    async def scenario() -> None:
        async with running(site(tmp_path / "edge.db", interval_s=0.2, tcp_port=port)
                           ) as daemon:
            keeper = DaemonKeeper(daemon.ports)
            [before] = await keeper.buses()  # started, not polled yet
            assert (before.bus, before.kind, before.connected) == ("lan", "modbus_tcp", False)
            assert [(d.device, d.polls, d.last_good_ms) for d in before.devices] == [
                ("level-1", 0, None), ("piezo-1", 0, None)]
            daemon.buses.start_all()
            for _ in range(100):
                [bus] = await keeper.buses()
                if all(d.consecutive_failures >= 1 for d in bus.devices):
                    break
                await asyncio.sleep(0.05)
            assert not bus.connected
            for device in bus.devices:
                assert device.failures >= 1 and device.last_good_ms is None
                assert device.last_failure, device
            await keeper.close()

    asyncio.run(scenario())
