"""A window's telemetry messages stay within ``mqtt.max_message_bytes``.

A broker drops the connection on a packet over its limit (ThingsBoard's MQTT transport:
65,536 B by default), and the uplink then sets that message aside, with the readings of
every device the window gathered into it. Group commit must never build such a message
out of small polls."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.payloads import DEFAULT_MAX_MESSAGE_BYTES, mark_replay, telemetry_message
from edge.store import Store
from edge.storeschema import MAX_SHARED_POLL, message_polls
from vocab.model import Reading

names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                min_size=1, max_size=40)
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none())


@st.composite
def a_poll(draw: st.DrawFn) -> list[Reading]:
    device = draw(names)
    count = draw(st.integers(min_value=0, max_value=MAX_SHARED_POLL + 5))
    return [Reading(device=device, point=draw(names), ts_ms=draw(st.integers(0, 2**53)),
                    value=draw(values), unit=draw(st.sampled_from(["m", "kPa", "m³/s", ""])),
                    quality="good", raw=draw(values),
                    reason=draw(st.one_of(st.none(), names)))
            for _ in range(count)]


def sent(seq: int, fragment: str) -> int:
    """Bytes of the payload as published, from the backlog (the longest form)."""
    return len(mark_replay(telemetry_message(seq, [fragment])).encode())


@settings(max_examples=150, deadline=None)
@given(st.lists(a_poll(), max_size=60), st.integers(min_value=1024, max_value=8192))
def test_every_shared_message_fits_and_every_poll_is_in_exactly_one_in_order(
        polls: list[list[Reading]], max_bytes: int) -> None:
    cycles = [(readings, ()) for readings in polls]
    messages = message_polls(cycles, max_bytes)
    carried = [i for message in messages for i in message.polls]
    assert carried == [i for i, readings in enumerate(polls) if readings]
    for message in messages:
        readings = [r for i in message.polls for r in polls[i]]
        payload = mark_replay(telemetry_message(2**63 - 1, [message.fragment]))
        assert len(json.loads(payload)["readings"]) == len(readings)
        if len(message.polls) > 1:
            assert sent(2**63 - 1, message.fragment) <= max_bytes
            assert all(len(polls[i]) <= MAX_SHARED_POLL for i in message.polls)


def one_reading_polls(count: int) -> list[tuple[list[Reading], tuple[()]]]:
    return [([Reading(device=f"piezometer-{i:03d}", point="pressure", ts_ms=1_765_000_000_000,
                      value=123.456789, unit="kPa", quality="good")], ())
            for i in range(count)]


def test_a_window_of_200_piezometers_is_cut_into_messages_under_the_bound(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "edge.db", max_message_bytes=4096)
    try:
        queued = store.commit_cycles(one_reading_polls(200))
        payloads = [e.payload for e in store.outbox.pending("telemetry", 0, 1000)]
    finally:
        store.close()
    assert len(payloads) > 1 and len({seqs[0] for seqs in queued}) == len(payloads)
    assert all(len(mark_replay(p).encode()) <= 4096 for p in payloads)
    devices = [r["device"] for p in payloads for r in json.loads(p)["readings"]]
    assert devices == [f"piezometer-{i:03d}" for i in range(200)], "all of them, in order"


def test_a_poll_larger_than_the_bound_is_never_split_nor_dropped(tmp_path: Path) -> None:
    big = [Reading(device="logger", point=f"channel_{i:02d}", ts_ms=1, value=1.0, unit="kPa",
                   quality="good") for i in range(60)]
    store = Store(tmp_path / "edge.db", max_message_bytes=1024)
    try:
        store.commit_cycles([*one_reading_polls(2), (big, ())])
        payloads = [json.loads(e.payload) for e in store.outbox.pending("telemetry", 0, 10)]
    finally:
        store.close()
    assert [len(p["readings"]) for p in payloads] == [2, 60]


def test_the_default_bound_is_under_thingsboard_s_limit_with_room_for_the_topic() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES + 1024 <= 65_536
