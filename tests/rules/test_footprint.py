"""What the daemon imports: numpy only for an HST fit, aiohttp only for the keeper's page,
never the offline or simulator code.

numpy alone is about 12 MiB of the gateway's RSS (docs/performance.md), aiohttp and the
page about 13 MiB (docs/web.md), so each must stay out of a site that does not use it.
Each case runs in a fresh interpreter, where ``sys.modules`` shows what was loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]

# Every rule type; the HST rule judges with coefficients from an offline analysis. The
# potential, forecast and seepage-versus-level rules fit nothing with numpy.
RULES_WITHOUT_A_FIT = [
    {"id": "level-high", "type": "threshold", "point": "level-1/water_level",
     "high": [{"severity": "warning", "value": "flood_limit"}]},
    {"id": "level-rate", "type": "rate", "point": "level-1/water_level", "window": "1h",
     "method": "least_squares", "per": "m/h",
     "high": [{"severity": "warning", "value": 0.5}]},
    {"id": "rain", "type": "accumulation", "point": "level-1/rain"},
    {"id": "head-quality", "type": "quality", "point": "piezo-1/head", "range": [0, 200],
     "gross_error": {"window": 30, "floor": 0.02}, "stuck": {"samples": 10}},
    {"id": "head-lag", "type": "lag_correlation", "point": "piezo-1/head",
     "level": "level-1/water_level", "lag": "10d", "low": [{"severity": "warning",
                                                            "value": 0.5}]},
    {"id": "head-potential", "type": "potential", "point": "piezo-1/head",
     "reservoir": "level-1/water_level", "downstream": "dead",
     "drift": {"high": [{"severity": "warning", "value": 0.05}]}},
    {"id": "level-forecast", "type": "time_to_level", "point": "level-1/water_level",
     "targets": [{"level": "crest", "alarms": [{"severity": "critical", "within": "3h"}]}]},
    {"id": "head-vs-level", "type": "seepage_level", "point": "piezo-1/head",
     "level": "level-1/water_level", "lag_rule": "head-lag",
     "high": [{"severity": "warning", "value": 2.0}]},
    {"id": "head-hst", "type": "hst", "point": "piezo-1/head2",
     "level": "level-1/water_level", "head_reference": "dead",
     "model": {"base_date": "2023-01-01", "s": 0.01, "coefficients": {
         name: 0.01 for name in ("a0", "a1", "a2", "a3", "b11", "b21", "b12", "b22", "c1",
                                 "c2")}}},
]


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    program = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def engine_for(rules: list[dict[str, object]]) -> str:
    return f"""
        import edge.cli, edge.gateway
        from drivers.registry import make_poller
        from rules.engine import RuleEngine
        from tests.rules.sample_site import settings
        RuleEngine(settings({json.dumps(rules)}).rule_site())
    """


def test_the_daemon_loads_no_numpy_without_an_hst_fit() -> None:
    modules = loaded_after(engine_for(RULES_WITHOUT_A_FIT))
    assert "numpy" not in modules
    assert "rules.statistics" not in modules


def test_an_hst_rule_fitting_from_history_loads_numpy_when_built() -> None:
    hst = {"id": "head-hst", "type": "hst", "point": "piezo-1/head2",
           "level": "level-1/water_level", "fit": {"base_date": "2023-01-01", "history": "730d"}}
    assert "numpy" in loaded_after(engine_for([hst]))


def test_the_daemon_loads_no_offline_or_simulator_code() -> None:
    modules = loaded_after("import edge.cli, edge.gateway, drivers.registry")
    for unwanted in ("sqlite_utils", "simulator.reservoir", "simulator.faultplan",
                     "pymodbus.server", "numpy", "aiohttp", "edge.web.app",
                     "edge.web.pages"):
        assert unwanted not in modules


def test_a_site_without_sl651_loads_no_sl651_frames() -> None:
    # The frames, the codec and the reporter (about 0.6 MiB with ``edge sl651``'s tool)
    # load with an sl651 section only; the section's models do not need them.
    modules = loaded_after("import edge.cli, edge.gateway, drivers.registry\n"
                           "from edge.services import configured\n"
                           "from tests.rules.sample_site import settings\n"
                           "configured(settings([]))")
    for unwanted in ("edge.channels.sl651_codec", "edge.channels.sl651_frames",
                     "edge.channels.sl651_elements", "edge.channels.sl651_messages",
                     "edge.channels.sl651_reporter", "edge.channels.sl651_describe"):
        assert unwanted not in modules


def _gateway_with_page(path: Path, web: dict[str, object] | None) -> str:
    """A fresh interpreter builds a gateway and its configured services, as `edge run`."""
    config = {"site": {"id": "s"}, "gateway": {"id": "g"}, "mqtt": {"host": "127.0.0.1"},
              "store": {"path": str(path.parent / "edge.db")},
              **({"web": web} if web else {})}
    path.write_text(json.dumps(config))
    return f"""
        import asyncio
        from edge.config import load_config
        from edge.gateway import Gateway
        from edge.services import configured

        async def main():
            gateway = Gateway(loaded)
            for service_type in configured(loaded.settings):
                service = service_type.build(loaded.settings, gateway.ports)
                task = asyncio.create_task(service.run())
                while not service.health()["listening"]:
                    await asyncio.sleep(0.02)
                await service.stop()
                await task
            gateway.store.close()
            gateway.history.close()

        loaded = load_config({str(path)!r})
        asyncio.run(main())
    """


def test_aiohttp_is_loaded_only_for_a_site_with_the_keepers_page(tmp_path: Path) -> None:
    without = loaded_after(_gateway_with_page(tmp_path / "plain.yaml", None))
    assert not {"aiohttp", "edge.web.app", "edge.web.keeper_port"} & without
    assert "edge.web.config" in without  # the web: section's model, with the configuration
    paged = loaded_after(_gateway_with_page(tmp_path / "paged.yaml",
                                            {"listen": f"127.0.0.1:{free_port()}"}))
    assert {"aiohttp", "edge.web.app", "edge.web.keeper_port"} <= paged


def test_a_driver_is_loaded_with_the_first_bus_of_its_type() -> None:
    # The table (and with it every bus type's config model) loads no driver library.
    modules = loaded_after("import drivers.registry, edge.config")
    assert not {"pymodbus", "serial"} & modules
    modules = loaded_after("""
        import asyncio
        from drivers.registry import make_poller
        from tests.rules.sample_site import settings
        s = settings([])

        async def sink(result):
            pass

        async def build():  # pymodbus' clients need a running loop
            make_poller(s.buses[0], list(s.devices), sink)

        asyncio.run(build())
    """)
    assert "pymodbus" in modules
