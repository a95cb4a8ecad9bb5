"""One Modbus TCP connection per endpoint (issue 19, item 2): a TCP-to-RS-485 gateway
serves many slaves (unit ids) on one connection, and a silent slave must not take the
others offline. Against a real pymodbus TCP server over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from drivers.bustask import BusTask
from drivers.devices import DeviceConfig
from drivers.modbus import ModbusTcpBus
from drivers.registry import make_poller
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from vocab.model import PollResult


def bus(bus_id: str, port: int, **extra: Any) -> ModbusTcpBus:
    return ModbusTcpBus.model_validate({"id": bus_id, "type": "modbus_tcp",
                                        "host": "127.0.0.1", "port": port,
                                        "timeout_s": 0.2, **extra})


def device(bus_id: str, unit: int, **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate({
        "id": f"piezo-{unit}", "bus": bus_id, "unit": unit, "poll_interval_s": 0.05,
        "points": [{"id": "level", "register": {"table": "holding", "address": 0,
                                                "type": "uint16"}}], **extra})


class Collect:
    def __init__(self) -> None:
        self.results: list[PollResult] = []

    async def __call__(self, result: PollResult) -> None:
        self.results.append(result)


async def run_for(pollers: list[BusTask], seconds: float) -> None:
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    await asyncio.sleep(seconds)
    for poller in pollers:
        poller.stop()
    await asyncio.gather(*tasks)


def test_buses_on_one_endpoint_share_one_connection() -> None:
    fields = [FieldDevice(unit=u) for u in (1, 2, 3)]
    for field in fields:
        field.holding[0] = 100 + field.unit
    sink = Collect()

    async def scenario() -> int:
        async with TcpFieldBus(fields) as server:
            # Two buses on the same gateway (a technician split the line's slaves in two
            # groups with their own settings): still one connection to the gateway.
            first = make_poller(bus("line-a", server.port),
                                [device("line-a", 1), device("line-a", 2)], sink)
            second = make_poller(bus("line-b", server.port, retries=1),
                                 [device("line-b", 3)], sink)
            tasks = [asyncio.create_task(p.run()) for p in (first, second)]
            await asyncio.sleep(0.5)
            assert server.server is not None
            connections = len(server.server.active_connections)
            for poller in (first, second):
                poller.stop()
            await asyncio.gather(*tasks)
            return connections

    connections = asyncio.run(scenario())
    assert connections == 1
    polled = {r.device for r in sink.results}
    assert polled == {"piezo-1", "piezo-2", "piezo-3"}
    assert all(r.ok for r in sink.results)
    assert {r.device: r.readings[0].value for r in sink.results} == {
        "piezo-1": 101.0, "piezo-2": 102.0, "piezo-3": 103.0}


def test_a_silent_unit_does_not_take_the_others_offline() -> None:
    # Unit 9 never answers, as an unpowered slave behind a gateway; with 4 retries each
    # of its polls is 5 timeouts in a row on the shared connection.
    live = FieldDevice(unit=1)
    live.holding[0] = 42
    dead = FieldDevice(unit=9, silent=True)
    sink = Collect()

    async def scenario() -> BusTask:
        async with TcpFieldBus([live, dead]) as server:
            poller = make_poller(bus("gw", server.port, retries=4),
                                 [device("gw", 9, offline_after=1), device("gw", 1)], sink)
            await run_for([poller], 3.0)
            return poller

    with capture_logs() as events:
        poller = asyncio.run(scenario())
    health = poller.health
    assert not health.devices["piezo-9"].online
    assert health.devices["piezo-1"].online
    live_polls = [r for r in sink.results if r.device == "piezo-1"]
    assert len(live_polls) >= 2 and all(r.ok for r in live_polls)
    assert health.reconnects == 0
    assert not [e for e in events if e["event"] == "bus_disconnected"], events


def test_an_endpoint_that_answers_nobody_is_reconnected() -> None:
    # A gateway that accepts the connection and then answers nothing (hung, or the
    # connection half-open): every unit times out, so the connection is dropped and
    # opened again rather than kept forever.
    connections = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.read(256):
            pass
        writer.close()

    async def scenario() -> BusTask:
        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        poller = make_poller(bus("gw", port), [device("gw", 1), device("gw", 2)], Collect())
        await run_for([poller], 2.5)
        server.close()
        return poller

    with capture_logs() as events:
        asyncio.run(scenario())
    dropped = [e for e in events if e["event"] == "bus_disconnected"]
    assert dropped and dropped[0]["reason"] == "io_error: endpoint not answering"
    assert connections >= 2


def test_a_less_patient_bus_on_a_shared_endpoint_stops_at_its_own_timeout() -> None:
    # The connection waits as long as the most patient bus on it (1.5 s); the bus of
    # 0.2 s stops waiting for its silent slave itself, after its timeout and the slack.
    live = FieldDevice(unit=1)
    dead = FieldDevice(unit=9, silent=True)
    sink = Collect()

    async def scenario() -> None:
        async with TcpFieldBus([live, dead]) as server:
            impatient = make_poller(bus("line-a", server.port),
                                    [device("line-a", 9, offline_after=1)], sink)
            patient = make_poller(bus("line-b", server.port, timeout_s=1.5),
                                  [device("line-b", 1)], sink)
            await run_for([impatient, patient], 1.3)

    asyncio.run(scenario())
    failed = [r for r in sink.results if r.device == "piezo-9" and not r.ok]
    # At 1.5 s a poll, none would have ended in 1.3 s; at 0.45 s, two or three do.
    assert len(failed) >= 2, failed
    assert all(r.error == "timeout" for r in failed), failed


def test_a_tcp_connection_reads_a_few_kib_at_a_time() -> None:
    # asyncio reads 256 KiB a recv by default, which costs a heap grow and trim each
    # read (drivers/modbus_link.py, _small_reads); an answer is at most 260 bytes.
    from drivers.modbus_link import TCP_READ_BYTES

    field = FieldDevice(unit=1)
    sink = Collect()

    async def scenario() -> int:
        async with TcpFieldBus([field]) as server:
            poller = make_poller(bus("gw", server.port), [device("gw", 1)], sink)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(0.3)
            transport = poller.driver.link.client.ctx.transport
            size = transport.max_size
            poller.stop()
            await task
            return size

    assert asyncio.run(scenario()) == TCP_READ_BYTES
    assert sink.results and all(r.ok for r in sink.results)


def test_a_more_patient_bus_on_a_shared_endpoint_waits_its_own_timeout() -> None:
    # A vibrating-wire reader that takes 0.6 s to measure, on a bus of 1.5 s that shares
    # its gateway with a bus of 0.2 s opened first: the connection must wait for it.
    quick = FieldDevice(unit=1)
    slow = FieldDevice(unit=7, delay_s=0.6)
    slow.holding[0] = 77
    sink = Collect()

    async def scenario() -> None:
        async with TcpFieldBus([quick, slow]) as server:
            impatient = make_poller(bus("line-a", server.port), [device("line-a", 1)], sink)
            patient = make_poller(bus("line-b", server.port, timeout_s=1.5),
                                  [device("line-b", 7)], sink)
            await run_for([impatient, patient], 2.0)

    asyncio.run(scenario())
    slow_polls = [r for r in sink.results if r.device == "piezo-7"]
    assert slow_polls and all(r.ok for r in slow_polls), slow_polls
    assert slow_polls[0].readings[0].value == 77.0
