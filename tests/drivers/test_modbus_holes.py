"""Devices with holes in their register map (issue 14, items 12 and 13).

An unmapped register answers exception 2 (illegal data address). It must cost only its
own point: the device stays online, and a merged read spanning it is split (and the split
remembered) so every readable point is still read. Against a pymodbus server whose map
has gaps and against libmodbus, the C library many field devices are built on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from structlog.testing import capture_logs

from drivers.bustask import BusTask
from drivers.devices import DeviceConfig
from drivers.modbus import ModbusTcpBus
from drivers.registry import make_poller
from tests.drivers.libmodbus_server import LibmodbusSlave, load_libmodbus
from tests.support import free_port
from vocab.model import PollResult


def bus(port: int) -> ModbusTcpBus:
    return ModbusTcpBus(id="lan", type="modbus_tcp", host="127.0.0.1", port=port,
                        timeout_s=0.5)


def device(addresses: list[int], **extra: Any) -> DeviceConfig:
    points = [{"id": f"r{a}", "register": {"table": "holding", "address": a,
                                           "type": "uint16"}} for a in addresses]
    return DeviceConfig.model_validate({"id": "piezo", "bus": "lan", "unit": 1,
                                        "poll_interval_s": 1, "points": points, **extra})


async def _noop(result: PollResult) -> None:
    return None


class SparseServer:
    """A pymodbus TCP slave (unit 1) mapping only the holding registers given."""

    def __init__(self, registers: dict[int, int]) -> None:
        self.port = free_port()
        self.requests: list[tuple[int, int]] = []
        blocks = [SimData(address, values=value, datatype=DataType.REGISTERS)
                  for address, value in sorted(registers.items())]
        bits = [SimData(0, count=1, values=0, datatype=DataType.BITS)]
        words = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        self.device = SimDevice(1, simdata=(bits, bits, blocks, words))
        self.server = ModbusTcpServer([self.device], address=("127.0.0.1", self.port),
                                      trace_pdu=self._trace)

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # Every request, answered or refused, as (address, count).
        if not sending:
            self.requests.append((pdu.address, pdu.count))
        return pdu

    async def __aenter__(self) -> SparseServer:
        await self.server.serve_forever(background=True)
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.shutdown()


def by_point(result: PollResult) -> dict[str, tuple[str, float | None, str | None]]:
    return {r.point: (r.quality, r.value, r.reason) for r in result.readings}


async def polls(poller: BusTask, dev: DeviceConfig, times: int) -> list[PollResult]:
    return [await poller.poll_device(dev) for _ in range(times)]


def test_unmapped_register_marks_only_its_point_and_device_stays_online() -> None:
    # Register 0 is mapped, register 40 is not; too far apart to be merged, so they are
    # two requests, and the second is always refused.
    dev = device([0, 40], offline_after=2)

    async def scenario() -> tuple[list[PollResult], BusTask]:
        async with SparseServer({0: 123, 1: 0}) as server:
            poller = make_poller(bus(server.port), [dev], _noop)
            results = await polls(poller, dev, 4)
            poller.driver.close()
            return results, poller

    with capture_logs() as events:
        results, poller = asyncio.run(scenario())
    health = poller.health.devices["piezo"]
    assert all(r.ok for r in results)
    assert health.online and health.consecutive_failures == 0
    assert by_point(results[-1]) == {
        "r0": ("good", 123.0, None),
        "r40": ("bad", None, "exception_response: code 2"),
    }
    assert not [e for e in events if e["event"] == "device_offline"]


def test_merged_read_over_holes_is_split_once_and_every_readable_point_read() -> None:
    mapped = {0: 10, 1: 11, 5: 15, 7: 17}
    dev = device([0, 1, 3, 5, 6, 7])  # 3 and 6 are holes; all within max_gap

    async def scenario() -> tuple[list[PollResult], list[tuple[int, int]], int]:
        async with SparseServer(mapped) as server:
            poller = make_poller(bus(server.port), [dev], _noop)
            first = await poller.poll_device(dev)
            asked_first = len(server.requests)
            server.requests.clear()
            later = await polls(poller, dev, 2)
            poller.driver.close()
            return [first, *later], server.requests, asked_first

    with capture_logs() as events:
        results, later_requests, asked_first = asyncio.run(scenario())
    expected = {f"r{a}": ("good", float(v), None) for a, v in mapped.items()}
    expected |= {p: ("bad", None, "exception_response: code 2") for p in ("r3", "r6")}
    for result in results:
        assert result.ok
        assert by_point(result) == expected
    splits = [e for e in events if e["event"] == "read_split"]
    assert len(splits) == 1, splits
    assert (splits[0]["address"], splits[0]["count"]) == (0, 8)
    # The split is remembered: later polls never ask for a refused span again, only for
    # the reads the split ended with (the readable neighbours 0 and 1 read together).
    reads = [(0, 2), (3, 1), (5, 1), (6, 1), (7, 1)]
    assert splits[0]["reads"] == [f"{a}+{c}" for a, c in reads]
    assert later_requests == reads * 2
    assert asked_first > len(reads)


LIBMODBUS = load_libmodbus()


@pytest.mark.skipif(LIBMODBUS is None, reason="libmodbus not installed "
                                               "(apt-get install libmodbus-dev)")
def test_libmodbus_slave_with_a_register_window() -> None:
    assert LIBMODBUS is not None
    # libmodbus maps holding registers 100..109 only: 98 and 110 lie outside, and the
    # one merged read 98..110 that coalescing plans is refused whole.
    values = [1000 + i for i in range(10)]
    dev = device([98, 100, 101, 109, 110], offline_after=1)

    async def scenario(port: int) -> tuple[list[PollResult], BusTask]:
        poller = make_poller(bus(port), [dev], _noop)
        results = await polls(poller, dev, 3)
        poller.driver.close()
        return results, poller

    with LibmodbusSlave(LIBMODBUS, 100, values) as slave, capture_logs() as events:
        results, poller = asyncio.run(scenario(slave.port))
    refused = ("bad", None, "exception_response: code 2")
    for result in results:
        assert result.ok
        assert by_point(result) == {"r98": refused, "r100": ("good", 1000.0, None),
                                    "r101": ("good", 1001.0, None),
                                    "r109": ("good", 1009.0, None), "r110": refused}
    assert poller.health.devices["piezo"].online
    assert [e["event"] for e in events].count("read_split") == 1
