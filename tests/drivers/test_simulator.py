"""``edge simulate`` for RTU and GNSS buses, and fault plans, seen through the real pollers."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from drivers.registry import make_poller
from edge.config import GatewaySettings, load_config
from simulator.faultplan import FaultPlan, FaultPlanError, build_plan, parse_fault_flag
from simulator.reservoir import ReservoirModel, serve
from tests.support import free_port, run_edge, start_edge, wait_for_port
from vocab.model import PollResult


def site(tmp_path: Path, interval: float = 0.2) -> Path:
    config: dict[str, Any] = {
        "site": {"id": "sim", "levels": {"flood_limit": 123.5}},
        "gateway": {"id": "gw-sim"},
        "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(tmp_path / "edge.db")},
        "buses": [
            {
                "id": "rs485-1",
                "type": "modbus_rtu",
                "port": str(tmp_path / "by-id" / "rs485"),
                "baudrate": 38400,
                "timeout_s": 0.15,
            },
            {
                "id": "gnss",
                "type": "nmea_gnss",
                "port": str(tmp_path / "by-id" / "gnss"),
                "baudrate": 115200,
            },
            {"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1},
        ],
        "devices": [
            {
                "id": "level-1",
                "bus": "rs485-1",
                "unit": 1,
                "poll_interval_s": interval,
                "points": [
                    {
                        "id": "water_level",
                        "quantity": "water_level",
                        "unit": "m",
                        "register": {"table": "holding", "address": 0, "type": "float32"},
                    }
                ],
            },
            {
                "id": "piezo-1",
                "bus": "rs485-1",
                "unit": 2,
                "poll_interval_s": interval,
                "points": [
                    {
                        "id": "pressure",
                        "quantity": "seepage_pressure",
                        "unit": "kPa",
                        "register": {"table": "input", "address": 10, "type": "int16"},
                        "scale": 0.1,
                    }
                ],
            },
            {
                "id": "weir-1",
                "bus": "rs485-1",
                "unit": 3,
                "poll_interval_s": interval,
                "points": [
                    {
                        "id": "head",
                        "quantity": "weir_head",
                        "unit": "m",
                        "register": {"table": "holding", "address": 4, "type": "uint16"},
                        "scale": 0.001,
                    }
                ],
            },
            {
                "id": "gnss-1",
                "bus": "gnss",
                "poll_interval_s": 0.5,
                "baseline": {
                    "lat_deg": 28.97,
                    "lon_deg": 118.87,
                    "height_m": 150.0,
                    "downstream_azimuth_deg": 120.0,
                },
                "points": [
                    {"id": "downstream", "unit": "mm", "field": "downstream_mm"},
                    {"id": "fix", "field": "fix_quality"},
                ],
            },
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def settings(tmp_path: Path) -> GatewaySettings:
    return load_config(site(tmp_path)).settings


def test_fault_flags_and_files_are_checked_against_the_site(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert parse_fault_flag("silent:piezo-1:10:20").model_dump(exclude_defaults=True) == {
        "kind": "silent",
        "device": "piezo-1",
        "at_s": 10.0,
        "for_s": 20.0,
    }
    assert parse_fault_flag("spike:level-1/water_level:5::2.5").offset == 2.5
    assert parse_fault_flag("disconnect:rs485-1:30").bus == "rs485-1"
    assert parse_fault_flag("exception:level-1:1:1:2").code == 2
    with pytest.raises(FaultPlanError, match="expected KIND:TARGET:AT_S"):
        parse_fault_flag("silent:piezo-1")
    with pytest.raises(FaultPlanError, match="not a Modbus exception code"):
        parse_fault_flag("exception:level-1:1:1:99")
    plan_file = tmp_path / "faults.yaml"
    plan_file.write_text(
        "faults:\n"
        "  - {kind: silent, device: piezo-1, at_s: 1}\n"
        "  - {kind: stuck, device: level-1, at_s: 2}\n"
        "  - {kind: melt, device: level-1, at_s: 2}\n"
    )
    with pytest.raises(FaultPlanError) as info:
        build_plan([plan_file], [], s)
    assert (
        info.value.problems[0]
        == "faults.yaml:3: faults[1]: a stuck fault names exactly one 'point' (got device)"
    )
    assert info.value.problems[1].startswith("faults.yaml:4: faults[2].kind: Input should be")
    with pytest.raises(FaultPlanError) as info:
        build_plan([], ["crc_error:ghost:1", "rtk_float:level-1:1", "garbage:gnss-1:0"], s)
    assert info.value.problems == [
        "faults[0] (crc_error ghost): no device 'ghost' in the configuration",
        "faults[1] (rtk_float level-1): rtk_float cannot be simulated on a modbus_rtu bus "
        "(only nmea_gnss)",
    ]
    result = run_edge(["simulate", "-c", str(site(tmp_path)), "--fault", "exception:gnss-1:0"])
    assert result.returncode == 2
    assert "exception cannot be simulated on a nmea_gnss bus" in result.stderr


def test_fault_plan_seen_through_the_pollers(tmp_path: Path) -> None:
    s = settings(tmp_path)
    plan = FaultPlan.model_validate(
        {
            "faults": [
                {"kind": "silent", "device": "piezo-1", "at_s": 0.6, "for_s": 1.0},
                {"kind": "crc_error", "device": "weir-1", "at_s": 0.6, "for_s": 1.0},
                {"kind": "rtk_float", "device": "gnss-1", "at_s": 0.6, "for_s": 1.6},
                {"kind": "exception", "device": "level-1", "at_s": 2.0, "for_s": 0.8, "code": 2},
                {"kind": "crc_error", "device": "gnss-1", "at_s": 2.6, "for_s": 0.8},
                {"kind": "stuck", "point": "level-1/water_level", "at_s": 3.2, "for_s": 1.0},
                {
                    "kind": "spike",
                    "point": "piezo-1/pressure",
                    "at_s": 3.2,
                    "for_s": 0.8,
                    "offset": 50,
                },
                {"kind": "disconnect", "bus": "rs485-1", "at_s": 4.6, "for_s": 1.0},
            ]
        }
    )
    model = ReservoirModel(flood_limit=123.5, period_s=6.0)
    seen: list[tuple[float, PollResult]] = []

    async def sink(result: PollResult) -> None:
        seen.append((model.elapsed(), result))

    async def scenario() -> dict[str, int]:
        simulator = asyncio.create_task(serve(s, model, None, plan, gnss_epoch_s=0.1))
        await asyncio.sleep(0.2)
        pollers = [
            make_poller(bus, [d for d in s.devices if d.bus == bus.id], sink)
            for bus in s.buses
            if bus.type != "modbus_tcp"
        ]
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        await asyncio.sleep(6.6)
        for poller in pollers:
            poller.stop()
        await asyncio.gather(*tasks)
        simulator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await simulator
        return pollers[1].health.counters

    counters = asyncio.run(scenario())

    def readings(device: str, start: float, end: float) -> list[Any]:
        return [
            r for t, res in seen if start <= t <= end and res.device == device for r in res.readings
        ]

    def reasons(device: str, start: float, end: float) -> set[str | None]:
        return {r.reason for r in readings(device, start, end)}

    assert reasons("piezo-1", 0.2, 0.55) == {None}
    assert reasons("piezo-1", 0.9, 1.5) == {"timeout"}
    assert reasons("weir-1", 0.9, 1.5) == {"crc_error"}
    assert reasons("level-1", 0.9, 1.5) == {None}  # its neighbours' faults do not touch it
    assert reasons("level-1", 2.3, 2.7) == {"exception_response: code 2"}
    stuck = {r.value for r in readings("level-1", 3.5, 4.1)}
    assert len(stuck) == 1
    assert len({r.value for r in readings("level-1", 4.3, 4.6)} - stuck) >= 1
    before = [r.value for r in readings("piezo-1", 2.6, 3.1)]
    spiked = [r.value for r in readings("piezo-1", 3.4, 3.9)]
    assert min(spiked) - max(before) > 45
    outage = {(r.reason or "").split(":")[0] for r in readings("level-1", 4.9, 5.5)}
    assert outage and outage <= {"io_error", "connect_failed"}, outage
    assert reasons("level-1", 6.3, 7.0) == {None}
    gnss_float = readings("gnss-1", 1.2, 2.1)
    assert gnss_float and all(r.quality == "suspect" for r in gnss_float if r.point == "downstream")
    assert {r.value for r in gnss_float if r.point == "fix"} == {5.0}
    assert counters["bad_checksum"] >= 8
    assert {r.quality for r in readings("gnss-1", 4.0, 7.0)} == {"good"}


def test_edge_simulate_serves_an_rtu_bus_on_a_pty(tmp_path: Path) -> None:
    config = site(tmp_path)
    s = load_config(config).settings
    sim = start_edge(
        ["simulate", "-c", str(config), "--fault", "silent:level-1:0:1.5"], tmp_path / "sim.log"
    )
    results: list[tuple[float, PollResult]] = []

    async def sink(result: PollResult) -> None:
        results.append((time.monotonic(), result))

    async def scenario() -> None:
        bus = s.bus("rs485-1")
        poller = make_poller(bus, [d for d in s.devices if d.id == "level-1"], sink)
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(3.0)
        poller.stop()
        await task

    try:
        deadline = time.monotonic() + 10
        while not Path(s.bus("rs485-1").port).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        asyncio.run(scenario())
    finally:
        sim.stop()
    early = [r for t, r in results if t - started < 0.8]
    late = [r for t, r in results if t - started > 2.2]
    assert early and all(r.error == "timeout" for r in early), sim.output()
    assert late and all(r.ok for r in late), sim.output()
    level = late[-1].readings[0].value
    assert level is not None and 122.0 < level < 124.5
    assert "fault_started" in sim.output() and "fault_ended" in sim.output()
    assert not Path(s.bus("rs485-1").port).exists()  # the simulator removed its link


# --- unit ids nobody answers to -------------------------------------------------------------
# A real RS-485 slave that is not there stays silent; a Modbus TCP-to-RTU gateway answers
# exception 0x0B (gateway target device failed to respond). pymodbus's own simulator
# answered both with exception 4 (device failure).

MBPOLL = shutil.which("mbpoll")  # Debian's mbpoll (libmodbus); scripts/test installs it


def one_device_site(tmp_path: Path, bus: dict[str, Any]) -> GatewaySettings:
    config = {
        "site": {"id": "sim", "levels": {"flood_limit": 123.5}},
        "gateway": {"id": "gw-sim"},
        "mqtt": {"host": "127.0.0.1"},
        "store": {"path": str(tmp_path / "edge.db")},
        "buses": [bus],
        "devices": [{
            "id": "level-1", "bus": bus["id"], "unit": 1, "poll_interval_s": 1,
            "points": [{"id": "water_level", "unit": "m",
                        "register": {"table": "holding", "address": 0, "type": "uint16"}}],
        }],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path).settings


async def mbpoll(*args: str) -> tuple[int, str]:
    assert MBPOLL, "mbpoll is not installed (scripts/test installs it with apt-get)"
    process = await asyncio.create_subprocess_exec(
        MBPOLL, "-1", "-0", "-r", "0", "-c", "1", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    return process.returncode or 0, out.decode(errors="replace")


def test_tcp_answers_an_absent_unit_like_a_gateway(tmp_path: Path) -> None:
    port = free_port()
    s = one_device_site(tmp_path, {"id": "lan", "type": "modbus_tcp", "host": "127.0.0.1",
                                   "port": port, "timeout_s": 1.0})

    async def scenario() -> tuple[Any, Any, tuple[int, str], tuple[int, str]]:
        simulator = asyncio.create_task(serve(s))
        try:
            await asyncio.to_thread(wait_for_port, port)
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
            await client.connect()
            present = await client.read_holding_registers(0, count=1, device_id=1)
            absent = await client.read_holding_registers(0, count=1, device_id=7)
            client.close()
            by_mbpoll = await mbpoll("-m", "tcp", "-p", str(port), "-a", "7", "127.0.0.1")
            served = await mbpoll("-m", "tcp", "-p", str(port), "-a", "1", "127.0.0.1")
            return present, absent, by_mbpoll, served
        finally:
            simulator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await simulator

    present, absent, by_mbpoll, served = asyncio.run(scenario())
    assert not present.isError() and len(present.registers) == 1
    assert absent.isError()
    assert (absent.function_code, absent.exception_code) == (0x83, 0x0B)
    assert by_mbpoll[0] != 0
    # libmodbus names exception 0x0B (EMBXGTAR) this way.
    assert "Target device failed to respond" in by_mbpoll[1], by_mbpoll[1]
    assert served[0] == 0 and "[0]:" in served[1], served[1]


def test_rtu_leaves_an_absent_unit_silent(tmp_path: Path) -> None:
    link = tmp_path / "by-id" / "rs485"
    s = one_device_site(tmp_path, {"id": "rs485-1", "type": "modbus_rtu", "port": str(link),
                                   "baudrate": 38400, "parity": "N", "timeout_s": 0.3})

    async def scenario() -> tuple[Any, BaseException | Any, Any, tuple[int, str]]:
        simulator = asyncio.create_task(serve(s))
        try:
            deadline = time.monotonic() + 10
            while not link.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=38400,
                                             parity="N", timeout=0.3, retries=0)
            await client.connect()
            present = await client.read_holding_registers(0, count=1, device_id=1)
            try:
                absent: BaseException | Any = await client.read_holding_registers(
                    0, count=1, device_id=9)
            except ModbusIOException as exc:
                absent = exc
            # The line is not left in a state a present slave cannot answer through.
            again = await client.read_holding_registers(0, count=1, device_id=1)
            client.close()
            by_mbpoll = await mbpoll("-m", "rtu", "-b", "38400", "-P", "none", "-o", "0.3",
                                     "-a", "9", str(link))
            return present, absent, again, by_mbpoll
        finally:
            simulator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await simulator

    present, absent, again, by_mbpoll = asyncio.run(scenario())
    assert not present.isError() and not again.isError()
    # No reply at all: the master's request times out, no exception response arrives.
    assert isinstance(absent, ModbusIOException), absent
    assert by_mbpoll[0] != 0
    assert "timed out" in by_mbpoll[1], by_mbpoll[1]
