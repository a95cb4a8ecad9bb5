"""The GNSS driver: an RTK receiver's NMEA stream over a real pty, averaged per interval."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.devices import DeviceConfig
from drivers.geodesy import enu_offset
from drivers.gnss import NmeaGnssBus
from drivers.nmea import GnssBaseline, nmea_checksum
from drivers.registry import make_poller
from simulator.reservoir import damaged, enu_to_position, gga_sentence, rmc_sentence
from simulator.serialwire import SerialWire
from tests.drivers.instruments import TextInstrument
from tests.drivers.test_gnss_receivers import BEIDOU_BASELINE, BEIDOU_BD
from vocab.model import PollResult

BASELINE = {
    "lat_deg": 28.9712345,
    "lon_deg": 118.8745678,
    "height_m": 152.345,
    "downstream_azimuth_deg": 135.0,
}
FIELDS = [
    "east_mm",
    "north_mm",
    "up_mm",
    "downstream_mm",
    "axis_mm",
    "settlement_mm",
    "fix_quality",
    "satellites",
    "hdop",
]
TRUE_ENU = (3.0, -4.0, -6.0)  # mm: the crest moved east and south and settled 6 mm


def receiver(interval: float = 0.5, **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "id": "gnss-1",
            "bus": "gnss",
            "poll_interval_s": interval,
            "baseline": BASELINE,
            "points": [{"id": f, "unit": "mm", "field": f} for f in FIELDS],
            **extra,
        }
    )


def gnss_bus(port: Path) -> NmeaGnssBus:
    return NmeaGnssBus(id="gnss", type="nmea_gnss", port=str(port), baudrate=115200)


def epoch(
    offset_mm: tuple[float, float, float], quality: int = 4, satellites: int = 18, hdop: float = 0.7
) -> bytes:
    lat, lon, height = enu_to_position(GnssBaseline(**BASELINE), *offset_mm)
    now = datetime.now(UTC)
    return gga_sentence(now, lat, lon, height, quality, satellites, hdop) + rmc_sentence(
        now, lat, lon, quality
    )


def no_position_gga() -> bytes:
    body = "GNGGA,120000.00,,,,,0,00,99.9,,M,,M,,"
    return f"${body}*{nmea_checksum(body):02X}\r\n".encode()


class Collect:
    def __init__(self) -> None:
        self.results: list[PollResult] = []

    async def __call__(self, result: PollResult) -> None:
        self.results.append(result)

    def last(self) -> dict[str, Any]:
        return {r.point: r for r in self.results[-1].readings}


async def stream(
    unit: TextInstrument, make: Callable[[int], bytes | None], seconds: float, rate_hz: float = 20.0
) -> None:
    """Emit ``make(i)`` at ``rate_hz`` (faster than a real receiver, to keep tests short)."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        data = make(i)
        if data:
            unit.say(data)
        i += 1
        await asyncio.sleep(1 / rate_hz)


def test_simulated_positions_invert_to_their_offsets() -> None:
    base = GnssBaseline(**BASELINE)
    for east, north, up in [(0, 0, 0), (12.5, -7.25, 3.0), (-800.0, 650.0, -120.0)]:
        lat, lon, height = enu_to_position(base, east, north, up)
        back = enu_offset(base.lat_deg, base.lon_deg, base.height_m, lat, lon, height)
        assert back.east_m * 1000 == pytest.approx(east, abs=0.01)
        assert back.north_m * 1000 == pytest.approx(north, abs=0.01)
        assert back.up_m * 1000 == pytest.approx(up, abs=0.01)


