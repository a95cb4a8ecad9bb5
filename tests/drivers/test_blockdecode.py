"""The block decoder reads exactly what decode_point reads, point by point.

``BlockDecoder`` (drivers/blockdecode.py) is the Modbus poller's fast path: it must give
the same readings as ``decode_point`` for every register type, order, scale, offset and
range, for NaN and infinite floats and for words that are not 16-bit values.
"""

from __future__ import annotations

import gc
import math
import re
import struct
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.blockdecode import BlockDecoder
from drivers.decode import decode_point
from drivers.devices import PointConfig
from drivers.readplan import plan_reads
from drivers.registers import register_count
from vocab.model import Reading

TYPES = ("int16", "uint16", "int32", "uint32", "int64", "float32", "float64")


@st.composite
def points(draw: Any) -> list[PointConfig]:
    out: list[PointConfig] = []
    address = draw(st.integers(0, 100))
    for n in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from((*TYPES, "bit")))
        register: dict[str, Any] = {"table": draw(st.sampled_from(("holding", "input"))),
                                    "address": address}
        if kind == "bit":
            register.update(type="uint16", bit=draw(st.integers(0, 15)))
        else:
            register.update(type=kind, word_order=draw(st.sampled_from(("big", "little"))),
                            byte_order=draw(st.sampled_from(("big", "little"))))
        address += (1 if kind == "bit" else register_count(kind)) + draw(st.integers(0, 2))
        low = draw(st.floats(-1e6, 1e6))
        out.append(PointConfig.model_validate({
            "id": f"p{n}", "unit": "m", "register": register,
            "scale": draw(st.sampled_from((1.0, 0.1, 0.01, -2.5))),
            "offset": draw(st.sampled_from((0.0, 100.0, -0.5))),
            "range": draw(st.none() | st.just((low, low + draw(st.floats(0, 1e6))))),
        }))
    return out


def same(got: list[Reading], expected: list[Reading]) -> bool:
    """Equal readings, a NaN raw value equal to a NaN (their reprs say 'nan')."""
    return [repr(r) for r in got] == [repr(r) for r in expected]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(config=points(), data=st.data())
def test_block_decoder_reads_what_decode_point_reads(config: list[PointConfig],
                                                     data: st.DataObject) -> None:
    for block in plan_reads(config, coalesce=data.draw(st.booleans())):
        words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=block.count,
                                   max_size=block.count))
        expected = [decode_point("dev", p, block, words, 7) for p in block.points]
        assert same(BlockDecoder(block).decode("dev", words, 7), expected), block


def test_special_floats_and_words_out_of_range_read_as_decode_point_reads() -> None:
    config = [PointConfig.model_validate({
        "id": "p0", "unit": "m", "range": (0, 10),
        "register": {"table": "holding", "address": 0, "type": "float32"}})]
    (block,) = plan_reads(config)
    decoder = BlockDecoder(block)
    assert decoder.fast
    for value in (math.nan, math.inf, -math.inf, 5.5, 11.0):
        words = list(struct.unpack(">HH", struct.pack(">f", value)))
        got = decoder.decode("dev", words, 1)
        assert same(got, [decode_point("dev", config[0], block, words, 1)])
    for words in ([0x10000, 0], [-1, 0], [1]):
        got = decoder.decode("dev", words, 1)
        assert same(got, [decode_point("dev", config[0], block, words, 1)])
        assert got[0].quality == "bad" and got[0].reason is not None


def test_alike_devices_share_their_steps_and_only_the_same_point_is_shared() -> None:
    """Twenty piezometers of one make: their point is one object (share_repeats) and
    their decoders one step. An equal point that is another object (an offset of -0.0,
    which compares equal to 0.0) keeps its own, and reads as its own."""
    spec = {"id": "head", "unit": "kPa", "offset": 0.0,
            "register": {"table": "holding", "address": 4, "type": "float32"}}
    shared = PointConfig.model_validate(spec)
    negative = PointConfig.model_validate({**spec, "offset": -0.0})
    assert negative == shared
    decoders = [BlockDecoder(plan_reads([shared])[0]) for _ in range(20)]
    assert all(d.steps[0] is decoders[0].steps[0] for d in decoders)
    other = BlockDecoder(plan_reads([negative])[0])
    assert other.steps[0] is not decoders[0].steps[0]
    words = list(struct.unpack(">HH", struct.pack(">f", -0.0)))
    assert repr(decoders[0].decode("a", words, 1)[0].value) == "0.0"
    assert repr(other.decode("b", words, 1)[0].value) == "-0.0"


def test_a_word_that_is_not_an_integer_reads_as_decode_point_reads() -> None:
    config = [PointConfig.model_validate({
        "id": "p0", "unit": "m", "register": {"table": "holding", "address": 0,
                                              "type": "uint16"}})]
    (block,) = plan_reads(config)
    words: list[Any] = [1.5]  # what a broken device library might hand over
    got = BlockDecoder(block).decode("dev", words, 1)
    assert same(got, [decode_point("dev", config[0], block, words, 1)])


def _free_tuples_of_twenty(capfd: pytest.CaptureFixture[str]) -> int:
    capfd.readouterr()
    sys._debugmallocstats()  # CPython's allocator report, on the C stderr
    report = capfd.readouterr().err
    found = re.search(r"(\d+) free 20-sized PyTupleObjects", report)
    return int(found.group(1)) if found else 0


def test_polls_of_twenty_registers_leave_no_tuples_behind(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Ten float32 points are 20 registers. CPython 3.11 files a freed tuple of 20 items
    on a free list it never reuses; one tuple a poll (``pack(*words)``) filled it to
    2,000 tuples, 368 KB of the daemon's memory, between full collections."""
    config = [PointConfig.model_validate({
        "id": f"p{n}", "unit": "kPa",
        "register": {"table": "holding", "address": 2 * n, "type": "float32"}})
        for n in range(10)]
    (block,) = plan_reads(config)
    assert block.count == 20
    decoder = BlockDecoder(block)
    words = list(range(1000, 1020))
    gc.collect()  # a full collection empties the free lists
    before = _free_tuples_of_twenty(capfd)
    for _ in range(1000):
        decoder.decode("dev", words, 1)
    assert _free_tuples_of_twenty(capfd) - before < 50
