"""Configuration cases as data, one folder each under tests/config_cases/.

As in Telegraf's Modbus plugin, a configuration bug becomes a folder, not code. Each
folder holds ``site.yaml`` (or a ``site/`` directory of YAML files) and either:

* ``expected_errors``: the lines ``edge check`` must report, exactly, one per line; or
* ``registers.yaml`` and ``expected_readings.yaml``: the register values a real Modbus
  TCP server holds for each unit (``{unit: {holding: {address: value}, input: ...}}``),
  and the readings one poll of every device must give
  (``{device/point: {value: ..., quality: ..., reason: ...}}``, value to 1e-9).

Every Modbus TCP bus of a readings case is pointed at the server.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.registry import make_poller
from edge.config import ConfigError, load_config
from tests.drivers.modbus_server import FieldDevice, TcpFieldBus
from vocab.model import PollResult, Reading

CASES = Path(__file__).parent / "config_cases"


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir())


def site_of(case: Path, work: Path) -> Path:
    """The case's configuration, copied so that relative paths stay inside the case."""
    if (case / "site").is_dir():
        shutil.copytree(case / "site", work / "site")
        return work / "site"
    shutil.copy(case / "site.yaml", work / "site.yaml")
    return work / "site.yaml"


@pytest.mark.parametrize("name", case_names())
def test_config_case(name: str, tmp_path: Path) -> None:
    case = CASES / name
    if (case / "expected_errors").exists():
        expected = (case / "expected_errors").read_text(encoding="utf-8").splitlines()
        with pytest.raises(ConfigError) as info:
            load_config(site_of(case, tmp_path))
        assert [str(p) for p in info.value.problems] == expected
        return
    assert (case / "expected_readings.yaml").exists(), \
        f"{name}: a case needs expected_errors or expected_readings.yaml"
    readings = asyncio.run(poll_once(case, tmp_path))
    expected = yaml.safe_load((case / "expected_readings.yaml").read_text(encoding="utf-8"))
    assert sorted(readings) == sorted(expected), "the points polled"
    for key, want in expected.items():
        got = readings[key]
        assert got.quality == want.get("quality", "good"), key
        assert got.reason == want.get("reason"), key
        value = want.get("value")
        if value is None:
            assert got.value is None, key
        else:
            assert got.value is not None and math.isclose(got.value, value, abs_tol=1e-9), \
                f"{key}: {got.value} != {value}"


def _field_devices(registers: dict[int, dict[str, dict[int, int]]]) -> list[FieldDevice]:
    devices = []
    for unit, tables in registers.items():
        device = FieldDevice(int(unit))
        for table, values in tables.items():
            target: list[int] = getattr(device, table)
            for address, value in values.items():
                target[int(address)] = int(value)
        devices.append(device)
    return devices


async def poll_once(case: Path, work: Path) -> dict[str, Reading]:
    registers: dict[int, Any] = yaml.safe_load(
        (case / "registers.yaml").read_text(encoding="utf-8"))
    async with TcpFieldBus(_field_devices(registers)) as server:
        text = (case / "site.yaml").read_text(encoding="utf-8")
        (work / "site.yaml").write_text(text, encoding="utf-8")
        settings = load_config(work / "site.yaml").settings
        found: dict[str, Reading] = {}

        async def sink(result: PollResult) -> None:
            return None

        for bus in settings.buses:
            assert bus.type == "modbus_tcp", "readings cases use Modbus TCP buses"
            served = bus.model_copy(update={"host": "127.0.0.1", "port": server.port})
            devices = [d for d in settings.devices if d.bus == bus.id]
            task = make_poller(served, devices, sink)
            try:
                for device in devices:
                    result = await task.poll_device(device)
                    found.update({r.key: r for r in result.readings})
            finally:
                task.driver.close()
        return found
