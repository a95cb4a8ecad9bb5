"""Modbus requests per poll cycle on a 100-point site: coalesced reads vs one per point.

The site is seven RS-485 slaves such as a small reservoir has (a level logger with status
bits, four 16-channel vibrating-wire readers with thermistors, a weir logger, a power
monitor: 100 points), served by ``edge simulate`` over a simulated 9600-baud line and
polled by the gateway's BusTask with the bus saturated. One request per point is what
gateways that poll register by register send (lessons.md: 100 requests where 2 would do).

Usage: python bench/coalescing.py [--cycles 3] [--baudrate 9600]
"""

from __future__ import annotations

import argparse

from _common import machine
from _rtu import measure_cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--baudrate", type=int, default=9600)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"site: 7 RTU slaves, 100 points, {args.baudrate} baud, {args.cycles} cycles each")
    rows = []
    for coalesce in (True, False):
        figures = measure_cycles(coalesce, args.baudrate, args.cycles)
        rows.append(("coalesced" if coalesce else "one request per point", figures))
    print(
        f"{'reads':<24}{'requests/cycle':>16}{'bytes/cycle':>13}{'wire time':>12}{'cycle time':>12}"
    )
    for name, f in rows:
        print(
            f"{name:<24}{f.requests:>16.0f}{f.bytes_on_line:>13.0f}{f.wire_s:>11.3f}s"
            f"{f.cycle_s:>11.3f}s"
        )
    (_, fast), (_, slow) = rows
    print(
        f"coalescing: {slow.requests / fast.requests:.1f}x fewer requests, "
        f"{slow.cycle_s / fast.cycle_s:.1f}x shorter cycle"
    )


if __name__ == "__main__":
    main()
