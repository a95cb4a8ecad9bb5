"""Serial text instruments: request/response and free-running, over a real pty."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from drivers.devices import DeviceConfig
from drivers.registry import make_poller
from drivers.serial_line import SerialLineBus
from simulator.serialwire import SerialWire
from tests.drivers.instruments import TextInstrument, print_lines
from vocab.model import PollResult


def line_bus(port: Path, timeout_s: float = 0.3) -> SerialLineBus:
    return SerialLineBus(id="rs232", type="serial_line", port=str(port), timeout_s=timeout_s)


def instrument(
    device_id: str, line: dict[str, Any], points: list[dict[str, Any]], **extra: Any
) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "id": device_id,
            "bus": "rs232",
            "line": line,
            "poll_interval_s": extra.pop("interval", 0.3),
            "points": points,
            **extra,
        }
    )


RADAR = {"command": "READ\r\n", "pattern": r"LEVEL=(?P<level>[-+0-9.]+)\s+TEMP=(?P<temp>\S+)"}
RADAR_POINTS = [
    {"id": "level", "quantity": "water_level", "unit": "m", "field": "level", "range": [100, 130]},
    {"id": "temp", "quantity": "temperature", "unit": "degC", "field": "temp", "scale": 0.1},
]


class Collect:
    def __init__(self) -> None:
        self.results: list[tuple[float, PollResult]] = []  # (wall-clock ms, result)

    async def __call__(self, result: PollResult) -> None:
        self.results.append((time.time() * 1000, result))

    def values(self, device: str, point: str) -> list[float | None]:
        return [
            r.value
            for _, res in self.results
            if res.device == device
            for r in res.readings
            if r.point == point
        ]


def test_request_response_parses_named_groups(tmp_path: Path) -> None:
    def radar(command: str) -> str | None:
        # A banner line first: not an answer, skipped and counted.
        return "RADAR-80 OK\r\nLEVEL=+123.456 TEMP=215\r\n" if command == "READ" else None

    async def scenario() -> tuple[PollResult, PollResult, dict[str, int], list[str]]:
        with SerialWire(tmp_path / "tty") as wire, TextInstrument(wire, radar) as radar_unit:
            dev = instrument("radar-1", RADAR, RADAR_POINTS)
            poller = make_poller(line_bus(tmp_path / "tty"), [dev], Collect())
            first = await poller.poll_device(dev)
            second = await poller.poll_device(dev)
            poller.driver.close()
            return first, second, poller.health.counters, [c for _, c in radar_unit.commands]

    first, second, counters, commands = asyncio.run(scenario())
    assert first.ok and second.ok
    by_point = {r.point: r for r in first.readings}
    assert by_point["level"].value == 123.456 and by_point["level"].quality == "good"
    assert by_point["temp"].value == 21.5 and by_point["temp"].raw == 215.0
    assert first.requests == 1
    assert commands == ["READ", "READ"]
    assert counters["unmatched_lines"] == 2


def test_two_addressed_instruments_share_the_line_one_at_a_time(tmp_path: Path) -> None:
    values = {"01": "+1.234", "02": "-0.500"}

    def logger(command: str) -> str | None:
        address = command.lstrip("#")
        return f"{address},{values[address]}\r" if address in values else None

    collect = Collect()

    async def scenario() -> TextInstrument:
        with (
            SerialWire(tmp_path / "tty") as wire,
            TextInstrument(wire, logger, delay_s=0.05) as loggers,
        ):
            devices = [
                instrument(
                    f"weir-{a}",
                    {"command": f"#{a}\r", "pattern": rf"^{a},(?P<head>[-+0-9.]+)$"},
                    [{"id": "head", "unit": "m", "field": "head"}],
                    interval=0.05,
                )
                for a in values
            ]
            poller = make_poller(line_bus(tmp_path / "tty"), devices, collect)
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(1.0)
            poller.stop()
            await task
            return loggers

    loggers = asyncio.run(scenario())
    assert collect.values("weir-01", "head")[-1] == 1.234
    assert collect.values("weir-02", "head")[-1] == -0.5
    assert len(loggers.commands) >= 8
    # Strictly one at a time: no command goes out before the previous one was answered.
    for (asked, _), (answered, _) in zip(loggers.commands[1:], loggers.replies, strict=False):
        assert asked >= answered
    order = [c for _, c in loggers.commands]
    assert order[:4] == ["#01", "#02", "#01", "#02"]


def test_wrong_answers_and_silence(tmp_path: Path) -> None:
    answers = {"READ": "ERR 5\r\n"}
    collect = Collect()
    lags: list[float] = []

    async def ticker() -> None:
        # The event loop must keep turning while the instrument keeps the poller waiting.
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async def scenario() -> tuple[PollResult, PollResult, bool]:
        with SerialWire(tmp_path / "tty") as wire, TextInstrument(wire, lambda c: answers.get(c)):
            dev = instrument("radar-1", RADAR, RADAR_POINTS, offline_after=2)
            poller = make_poller(line_bus(tmp_path / "tty"), [dev], collect)
            tick = asyncio.create_task(ticker())
            wrong = await poller.poll_device(dev)
            answers["READ"] = "LEVEL=12.0 TEMP=abc\r\n"
            not_number = await poller.poll_device(dev)
            answers.clear()
            await poller.poll_device(dev)
            await poller.poll_device(dev)
            tick.cancel()
            poller.driver.close()
            return wrong, not_number, poller.health.devices["radar-1"].online

    wrong, not_number, online = asyncio.run(scenario())
    assert {r.reason for r in wrong.readings} == {"parse_error: no match in 'ERR 5'"}
    # The line matches; level is out of its range, temp is text: each point on its own.
    by_point = {r.point: r for r in not_number.readings}
    assert by_point["temp"].reason == "not_a_number: 'abc'"
    assert by_point["level"].reason == "out_of_range" and by_point["level"].value == 12.0
    assert not online
    assert max(lags) < 0.05, max(lags)


def test_free_running_reports_the_last_line_of_each_interval(tmp_path: Path) -> None:
    collect = Collect()

    def line(i: int) -> str | None:
        if 12 <= i < 14:
            return "\x00\xff##garbled##\r\n"
        if 20 <= i < 32:
            return None  # the instrument falls silent for a while
        return f"H={1.0 + i / 100:.2f} mm\r\n"

    async def scenario() -> dict[str, int]:
        with SerialWire(tmp_path / "tty") as wire, TextInstrument(wire) as weir:
            dev = instrument(
                "weir-1",
                {"pattern": r"H=(?P<head>\d+\.\d+)"},
                [{"id": "head", "unit": "m", "field": "head"}],
                interval=0.3,
            )
            poller = make_poller(line_bus(tmp_path / "tty"), [dev], collect)
            task = asyncio.create_task(poller.run())
            await print_lines(weir, line, 0.05, 45)
            poller.stop()
            await task
            return poller.health.counters

    counters = asyncio.run(scenario())
    results = [r for _, r in collect.results]
    good = [r for r in results if r.ok]
    assert len(good) >= 4
    # Stamped when the line arrived: the poll just after the instrument fell silent
    # reports a line a good part of an interval old.
    ages = [polled - r.readings[0].ts_ms for polled, r in collect.results if r.ok]
    assert all(age >= 0 for age in ages)
    assert max(ages) > 150, ages
    # Each poll reports the newest line, so values only grow and skip the older lines.
    values = [r.readings[0].value for r in good]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert any(r.error == "no_data" for r in results)
    assert counters["unmatched_lines"] == 2
    assert all(r.requests == 0 for r in results)


def test_free_running_survives_an_unplugged_adapter(tmp_path: Path) -> None:
    collect = Collect()

    async def scenario() -> int:
        with SerialWire(tmp_path / "by-id" / "usb-weir") as wire, TextInstrument(wire) as weir:
            dev = instrument(
                "weir-1",
                {"pattern": r"H=(?P<head>\d+\.\d+)"},
                [{"id": "head", "unit": "m", "field": "head"}],
                interval=0.2,
            )
            poller = make_poller(line_bus(wire.link_path), [dev], collect)
            task = asyncio.create_task(poller.run())
            printer = asyncio.create_task(
                print_lines(weir, lambda i: f"H={i / 100:.2f}\r\n", 0.05, 60)
            )
            await asyncio.sleep(0.8)
            wire.unplug()
            await asyncio.sleep(1.0)
            wire.plug()
            await printer
            poller.stop()
            await task
            return poller.health.reconnects

    reconnects = asyncio.run(scenario())
    results = [r for _, r in collect.results]
    reasons = [r.error for r in results if not r.ok]
    assert any(
        reason and reason.startswith(("io_error", "connect_failed")) for reason in reasons
    ), reasons
    assert results[-1].ok
    assert reconnects >= 1
