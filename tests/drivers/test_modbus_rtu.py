"""The Modbus poller on RTU: a real pymodbus serial server behind a real pseudo-terminal.

The gateway opens a symlink (as it would a /dev/serial/by-id name); the slave side is
pymodbus's ModbusSerialServer with the RTU framer. The line in between (SerialWire) can
pace bytes at the baud rate and records each frame, which is how the tests see the
one-request-at-a-time rule and the 3.5-character silence from the outside.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from drivers.devices import DeviceConfig
from drivers.modbus import ModbusRtuBus, check_rtu_reply, crc16_modbus, rtu_silence_s
from drivers.registry import make_poller
from simulator.serialwire import SerialWire
from tests.drivers.modbus_server import FieldDevice, RtuFieldBus
from tests.drivers.test_modbus_tcp import TYPES, spread_points, words
from vocab.model import PollResult


def rtu_bus(port: Path, **extra: Any) -> ModbusRtuBus:
    settings: dict[str, Any] = {
        "id": "rs485",
        "type": "modbus_rtu",
        "port": str(port),
        "baudrate": 9600,
        "timeout_s": 0.3,
    }
    settings.update(extra)
    return ModbusRtuBus.model_validate(settings)


def device(unit: int, points: list[dict[str, Any]], **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "id": f"dev-{unit}",
            "bus": "rs485",
            "unit": unit,
            "poll_interval_s": extra.pop("interval", 0.2),
            "points": points,
            **extra,
        }
    )


async def _noop(result: PollResult) -> None:
    return None


def test_frame_arithmetic_matches_the_reference() -> None:
    # Reference §1.1: 01 03 00 00 00 01 + 84 0A.
    assert crc16_modbus(bytes.fromhex("010300000001")) == bytes.fromhex("840A")
    assert rtu_silence_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_silence_s(115200) == 0.00175
    good = bytes.fromhex("01030200") + b"\x07"
    good += crc16_modbus(good)
    assert check_rtu_reply(good, 1, 3) is None
    assert check_rtu_reply(good[:-1] + b"\x00", 1, 3) == "crc_error"
    assert check_rtu_reply(good[:4], 1, 3) is None  # incomplete: wait for the rest
    assert check_rtu_reply(good, 2, 3) is None  # not ours: the client keeps hunting


def test_every_type_and_order_over_rtu(tmp_path: Path) -> None:
    field = FieldDevice(unit=17)
    points = []
    address = 0
    expected: dict[str, float] = {}
    for name, fmt, value in TYPES:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                w = words(fmt, value, word_order, byte_order)
                field.holding[address : address + len(w)] = w
                pid = f"{name}-{word_order[0]}{byte_order[0]}"
                points.append(
                    {
                        "id": pid,
                        "register": {
                            "table": "holding",
                            "address": address,
                            "type": name,
                            "word_order": word_order,
                            "byte_order": byte_order,
                        },
                    }
                )
                expected[pid] = struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0]
                address += len(w)
    field.input[7] = 0b1000_0000_0000_0001
    field.discrete[0] = 0b10
    points += [
        {"id": "bit15", "register": {"table": "input", "address": 7, "bit": 15}},
        {"id": "bit1", "register": {"table": "input", "address": 7, "bit": 1}},
        {"id": "door", "register": {"table": "discrete", "address": 1}},
    ]
    expected.update({"bit15": 1.0, "bit1": 0.0, "door": 1.0})
    link = tmp_path / "serial" / "by-id" / "usb-FTDI_RS485-if00-port0"

    async def scenario() -> PollResult:
        async with RtuFieldBus([field], link):
            # A Linux pty refuses parity and 7-bit characters, so the line runs 8N2 here;
            # parity is checked where it is handed to the serial client below.
            bus = rtu_bus(link, baudrate=19200, stopbits=2)
            poller = make_poller(bus, [device(17, points)], _noop)
            result = await poller.poll_device(poller.devices["dev-17"])
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
    assert result.requests == 3  # holding (coalesced), input, discrete


def test_line_settings_reach_the_serial_client(tmp_path: Path) -> None:
    async def scenario() -> Any:
        bus = rtu_bus(
            tmp_path / "tty", baudrate=19200, parity="E", stopbits=2, bytesize=7, timeout_s=0.7
        )
        poller = make_poller(bus, [device(1, spread_points(2, 4))], _noop)
        return poller.driver.link.client.comm_params

    params = asyncio.run(scenario())
    assert (
        params.host,
        params.baudrate,
        params.parity,
        params.stopbits,
        params.bytesize,
        params.timeout_connect,
    ) == (str(tmp_path / "tty"), 19200, "E", 2, 7, 0.7)


@pytest.mark.parametrize(("coalesce", "expected_requests"), [(True, 1), (False, 20)])
def test_coalescing_counts_frames_on_the_line(
    tmp_path: Path, coalesce: bool, expected_requests: int
) -> None:
    field = FieldDevice(unit=3)
    for i in range(60):
        field.holding[i] = 2000 + i

    async def scenario() -> tuple[PollResult, int, int]:
        async with RtuFieldBus([field], tmp_path / "tty") as line:
            dev = device(3, spread_points(20, 60), coalesce=coalesce)
            poller = make_poller(rtu_bus(tmp_path / "tty"), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            await asyncio.sleep(0.05)
            return result, len(line.pdus), len(line.wire.frames_to("to_device"))

    result, served, frames = asyncio.run(scenario())
    assert served == frames == result.requests == expected_requests
    assert [r.value for r in result.readings] == [2000.0 + 3 * i for i in range(20)]


def test_one_request_at_a_time_in_fair_order_with_the_silence(tmp_path: Path) -> None:
    # A saturated bus (intervals shorter than a cycle) at a real 9600 baud pace: the
    # line must never carry two frames at once, devices take turns, and every request
    # starts at least 3.5 characters after the previous reply ended.
    fields = [FieldDevice(unit=u) for u in (1, 2, 3)]
    silence = rtu_silence_s(9600)

    async def scenario() -> SerialWire:
        async with RtuFieldBus(fields, tmp_path / "tty", baudrate=9600) as line:
            devices = [
                device(u, spread_points(4, 80), interval=0.01, max_gap=10) for u in (1, 2, 3)
            ]
            poller = make_poller(rtu_bus(tmp_path / "tty"), devices, _noop)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(1.5)
            poller.stop()
            await task
            return line.wire

    wire = asyncio.run(scenario())
    frames = list(wire.frames)
    assert wire.collisions == 0
    directions = [f.direction for f in frames]
    assert directions[0] == "to_device"
    assert all(a != b for a, b in itertools.pairwise(directions)), directions
    requests = [f for f in frames if f.direction == "to_device"]
    assert len(requests) >= 20
    units = [f.data[0] for f in requests]
    # Each device has 4 blocks (80 registers apart / max_gap 10) polled back to back,
    # then the next device: 1,1,1,1,2,2,2,2,3,3,3,3,1,...
    per_poll = [units[i] for i in range(0, len(units) - 3, 4)]
    assert per_poll[:6] == [1, 2, 3, 1, 2, 3], units
    gaps = [b.start - a.end for a, b in itertools.pairwise(frames) if a.direction == "to_gateway"]
    assert min(gaps) >= silence - 0.0002, (min(gaps), silence)


def test_inter_request_delay_is_kept(tmp_path: Path) -> None:
    fields = [FieldDevice(unit=u) for u in (1, 2)]

    async def scenario() -> SerialWire:
        async with RtuFieldBus(fields, tmp_path / "tty") as line:
            devices = [device(u, spread_points(2, 40), interval=0.01) for u in (1, 2)]
            poller = make_poller(
                rtu_bus(tmp_path / "tty", inter_request_delay_s=0.05), devices, _noop
            )
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(0.8)
            poller.stop()
            await task
            return line.wire

    frames = asyncio.run(scenario()).frames
    gaps = [b.start - a.end for a, b in itertools.pairwise(frames) if a.direction == "to_gateway"]
    assert len(gaps) >= 5
    assert min(gaps) >= 0.05


def test_dead_slave_among_three_live_ones(tmp_path: Path) -> None:
    live = [FieldDevice(unit=u) for u in (1, 2, 3)]
    dead = FieldDevice(unit=4, silent=True)
    interval, timeout = 0.3, 0.15
    polls: dict[str, list[float]] = {f"dev-{u}": [] for u in (1, 2, 3, 4)}
    reasons: dict[str, list[str | None]] = {f"dev-{u}": [] for u in (1, 2, 3, 4)}

    async def sink(result: PollResult) -> None:
        polls[result.device].append(time.monotonic())
        reasons[result.device].append(result.readings[0].reason)

    async def scenario() -> tuple[bool, bool]:
        async with RtuFieldBus([*live, dead], tmp_path / "tty", baudrate=9600):
            devices = [
                device(u, spread_points(2, 40), interval=interval, offline_after=2)
                for u in (1, 2, 3, 4)
            ]
            poller = make_poller(rtu_bus(tmp_path / "tty", timeout_s=timeout), devices, sink)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(1.5)
            went_offline = not poller.health.devices["dev-4"].online
            dead.silent = False
            await asyncio.sleep(1.8)
            poller.stop()
            await task
            return went_offline, poller.health.devices["dev-4"].online

    went_offline, recovered = asyncio.run(scenario())
    assert went_offline
    assert recovered
    for dev in ("dev-1", "dev-2", "dev-3"):
        gaps = [b - a for a, b in zip(polls[dev], polls[dev][1:], strict=False)]
        # The dead slave costs the others at most one timeout per cycle.
        assert statistics.median(gaps) <= interval + 0.05, (dev, gaps)
        assert max(gaps) <= interval + timeout + 0.1, (dev, gaps)
        assert len(polls[dev]) >= 9
        assert set(reasons[dev]) == {None}
    assert "timeout" in reasons["dev-4"] and reasons["dev-4"][-1] is None


def test_crc_error_is_seen_at_once_retried_and_isolated(tmp_path: Path) -> None:
    noisy = FieldDevice(unit=1, corrupt="crc")
    fine = FieldDevice(unit=2)
    fine.holding[0] = 42

    async def scenario() -> tuple[PollResult, PollResult, float, int]:
        async with RtuFieldBus([noisy, fine], tmp_path / "tty") as line:
            bus = rtu_bus(tmp_path / "tty", timeout_s=1.0, retries=2)
            devices = [device(1, spread_points(2, 4)), device(2, spread_points(2, 4))]
            poller = make_poller(bus, devices, _noop)
            started = time.monotonic()
            bad = await poller.poll_device(devices[0])
            elapsed = time.monotonic() - started
            good = await poller.poll_device(devices[1])
            poller.driver.close()
            return bad, good, elapsed, line.pdus.count(1)

    bad, good, elapsed, served = asyncio.run(scenario())
    assert {r.reason for r in bad.readings} == {"crc_error"}
    assert bad.requests == served == 3  # the first try and two retries
    assert elapsed < 0.5  # never waited for the 1 s timeout
    assert good.ok and good.readings[0].value == 42


def test_garbage_instead_of_a_reply(tmp_path: Path) -> None:
    babbler = FieldDevice(unit=1, corrupt="garbage")

    async def scenario() -> PollResult:
        async with RtuFieldBus([babbler], tmp_path / "tty"):
            dev = device(
                1,
                [*spread_points(2, 4), {"id": "in", "register": {"table": "input", "address": 0}}],
            )
            poller = make_poller(rtu_bus(tmp_path / "tty", timeout_s=0.2), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            return result

    result = asyncio.run(scenario())
    assert not result.ok
    assert result.readings[0].reason.startswith("garbled_response: ")
    # A device that babbles is skipped for the rest of the cycle, like a silent one.
    assert result.requests == 1
    assert result.readings[-1].reason == result.readings[0].reason


def test_exception_response_marks_only_its_block(tmp_path: Path) -> None:
    field = FieldDevice(unit=5, exception=ExcCodes.ILLEGAL_ADDRESS, exception_on=frozenset({3}))
    field.input[0] = 99

    async def scenario() -> PollResult:
        async with RtuFieldBus([field], tmp_path / "tty"):
            dev = device(
                5,
                [
                    {"id": "h", "register": {"table": "holding", "address": 0}},
                    {"id": "i", "register": {"table": "input", "address": 0}},
                ],
            )
            poller = make_poller(rtu_bus(tmp_path / "tty"), [dev], _noop)
            result = await poller.poll_device(dev)
            poller.driver.close()
            return result

    result = asyncio.run(scenario())
    by_point = {r.point: r for r in result.readings}
    assert by_point["h"].quality == "bad"
    assert by_point["h"].reason == "exception_response: code 2"
    assert by_point["i"].quality == "good" and by_point["i"].value == 99
    assert result.requests == 2  # the device answered: its other block was still read


def test_unplugged_adapter_comes_back_without_a_restart(tmp_path: Path) -> None:
    field = FieldDevice(unit=1)
    field.holding[0] = 7
    results: list[tuple[float, PollResult]] = []
    link = tmp_path / "by-id" / "usb-adapter"

    async def sink(result: PollResult) -> None:
        results.append((time.monotonic(), result))

    async def scenario() -> tuple[float, float, float | None, int]:
        async with RtuFieldBus([field], link) as line:
            # Offline at the first failure: by the end of the outage the device's own
            # backoff (0.3 s doubling) would put its next poll seconds away.
            dev = device(1, spread_points(2, 4), interval=0.3, offline_after=1)
            poller = make_poller(rtu_bus(link, timeout_s=0.2), [dev], sink)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(0.5)
            line.wire.unplug()  # the pty closes under the open port, the link vanishes
            unplugged = time.monotonic()
            await asyncio.sleep(2.5)
            assert not poller.health.connected
            line.wire.plug()
            plugged = time.monotonic()
            # Until the port is open again and polled: the bus's backoff (0.5, 1, 2 s
            # from the first failure) tries next 1 to 2 s after the replug, depending on
            # when the first failure was seen; a loaded machine sees it later.
            reopened = None
            deadline = plugged + 6.0
            while time.monotonic() < deadline:
                # Seen open, or polled within the same 10 ms: open by then.
                if reopened is None and (poller.health.connected or any(
                        r.ok for t, r in results if t > plugged)):
                    reopened = time.monotonic()
                if any(r.ok for t, r in results if t > plugged):
                    break
                await asyncio.sleep(0.01)
            poller.stop()
            await task
            return unplugged, plugged, reopened, poller.health.reconnects

    unplugged, plugged, reopened, reconnects = asyncio.run(scenario())
    before = [r for t, r in results if t < unplugged]
    during = [r for t, r in results if unplugged + 0.3 < t < plugged]
    after = [(t, r) for t, r in results if t > plugged and r.ok]
    assert before and all(r.ok for r in before)
    assert during and not any(r.ok for r in during)
    reasons = {r.readings[0].reason.split(":")[0] for r in during}
    assert reasons <= {"io_error", "connect_failed"}, reasons
    assert after, "polling never resumed after the adapter came back"
    # The port is re-opened on the bus's own backoff (at most its 2 s step after the
    # replug), and the device is polled at once, whatever its own backoff says.
    assert reopened is not None and reopened - plugged < 2.5
    assert after[0][0] - reopened < 0.5
    assert after[-1][1].readings[0].value == 7
    assert reconnects == 1


def test_missing_port_at_start_is_retried(tmp_path: Path) -> None:
    field = FieldDevice(unit=1)
    link = tmp_path / "late"
    results: list[PollResult] = []

    async def sink(result: PollResult) -> None:
        results.append(result)

    async def scenario() -> None:
        dev = device(1, spread_points(2, 4), interval=0.2)
        poller = make_poller(rtu_bus(link), [dev], sink)
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.5)
        async with RtuFieldBus([field], link):
            await asyncio.sleep(1.5)
            poller.stop()
            await task

    asyncio.run(scenario())
    assert results[0].readings[0].reason == f"connect_failed: {link} not found"
    assert results[-1].ok
