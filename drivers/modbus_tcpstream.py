"""Keeping a Modbus TCP connection's byte stream in step with its requests.

Modbus TCP has no frame marker: a frame is found only by reading the MBAP header at the
front of the stream. pymodbus clears its receive buffer when it sends a request and then
parses whatever arrives from the front. An answer to an earlier request that timed out
(a slow gateway, a slave behind it that answers late) can arrive after that: whole, it is
skipped by its transaction id; but split across the send (part before, part after) or
cut short, what remains at the front is no header at all. pymodbus then waits behind it
until the timeout, so the next request is refused although it was answered, or it reads
a header out of the middle of the old answer, and a transaction id of 0 there (which
pymodbus accepts for any request) hands an old answer's bytes to the new request.

``stream_verdict`` reads the stream as pymodbus will and says when it is out of step;
the link then drops the connection (drivers/modbus_link.py), which is the only way to
be certain that no byte of an old answer reaches a new request.
"""

from __future__ import annotations

import struct

MBAP = struct.Struct(">HHHB")
# An MBAP length counts the unit id and the PDU: at least a function code and one byte,
# at most a 253-byte PDU.
MIN_LENGTH, MAX_LENGTH = 2, 254


def request_tid(frame: bytes) -> int | None:
    """The transaction id of a Modbus TCP request frame, as it went on the wire."""
    return int.from_bytes(frame[:2], "big") if len(frame) >= MBAP.size else None


def stream_verdict(data: bytes, expected_tid: int | None) -> str | None:
    """``out_of_step: ...`` when ``data`` (the receive buffer, from its front) cannot be
    read as whole frames up to the answer to ``expected_tid`` (None: no request is
    waiting); None while it can, even if incomplete."""
    at = 0
    while len(data) - at >= MBAP.size:
        tid, protocol, length, _unit = MBAP.unpack_from(data, at)
        if protocol != 0 or not MIN_LENGTH <= length <= MAX_LENGTH:
            return f"out_of_step: no Modbus TCP header at byte {at} of {len(data)} received"
        if expected_tid is not None and tid == expected_tid:
            return None  # the answer (whole or not yet): pymodbus takes it from here
        if tid == 0 and expected_tid is not None:
            return "out_of_step: a frame with transaction id 0 before the answer"
        at += 6 + length  # an earlier request's answer, which pymodbus skips
    if at > len(data):
        # A frame of an earlier request not yet whole: what follows it cannot be told
        # from the rest of it once pymodbus clears its buffer for the next request.
        return None if expected_tid is not None else (
            "out_of_step: part of an earlier answer left on the stream")
    if at < len(data) and expected_tid is None:
        return "out_of_step: part of an earlier answer left on the stream"
    return None
