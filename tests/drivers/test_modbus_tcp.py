"""The Modbus poller against a real pymodbus TCP server over a real socket."""

from __future__ import annotations

import asyncio
import statistics
import struct
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from drivers.devices import DeviceConfig
from drivers.modbus import ModbusTcpBus
from drivers.registry import make_poller
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from vocab.model import PollResult


def words(fmt: str, value: float, word_order: str = "big", byte_order: str = "big") -> list[int]:
    raw = struct.pack(">" + fmt, value)
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        pairs = [p[::-1] for p in pairs]
    if word_order == "little":
        pairs = pairs[::-1]
    return [int.from_bytes(p, "big") for p in pairs]


def bus(port: int, timeout: float = 0.3) -> ModbusTcpBus:
    return ModbusTcpBus(id="lan", type="modbus_tcp", host="127.0.0.1", port=port,
                        timeout_s=timeout)


def device(unit: int, points: list[dict[str, Any]], **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate({"id": f"dev-{unit}", "bus": "lan", "unit": unit,
                                        "poll_interval_s": extra.pop("interval", 0.2),
                                        "points": points, **extra})


TYPES = [("int16", "h", -1234), ("uint16", "H", 60000), ("int32", "i", -7654321),
         ("uint32", "I", 4_000_000_000), ("int64", "q", -(2**40) - 5),
         ("float32", "f", 30.28), ("float64", "d", -1234.5678)]


def test_every_type_and_order_over_tcp() -> None:
    field = FieldDevice(unit=1)
    points = []
    address = 0
    expected: dict[str, float] = {}
    for name, fmt, value in TYPES:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                w = words(fmt, value, word_order, byte_order)
                field.holding[address : address + len(w)] = w
                pid = f"{name}-{word_order[0]}{byte_order[0]}"
                points.append({"id": pid, "register": {
                    "table": "holding", "address": address, "type": name,
                    "word_order": word_order, "byte_order": byte_order}})
                expected[pid] = struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0]
                address += len(w)
    field.input[5] = 0b0000_0000_0010_0000
    field.coils[0] = 0b100  # coil 2 on
    points += [
        {"id": "status-bit5", "register": {"table": "input", "address": 5, "bit": 5}},
        {"id": "coil-2", "register": {"table": "coil", "address": 2}},
        {"id": "coil-3", "register": {"table": "coil", "address": 3}},
        {"id": "scaled", "register": {"table": "input", "address": 5, "type": "uint16"},
         "scale": 0.5, "offset": -1},
    ]
    expected.update({"status-bit5": 1.0, "coil-2": 1.0, "coil-3": 0.0, "scaled": 15.0})

    async def scenario() -> PollResult:
        async with TcpFieldBus([field]) as server:
            poller = make_poller(bus(server.port), [device(1, points)], _noop)
            result = await poller.poll_device(poller.devices["dev-1"])
            poller.driver.close()
            return result

    result = asyncio.run(scenario())
    assert result.ok, result.error
    got = {r.point: r.value for r in result.readings}
    for pid, value in expected.items():
        if pid.startswith("float32"):
            assert got[pid] == pytest.approx(value, rel=1e-6), pid
        else:
            assert got[pid] == value, pid
    assert all(r.quality == "good" for r in result.readings)


async def _noop(result: PollResult) -> None:
    return None


def spread_points(count: int, span: int) -> list[dict[str, Any]]:
    step = span // count
    return [{"id": f"p{i}", "register": {"table": "holding", "address": i * step,
                                         "type": "uint16"}} for i in range(count)]