def test_epochs_are_averaged_and_resolved_along_the_dam(tmp_path: Path) -> None:
    collect = Collect()

    def noisy(i: int) -> bytes:
        # Every epoch is 4 mm off in a different direction; the pair means are exact.
        sign = 1 if i % 2 else -1
        east, north, up = TRUE_ENU
        return epoch(
            (east + 4 * sign, north - 4 * sign, up + 4 * sign),
            satellites=14 if i % 5 == 0 else 18,
            hdop=0.9 if i % 7 == 0 else 0.6,
        )

    async def scenario() -> dict[str, int]:
        with SerialWire(tmp_path / "gnss") as wire, TextInstrument(wire) as antenna:
            poller = make_poller(gnss_bus(wire.link_path), [receiver()], collect)
            task = asyncio.create_task(poller.run())
            await stream(antenna, noisy, 2.3)
            poller.stop()
            await task
            return poller.health.counters

    counters = asyncio.run(scenario())
    assert len(collect.results) >= 3
    for result in collect.results:
        assert result.ok, result.error
        got = {r.point: r for r in result.readings}
        assert all(r.quality == "good" for r in got.values())
        # ~10 epochs per interval: an unpaired epoch moves the mean by at most 4/9 mm,
        # where any single epoch is 4 mm off.
        for name, true in zip(("east_mm", "north_mm", "up_mm"), TRUE_ENU, strict=True):
            assert got[name].value == pytest.approx(true, abs=0.5), name
        alpha = math.radians(135.0)
        east, north = got["east_mm"].value, got["north_mm"].value
        assert got["downstream_mm"].value == pytest.approx(
            east * math.sin(alpha) + north * math.cos(alpha), abs=1e-6
        )
        assert got["axis_mm"].value == pytest.approx(
            east * math.sin(alpha - math.pi / 2) + north * math.cos(alpha - math.pi / 2), abs=1e-6
        )
        assert got["settlement_mm"].value == pytest.approx(-got["up_mm"].value, abs=1e-9)
        assert got["fix_quality"].value == 4
        assert got["satellites"].value == 14  # the worst of the interval
        assert got["hdop"].value == 0.9
    assert counters["epochs_averaged"] >= 30
    assert "bad_checksum" not in counters


def test_bad_checksums_are_counted_and_never_averaged(tmp_path: Path) -> None:
    collect = Collect()

    def with_noise(i: int) -> bytes:
        good = epoch(TRUE_ENU)
        # Damaged sentences that, if believed, would put the crest 5 m downstream.
        wild = epoch((5000.0, 0.0, 0.0)).split(b"\r\n")[:2]
        return good + b"".join(damaged(s + b"\r\n") for s in wild) if i % 2 else good

    async def scenario() -> dict[str, int]:
        with SerialWire(tmp_path / "gnss") as wire, TextInstrument(wire) as antenna:
            poller = make_poller(gnss_bus(wire.link_path), [receiver()], collect)
            task = asyncio.create_task(poller.run())
            await stream(antenna, with_noise, 1.3)
            poller.stop()
            await task
            return poller.health.counters

    counters = asyncio.run(scenario())
    assert counters["bad_checksum"] >= 20  # GGA and RMC of every other epoch
    assert collect.results and all(r.ok for r in collect.results)
    assert collect.last()["east_mm"].value == pytest.approx(3.0, abs=0.02)


def test_fix_quality_faults_and_an_unplugged_receiver(tmp_path: Path) -> None:
    collect = Collect()
    mode = {"now": "float"}

    def emit(i: int) -> bytes | None:
        now = mode["now"]
        if now == "float":
            return epoch((3.0, -4.0, -6.0), quality=5)
        if now == "mixed":  # RTK fixed at the truth, float epochs 50 mm away
            return epoch(TRUE_ENU) if i % 2 else epoch((53.0, -4.0, -6.0), quality=5)
        if now == "no_fix":
            return no_position_gga()
        if now == "silent":
            return None
        return epoch(TRUE_ENU)

    async def scenario() -> list[tuple[str, list[PollResult]]]:
        phases: list[tuple[str, list[PollResult]]] = []
        with SerialWire(tmp_path / "gnss") as wire, TextInstrument(wire) as antenna:
            poller = make_poller(gnss_bus(wire.link_path), [receiver(0.3, offline_after=2)],
                                 collect)
            task = asyncio.create_task(poller.run())
            for phase, seconds in (
                ("float", 0.75),
                ("mixed", 0.75),
                ("no_fix", 0.75),
                ("silent", 0.75),
                ("unplugged", 1.2),
                ("fixed", 1.8),
            ):
                mode["now"] = phase
                start = len(collect.results)
                if phase == "unplugged":
                    wire.unplug()
                if phase == "fixed":
                    wire.plug()
                await stream(antenna, emit, seconds)
                # The first result of a phase may still cover the previous one.
                phases.append((phase, collect.results[start + 1 :]))
            poller.stop()
            await task
        return phases

    phases = dict(asyncio.run(scenario()))
    for result in phases["float"]:
        got = {r.point: r for r in result.readings}
        assert got["east_mm"].quality == "suspect"
        assert got["east_mm"].reason == "fix_not_rtk: quality 5 (rtk_float)"
        assert got["settlement_mm"].quality == "suspect"
        assert got["fix_quality"].quality == "good" and got["fix_quality"].value == 5
    for result in phases["mixed"]:
        got = {r.point: r for r in result.readings}
        assert got["east_mm"].quality == "good"
        assert got["east_mm"].value == pytest.approx(3.0, abs=0.02)  # floats dropped
    assert {r.error for r in phases["no_fix"]} == {"no_fix: GGA without position (quality 0)"}
    assert {r.error for r in phases["silent"]} == {"no_data"}
    unplugged = {(r.error or "").split(":")[0] for r in phases["unplugged"]}
    assert unplugged <= {"io_error", "connect_failed"} and unplugged, unplugged
    assert phases["fixed"] and phases["fixed"][-1].ok
    assert {r.quality for r in phases["fixed"][-1].readings} == {"good"}


