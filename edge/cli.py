"""The ``edge`` command: check, run, simulate, demo and the local tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge import __version__
from edge.channels.sl651_tool import add_sl651_tool
from edge.config import GatewaySettings
from edge.daemon_config import EXIT_CONFIG, load_for_daemon, load_or_report
from edge.heap import tune_collector
from edge.logs import configure_logging


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load_for_daemon(args.config)
    if loaded is None:
        return EXIT_CONFIG
    s = loaded.settings
    points = sum(len(d.points) for d in s.devices)
    rule_types = Counter(r.type for r in s.rules)
    print(f"config OK: {', '.join(loaded.files)} (digest {loaded.digest})")
    print(f"site {s.site.id} ({s.site.name or 'unnamed'}), gateway {s.gateway.id}, "
          f"topics {s.topic_root}/...")
    print(f"buses: {len(s.buses)}")
    for bus in s.buses:
        where = f"{bus.host}:{bus.port}" if bus.type == "modbus_tcp" else \
            f"{bus.port} {bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"
        devices = [d.id for d in s.devices if d.bus == bus.id]
        print(f"  {bus.id:<12} {bus.type:<11} {where}  devices: {', '.join(devices) or '-'}")
    print(f"devices: {len(s.devices)}, points: {points}")
    print(f"rules: {len(s.rules)}" + (
        f" ({', '.join(f'{n} {t}' for t, n in sorted(rule_types.items()))})" if s.rules else ""))
    if s.web is not None:
        print(f"keeper's page: http://{s.web.listen}/ (" + (
            "acknowledging with the PIN" if s.web.pin_hash else "read-only: no pin_hash") + ")")
    if s.notify is not None:
        n = s.notify
        print(f"notify: {len(n.contacts)} contacts, {len(n.escalation)} tiers, "
              f"{len(n.sirens)} sirens, modem {n.modem.port if n.modem else 'none'}")
    if s.sl651 is not None:
        print(f"sl651: station {s.sl651.station_address}, {len(s.sl651.elements)} elements to "
              f"{', '.join(f'{c.address}@{c.host}:{c.port}' for c in s.sl651.centres)}")
    if loaded.warnings:
        print(f"warnings: {len(loaded.warnings)}")
        for warning in loaded.warnings:
            print(f"  {warning}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate, then SIGHUP the running daemon: the unit's ExecReload.

    The daemon's own command rather than ``/bin/kill``, which Debian ships in procps, absent
    from minimal images (``systemctl reload`` then failed with status=203/EXEC).
    """
    loaded = load_for_daemon(args.config)
    if loaded is None:
        print(f"edge reload: configuration refused, process {args.pid} not signalled",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        os.kill(args.pid, signal.SIGHUP)
    except OSError as exc:
        print(f"edge reload: cannot signal process {args.pid}: {exc.strerror}",
              file=sys.stderr)
        return 1
    print(f"config OK: {', '.join(loaded.files)} (digest {loaded.digest}); "
          f"SIGHUP sent to {args.pid}")
    return 0


def _import_daemon() -> None:
    import edge.gateway  # noqa: F401  (imported while the config child validates)


def cmd_run(args: argparse.Namespace) -> int:
    tune_collector()  # before the start-up's allocations too (edge/heap.py)
    loaded = load_for_daemon(args.config, meanwhile=_import_daemon)
    if loaded is None:
        return EXIT_CONFIG
    # --log-level wins over the config's logging.level (a technician debugging on site).
    configure_logging(args.log_level or loaded.settings.logging.level)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from edge.gateway import Gateway

    return asyncio.run(Gateway(loaded, args.config).run())


def cmd_simulate(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or "info")
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    from simulator.faultplan import FaultPlanError, build_plan
    from simulator.notify_equipment import parse_reply
    from simulator.reservoir import ReservoirModel, load_value_script, serve
    from simulator.sl651_centre import serve_centres

    try:
        plan = build_plan([Path(f) for f in args.faults], args.fault, loaded.settings)
        replies = [parse_reply(spec) for spec in args.sms_reply]
    except FaultPlanError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    levels = loaded.settings.site.levels
    model = ReservoirModel(flood_limit=levels.get("flood_limit", 123.5), period_s=args.period_s)
    script = load_value_script(Path(args.values)) if args.values else None

    async def simulate() -> None:
        # SIGTERM ends the simulator like Ctrl-C, so the pty links it made are removed.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            centres = [] if args.no_sl651_centre else [serve_centres(
                loaded.settings, report_log=Path(args.sl651_log) if args.sl651_log else None)]
            await asyncio.gather(
                serve(loaded.settings, model, script, plan, modem=not args.no_modem,
                      replies=replies, sms_log=Path(args.sms_log) if args.sms_log else None),
                *centres)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(simulate())
    except ValueError as exc:
        print(f"cannot simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    from edge.localstore import LocalStoreError, status_report

    try:
        return status_report(loaded.settings)
    except LocalStoreError as exc:
        print(f"edge status: {exc}", file=sys.stderr)
        return 1


def cmd_notify_test(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    from edge.channels.notify_tool import NotifyToolError, notify_test

    try:
        return notify_test(loaded.settings, args.to, args.note, args.wait_s)
    except NotifyToolError as exc:
        print(f"edge notify-test: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_export(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    from edge.localstore import LocalStoreError, export_readings, parse_time

    try:
        from_ms, to_ms = parse_time(args.from_), parse_time(args.to)
        count = export_readings(loaded.settings, from_ms, to_ms, args.point, args.format)
    except LocalStoreError as exc:
        print(f"edge export: {exc}", file=sys.stderr)
        return 1
    print(f"{count} reading(s) exported", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    from edge.tail import tail

    return tail(loaded.settings, args.seconds)


def schema_text() -> str:
    """The JSON Schema of the configuration, as ``edge schema`` prints it."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **GatewaySettings.model_json_schema(mode="validation")}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return 0
    # UTF-8 whatever the locale: the model descriptions hold symbols such as F₀.
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


def cmd_hash_pin(args: argparse.Namespace) -> int:
    from edge.web.hashpin import run

    return run(sys.stdin, sys.stdout, sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    return run_demo(Path(args.config), args.seconds, args.fault)


def _add_site_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Tools that help write a site file."""
    p = sub.add_parser("schema", help="print the JSON Schema of the configuration (for "
                                      "editors validating site YAML)")
    p.add_argument("--output", metavar="FILE", help="write it to FILE instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("hash-pin", help="the web.pin_hash of the keeper's PIN (asked twice "
                                        "on a terminal, or read once from stdin)")
    p.set_defaults(func=cmd_hash_pin)
def with_modem_options(p: argparse.ArgumentParser) -> None:
    """`edge simulate`'s options for the notify section's simulated modem."""
    p.add_argument("--no-modem", action="store_true",
                   help="do not serve the notify section's modem (a test or a real one does)")
    p.add_argument("--sms-reply", action="append", default=[], metavar="AT_S:FROM:TEXT",
                   help="a text the simulated modem receives, e.g. 40:+8613800000001:1")
    p.add_argument("--sms-log", metavar="FILE",
                   help="append every SMS the simulated modem sends to FILE (JSON lines)")


def add_notify_test(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("notify-test", help="send a test text to one of the site's contacts "
                                           "(through the running gateway, or the modem)")
    with_config(p)
    p.add_argument("--to", required=True, metavar="CONTACT", help="a contact id of notify")
    p.add_argument("--note", default="", help="a few words added to the test text")
    p.add_argument("--wait-s", type=float, default=90.0,
                   help="how long to wait for the running gateway to send it, or (at most "
                        "30 s) for the modem to be ready (default 90)")
    p.set_defaults(func=cmd_notify_test)


def _add_service_commands(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]
                          ) -> None:
    """What the systemd unit runs besides ``run``: ExecStartPre's check, ExecReload's reload."""
    p = sub.add_parser("check", help="validate a configuration and print a summary")
    with_config(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("reload", help="check a configuration, then tell the running "
                                      "gateway to apply it (SIGHUP)")
    with_config(p)
    p.add_argument("--pid", type=int, required=True,
                   help="the gateway's process id (systemd: $MAINPID)")
    p.set_defaults(func=cmd_reload)


def _add_store_tools(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Tools that read the local store, which work while the uplink is down."""
    p = sub.add_parser("status", help="state of the local gateway, from its store (no uplink "
                                      "needed)")
    with_config(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="readings from the local store as CSV or JSON lines")
    with_config(p)
    p.add_argument("--from", dest="from_", required=True,
                   help="start, ISO 8601 (e.g. 2026-11-24T08:00+08:00) or epoch ms")
    p.add_argument("--to", required=True, help="end (inclusive), same forms")
    p.add_argument("--point", help="only this point, as device/point")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="reservoir-edge gateway")
    parser.add_argument("--version", action="version", version=f"reservoir-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True,
                       help="a YAML file, or a directory whose *.yaml files are merged")

    def with_log_level(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default=None,
                       choices=["debug", "info", "warning", "error"],
                       help="overrides logging.level of the configuration (default info)")

    _add_service_commands(sub, with_config)
    p = sub.add_parser("run", help="run the gateway in the foreground")
    with_config(p)
    with_log_level(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("simulate", help="serve the configuration's Modbus and GNSS devices "
                                        "(TCP on loopback, RTU and NMEA over pseudo-terminals)")
    with_config(p)
    with_log_level(p)
    p.add_argument("--values", help="YAML script pinning points to values over time")
    p.add_argument("--faults", action="append", default=[], metavar="FILE",
                   help="YAML fault plan (faults: [{kind, device|point|bus, at_s, for_s}])")
    p.add_argument("--fault", action="append", default=[], metavar="KIND:TARGET:AT_S[:FOR_S]",
                   help="one fault, e.g. silent:piezo-1:10:20 or disconnect:rs485-1:30:5 "
                        "(kinds: silent, exception, crc_error, garbage, stuck, spike, "
                        "disconnect, rtk_float)")
    p.add_argument("--period-s", type=float, default=120.0,
                   help="seconds between simulated storms (default 120)")
    with_modem_options(p)
    p.add_argument("--no-sl651-centre", action="store_true",
                   help="do not serve the sl651 section's loopback centres (a real one listens)")
    p.add_argument("--sl651-log", metavar="FILE",
                   help="append every report the loopback centres confirm to FILE (JSON lines)")
    p.set_defaults(func=cmd_simulate)

    _add_store_tools(sub, with_config)
    add_notify_test(sub, with_config)
    add_sl651_tool(sub, with_config)

    p = sub.add_parser("tail", help="print the gateway's readings, alarms and health as they "
                                    "reach the broker")
    with_config(p)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.set_defaults(func=cmd_tail)

    _add_site_tools(sub)

    p = sub.add_parser("demo", help="simulator + broker + gateway, printing what arrives")
    p.add_argument("-c", "--config", default=str(Path(__file__).parent.parent / "config"
                                                 / "demo.yaml"))
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--fault", action="append", default=[], metavar="KIND:TARGET:AT_S[:FOR_S]",
                   help="inject a fault in the simulated reservoir, e.g. silent:piezo-1:20:30 "
                        "(see edge simulate --help)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