@pytest.mark.parametrize(("coalesce", "expected_requests"), [(True, 1), (False, 20)])
def test_coalescing_counts_requests_at_the_server(coalesce: bool,
                                                  expected_requests: int) -> None:
    field = FieldDevice(unit=1)
    for i in range(60):
        field.holding[i] = 1000 + i

    async def scenario() -> tuple[PollResult, int]:
        async with TcpFieldBus([field]) as server:
            dev = device(1, spread_points(20, 60), coalesce=coalesce)
            poller = make_poller(bus(server.port), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            return result, len(server.pdus)

    result, served = asyncio.run(scenario())
    assert served == expected_requests
    assert result.requests == expected_requests
    assert [r.value for r in result.readings] == [1000.0 + 3 * i for i in range(20)]


def test_reads_never_exceed_125_registers() -> None:
    field = FieldDevice(unit=1, holding=[7] * 400)

    async def scenario() -> int:
        async with TcpFieldBus([field]) as server:
            dev = device(1, spread_points(100, 300), max_gap=10)
            poller = make_poller(bus(server.port), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            assert all(r.value == 7.0 for r in result.readings)
            return result.requests

    assert asyncio.run(scenario()) == 3  # 300 registers / 125 per request, rounded up


def test_exception_response_marks_only_its_points_bad() -> None:
    field = FieldDevice(unit=1, exception=ExcCodes.ILLEGAL_ADDRESS)

    async def scenario() -> PollResult:
        async with TcpFieldBus([field]) as server:
            dev = device(1, spread_points(2, 4))
            poller = make_poller(bus(server.port), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            return result

    result = asyncio.run(scenario())
    assert not result.ok
    assert {r.quality for r in result.readings} == {"bad"}
    assert all(r.reason == "exception_response: code 2" for r in result.readings)


def test_dead_device_does_not_stall_the_live_ones_and_recovers() -> None:
    live = [FieldDevice(unit=u) for u in (1, 2, 3)]
    dead = FieldDevice(unit=4, silent=True)
    interval, timeout = 0.4, 0.3
    polls: dict[str, list[float]] = {f"dev-{u}": [] for u in (1, 2, 3, 4)}
    qualities: dict[str, list[str]] = {f"dev-{u}": [] for u in (1, 2, 3, 4)}

    async def sink(result: PollResult) -> None:
        polls[result.device].append(asyncio.get_running_loop().time())
        qualities[result.device].append(result.readings[0].quality)

    async def scenario() -> tuple[bool, bool]:
        async with TcpFieldBus([*live, dead]) as server:
            devices = [device(u, spread_points(2, 4), interval=interval, offline_after=2)
                       for u in (1, 2, 3, 4)]
            poller = make_poller(bus(server.port, timeout), devices, sink)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(4.0)
            went_offline = not poller.health.devices["dev-4"].online
            dead.silent = False
            await asyncio.sleep(4.0)
            poller.stop()
            await task
            return went_offline, poller.health.devices["dev-4"].online

    went_offline, recovered = asyncio.run(scenario())
    assert went_offline
    assert recovered
    for dev in ("dev-1", "dev-2", "dev-3"):
        gaps = [b - a for a, b in zip(polls[dev], polls[dev][1:], strict=False)]
        # At most one timeout of delay per cycle from the dead device.
        assert statistics.median(gaps) <= interval + timeout + 0.1, (dev, gaps)
        assert len(polls[dev]) >= 8
    assert "bad" in qualities["dev-4"] and qualities["dev-4"][-1] == "good"


def test_unreachable_bus_gives_bad_readings_not_a_crash() -> None:
    from tests.support import free_port

    async def scenario() -> PollResult:
        dev = device(1, spread_points(2, 4))
        poller = make_poller(bus(free_port()), [dev], _noop)
        return await poller.poll_device(dev)

    result = asyncio.run(scenario())
    assert not result.ok
    assert result.requests == 0
    assert all(r.quality == "bad" and r.reason.startswith("connect_failed")
               for r in result.readings)


def test_vibrating_wire_piezometer_and_rain_counter_through_the_bus() -> None:
    # A VW reader gives the wire frequency in 0.1 Hz (0x3119 = 1256.9 Hz, reference §1.1)
    # and the thermistor in 0.1 °C; the rain module a 16-bit tip counter.
    field = FieldDevice(unit=1)
    field.input[100] = 0x3119
    field.input[101] = 215
    field.holding[0] = 65535
    f0 = 1400.0
    k = -0.1  # kPa per digit (F = f²/1000), negative: pressure rises as frequency falls
    points = [
        # Ranges are in engineering units (m of head, mm of rain), not Hz or tips.
        {"id": "piezo", "quantity": "piezometric_level", "unit": "m", "range": [90.0, 130.0],
         "register": {"table": "input", "address": 100, "type": "uint16"}, "scale": 0.1,
         "calibration": {"type": "vibrating_wire", "output": "head_m",
                         "install_elevation_m": 95.0,
                         "certificate": {"form": "chinese_vendor", "k_kpa_per_f": k,
                                         "zero_modulus_f": f0 ** 2 / 1000}}},
        {"id": "temp", "quantity": "temperature", "unit": "degC",
         "register": {"table": "input", "address": 101, "type": "int16"}, "scale": 0.1},
        {"id": "rain", "quantity": "rainfall", "unit": "mm",
         "register": {"table": "holding", "address": 0, "type": "uint16"},
         "tipping_bucket": {"mm_per_tip": 0.5}, "range": [0.0, 10.0]},
    ]

    async def scenario() -> list[PollResult]:
        async with TcpFieldBus([field]) as server:
            dev = device(1, points)
            poller = make_poller(bus(server.port), [dev], _noop)
            first = await poller.poll_device(dev)
            field.holding[0] = 0  # wrapped: 65535 -> 0 is one tip
            await asyncio.sleep(0.3)
            second = await poller.poll_device(dev)
            poller.driver.close()
            return [first, second]

    first, second = asyncio.run(scenario())
    by_point = {r.point: r for r in first.readings}
    pressure = k * (1256.9 ** 2 / 1000 - f0 ** 2 / 1000)
    assert by_point["piezo"].value == pytest.approx(95.0 + pressure / 9.81, abs=1e-6)
    assert by_point["piezo"].raw == 0x3119
    assert by_point["temp"].value == 21.5
    assert by_point["rain"].quality == "suspect" and by_point["rain"].reason == \
        "counter_baseline"
    rain = {r.point: r for r in second.readings}["rain"]
    assert rain.quality == "good" and rain.value == 0.5 and rain.raw == 0
