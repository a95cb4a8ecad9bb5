"""What one socket read costs by the size asked for: asyncio's 256 KiB against 4 KiB.

asyncio's selector transport calls ``sock.recv(256 * 1024)`` for every read; CPython
allocates the whole size, receives into it and shrinks it to what came. A gateway with a
Modbus device per endpoint reads once per poll, a 10-to-260-byte answer each time
(drivers/modbus_link.py reads 4 KiB a time for that reason). This measures one read of a
25-byte answer over a socket pair, ``time.process_time`` per read, for each size, in a
child process per environment: glibc's defaults, and the systemd unit's Environment=
(``MALLOC_MMAP_THRESHOLD_`` fixed above 256 KiB, so such a read comes from the heap and is
trimmed back after it).

Usage: python bench/recv_size.py [--reads 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

SIZES = (256 * 1024, 4096)
ANSWER = bytes(25)  # a Modbus TCP answer of 10 registers: 7 + 2 + 20 bytes, near enough


def reads(size: int, count: int) -> float:
    """µs of CPU per send-and-read of ANSWER with ``recv(size)``."""
    ours, theirs = socket.socketpair()
    try:
        started = time.process_time()
        for _ in range(count):
            theirs.send(ANSWER)
            ours.recv(size)
        return (time.process_time() - started) / count * 1e6
    finally:
        ours.close()
        theirs.close()


def child(count: int, repeats: int) -> None:
    # Nothing else imported: the heap as a small process has it. Larger freed blocks
    # lying about (a daemon's imports) may serve the 256 KiB for a while; the daemon
    # itself, traced, made two brk calls a poll (docs/performance.md).
    runs = {size: sorted(reads(size, count) for _ in range(repeats)) for size in SIZES}
    print(json.dumps({size: figures[len(figures) // 2] for size, figures in runs.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.reads, args.repeats)
        return
    from _common import machine, unit_environment

    unit = {k: v for k, v in unit_environment().items() if k.startswith("MALLOC_")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    print(f"machine: {machine()}; {args.reads} reads a repeat, medians of {args.repeats}")
    print(f"{'environment':<48}" + "".join(f"{f'recv({s})':>14}" for s in SIZES))
    for label, env in (("glibc defaults", base),
                       ("the unit's: " + " ".join(f"{k}={v}" for k, v in unit.items()),
                        {**base, **unit})):
        done = subprocess.run([sys.executable, __file__, "--child", "--reads", str(args.reads),
                               "--repeats", str(args.repeats)], env=env, check=True,
                              capture_output=True, text=True)
        figures = json.loads(done.stdout)
        print(f"{label:<48}" + "".join(f"{figures[str(s)]:>11.2f} µs" for s in SIZES))


if __name__ == "__main__":
    main()
