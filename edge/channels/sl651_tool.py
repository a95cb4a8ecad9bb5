"""``edge sl651 decode HEX`` and ``edge sl651 frames``: commissioning with a centre.

``decode`` prints a frame field by field with its CRC check, as the centre's log shows it;
``frames`` lists what each centre was sent and when it confirmed it, from the local store
(read-only, beside the running daemon).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# The codec and the describer are imported by the commands, not here: ``edge.cli`` imports
# this module to build its parser, and ``edge run`` (which never decodes a frame) would
# otherwise hold them and ``decimal`` for its whole life (about 0.6 MiB).

EXIT_BAD_FRAME = 1
EXIT_CONFIG = 2


def cmd_decode(args: argparse.Namespace) -> int:
    from edge.channels.sl651_codec import Sl651Error
    from edge.channels.sl651_describe import describe

    text = " ".join(args.hex) if args.hex != ["-"] else sys.stdin.read()
    try:
        lines = describe(text)
    except Sl651Error as exc:
        print(f"edge sl651 decode: {exc}", file=sys.stderr)
        return EXIT_BAD_FRAME
    print("\n".join(lines))
    # A damaged frame is described as far as it goes; the exit status says it was damaged.
    damaged = any(line.startswith("error:") or ("CRC received" in line and
                                                not line.endswith(": OK")) for line in lines)
    return EXIT_BAD_FRAME if damaged else 0


def _iso(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")


def cmd_frames(args: argparse.Namespace) -> int:
    from edge.channels.sl651_codec import FUNCTION_NAMES
    from edge.channels.sl651_record import frames
    from edge.config import ConfigError, load_config
    from edge.localstore import LocalStoreError, open_readonly, parse_time

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    try:
        from_ms = parse_time(args.from_) if args.from_ else 0
        to_ms = parse_time(args.to) if args.to else 2**62
        conn = open_readonly(loaded.settings.store.path)
    except LocalStoreError as exc:
        print(f"edge sl651 frames: {exc}", file=sys.stderr)
        return 1
    with conn:
        rows = frames(conn, from_ms, to_ms, args.centre)
    for row in rows:
        name = FUNCTION_NAMES.get(row["function"], "?").split(" (")[0]
        state = row["outcome"] or "awaiting confirmation"
        print(f"{_iso(row['sent_ms'])} {row['channel']} seq {row['seq']} serial "
              f"{row['serial']} {row['function']:02X}H {name}: sent {row['sends']}x, {state}"
              + (f" at {_iso(row['confirmed_ms'])}" if row["confirmed_ms"] else ""))
        if args.hex:
            print(f"    {row['frame']}")
    print(f"{len(rows)} frame(s)", file=sys.stderr)
    return 0


def add_sl651_tool(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("sl651", help="SL 651 commissioning: decode a frame, list the frames "
                                     "sent to the centres")
    tools = p.add_subparsers(dest="sl651_command", required=True)
    d = tools.add_parser("decode", help="print a frame field by field, with the CRC check")
    d.add_argument("hex", nargs="+", help="the frame in hex (spaces allowed), or - for stdin")
    d.set_defaults(func=cmd_decode)
    f = tools.add_parser("frames", help="what each centre was sent and confirmed")
    with_config(f)
    f.add_argument("--from", dest="from_", help="ISO 8601 time or epoch ms (default: all)")
    f.add_argument("--to", help="ISO 8601 time or epoch ms (default: now)")
    f.add_argument("--centre", help="one channel, e.g. sl651-centre-1")
    f.add_argument("--hex", action="store_true", help="print each frame's bytes too")
    f.set_defaults(func=cmd_frames)
