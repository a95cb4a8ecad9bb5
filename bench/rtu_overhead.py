"""Gateway overhead on Modbus RTU: measured cycle time against the wire time of the cycle.

The 100-point site of bench/coalescing.py (7 slaves, coalesced reads) at 9600 baud. Wire
time is what the line itself needs per cycle: every byte sent and received × 11 bits /
baud, plus two 3.5-character silences per request (the slave's before its reply, the
master's before the next request). Cycle time is measured at the gateway with the bus
saturated: the time for every device to be polled once. Overhead = cycle / wire - 1;
target < 5 %.

A pseudo-terminal does not impose baud timing, so the field side (``edge simulate`` in
its own process) holds every frame on its simulated line for its wire time and its
slaves answer after the 3.5-character silence: the gateway sees the timing of a real
9600-baud line, and what it adds on top is its own overhead.

Usage: python bench/rtu_overhead.py [--cycles 20] [--baudrate 9600]
"""

from __future__ import annotations

import argparse

from _common import machine
from _rtu import measure_cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--baudrate", type=int, default=9600)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    f = measure_cycles(True, args.baudrate, args.cycles)
    overhead = f.cycle_s / f.wire_s - 1
    print(f"site: 7 RTU slaves, 100 points, coalesced, {args.baudrate} baud, {f.cycles} cycles")
    print(f"requests per cycle:   {f.requests:.0f}")
    print(f"bytes per cycle:      {f.bytes_on_line:.0f}")
    print(f"wire time per cycle:  {f.wire_s * 1000:.1f} ms")
    print(
        f"cycle time (median):  {f.cycle_s * 1000:.1f} ms "
        f"(min {f.cycle_spread_s[0] * 1000:.1f}, max {f.cycle_spread_s[1] * 1000:.1f})"
    )
    print(
        f"gateway overhead:     {overhead * 100:.1f} % of wire time "
        f"({(f.cycle_s - f.wire_s) / f.requests * 1000:.2f} ms per request)"
    )


if __name__ == "__main__":
    main()