def replay(lines: list[str]) -> Callable[[int], bytes]:
    return lambda i: (lines[i % len(lines)] + "\r\n").encode()


def test_a_real_beidou_receivers_15_field_gga_gives_a_displacement(tmp_path: Path) -> None:
    collect = Collect()
    device = receiver(0.4, baseline=BEIDOU_BASELINE)

    async def scenario() -> dict[str, int]:
        with SerialWire(tmp_path / "gnss") as wire, TextInstrument(wire) as antenna:
            poller = make_poller(gnss_bus(wire.link_path), [device], collect)
            task = asyncio.create_task(poller.run())
            await stream(antenna, replay(BEIDOU_BD[2:]), 1.0)
            poller.stop()
            await task
            return poller.health.counters

    counters = asyncio.run(scenario())
    assert collect.results and all(r.ok for r in collect.results), collect.results[-1].error
    assert collect.last()["east_mm"].reason == "fix_not_rtk: quality 1 (gps)"
    assert "rejected_sentences" not in counters


def test_invalid_fixes_repeats_gates_and_unaccepted_talkers(tmp_path: Path) -> None:
    collect = Collect()
    mode = {"now": "invalid"}
    far = (5000.0, 0.0, 0.0)  # where the quality-0 fixes claim the crest is

    def emit(i: int) -> bytes:
        lat, lon, height = enu_to_position(GnssBaseline(**BASELINE), *TRUE_ENU)
        now = datetime.now(UTC)
        if mode["now"] == "invalid":
            return epoch(far, quality=0)
        if mode["now"] == "float_and_invalid":
            return epoch(TRUE_ENU, quality=5) if i % 2 else epoch(far, quality=0)
        if mode["now"] == "repeated":  # GP then GN of one epoch, the GN one 5 m away
            flat, flon, fheight = enu_to_position(GnssBaseline(**BASELINE), *far)
            return (gga_sentence(now, lat, lon, height, talker="GP")
                    + gga_sentence(now, flat, flon, fheight, talker="GN"))
        if mode["now"] == "few_satellites":
            return epoch(TRUE_ENU, satellites=5)
        return gga_sentence(now, lat, lon, height, talker="GL")

    async def scenario() -> tuple[dict[str, list[PollResult]], dict[str, int]]:
        phases: dict[str, list[PollResult]] = {}
        device = receiver(0.3, baseline={**BASELINE, "min_satellites": 6, "max_hdop": 2.0})
        with SerialWire(tmp_path / "gnss") as wire, TextInstrument(wire) as antenna:
            poller = make_poller(gnss_bus(wire.link_path), [device], collect)
            task = asyncio.create_task(poller.run())
            for phase in ("invalid", "float_and_invalid", "repeated", "few_satellites", "GL"):
                mode["now"] = phase
                start = len(collect.results)
                await stream(antenna, emit, 0.75)
                phases[phase] = collect.results[start + 1 :]
            poller.stop()
            await task
            return phases, poller.health.counters

    phases, counters = asyncio.run(scenario())
    assert all(phases.values()), phases
    for result in phases["invalid"]:
        assert result.error and result.error.startswith("no_fix: all "), result.error
        assert result.error.endswith("× fix quality 0 (invalid)")
    for result in phases["float_and_invalid"]:
        got = {r.point: r for r in result.readings}
        assert got["east_mm"].quality == "suspect"
        assert got["east_mm"].value == pytest.approx(3.0, abs=0.02)  # nothing from 5 m away
    for result in phases["repeated"]:
        got = {r.point: r for r in result.readings}
        assert got["east_mm"].value == pytest.approx(3.0, abs=0.02)
    for result in phases["few_satellites"]:
        assert result.error and result.error.endswith("× 5 satellites < min_satellites 6")
    assert {r.error for r in phases["GL"]} == {
        "no_fix: GGA only from talker 'GL', not accepted (accepted: BD, GB, GN, GP)"
    }
    assert counters["epochs_invalid_fix"] >= 10
    assert counters["epochs_repeated"] >= 10
    assert counters["epochs_few_satellites"] >= 10
    assert counters["unaccepted_talker"] >= 10
