"""Register coalescing: read a device's points with the fewest Modbus requests.

Polling one register per request (as some gateways do) multiplies bus time on a 9600-baud
RS-485 line by the number of points. Points of the same table are sorted by address and
merged into one read while the hole between them is at most ``max_gap`` registers and the
read stays within the protocol's limits (125 registers, 2000 bits per request).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.devices import PointConfig

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One Modbus read request and the points decoded from its reply."""

    table: str
    address: int
    count: int
    points: tuple[PointConfig, ...]


def plan_reads(
    points: Sequence[PointConfig], coalesce: bool = True, max_gap: int = 10
) -> list[ReadBlock]:
    blocks: list[ReadBlock] = []
    for table in ("coil", "discrete", "holding", "input"):
        in_table = sorted(
            (p for p in points if p.register is not None and p.register.table == table),
            key=lambda p: p.register.address,  # type: ignore[union-attr]
        )
        limit = MAX_BITS_PER_READ if table in ("coil", "discrete") else MAX_REGISTERS_PER_READ
        start = end = -1
        members: list[PointConfig] = []
        for point in in_table:
            assert point.register is not None
            p_start = point.register.address
            p_end = p_start + point.register.width
            fits = (
                coalesce
                and members
                and p_start - end <= max_gap
                and max(end, p_end) - start <= limit
            )
            if fits:
                end = max(end, p_end)
                members.append(point)
                continue
            if members:
                blocks.append(ReadBlock(table, start, end - start, tuple(members)))
            start, end, members = p_start, p_end, [point]
        if members:
            blocks.append(ReadBlock(table, start, end - start, tuple(members)))
    return blocks


def split_block(block: ReadBlock) -> list[ReadBlock]:
    """Halve a merged read that the device refused (exception 2, a register in its span
    is not mapped): each half keeps only the span of its own points, so re-reading the
    halves, and halving again what is still refused, ends with every readable point read
    and the unmapped ones alone in one-point reads. A one-point block cannot be split."""
    if len(block.points) < 2:
        return [block]
    ordered = sorted(block.points, key=_address)
    middle = len(ordered) // 2
    return [_span(block.table, half) for half in (ordered[:middle], ordered[middle:])]


def _address(point: PointConfig) -> int:
    assert point.register is not None  # planned blocks hold register points only
    return point.register.address


def _end(point: PointConfig) -> int:
    assert point.register is not None  # planned blocks hold register points only
    return point.register.address + point.register.width


def _span(table: str, points: Sequence[PointConfig]) -> ReadBlock:
    start = min(_address(p) for p in points)
    return ReadBlock(table, start, max(_end(p) for p in points) - start, tuple(points))


def join_read(leaves: Sequence[tuple[ReadBlock, bool]]) -> list[ReadBlock]:
    """The reads a split ends with: neighbours that were both read and whose spans touch
    are one read again (every register of the joined span was just read), so halving
    costs requests only around the holes. ``leaves`` are (block, was read), in order."""
    joined: list[ReadBlock] = []
    last_read = False
    for block, read in leaves:
        previous = joined[-1] if joined else None
        if (read and last_read and previous is not None
                and previous.address + previous.count == block.address):
            joined[-1] = ReadBlock(block.table, previous.address,
                                   previous.count + block.count,
                                   previous.points + block.points)
        else:
            joined.append(block)
        last_read = read
    return joined
