"""Decoding with smspdudecoder, a PDU implementation independent of the gsmmodem.pdu we use.

What the gateway encodes is checked with a decoder that shares no code with its encoder, so
a mistake in one is not hidden by the same mistake in the other.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from smspdudecoder.easy import read_incoming_sms
from smspdudecoder.fields import SMSSubmit


def submit(pdu_hex: str) -> dict[str, Any]:
    """The fields of an SMS-SUBMIT: recipient, dcs, user_data (header, data) and more."""
    return SMSSubmit.decode(StringIO(pdu_hex))


def concat_of(fields: dict[str, Any]) -> dict[str, int] | None:
    header = fields["user_data"].get("header")
    for element in (header or {}).get("elements", []):
        if element["iei"] in (0x00, 0x08):
            return dict(element["data"])
    return None


def submit_text(pdu_hexes: list[str]) -> str:
    """The text of a (concatenated) SMS-SUBMIT, its parts put in order by their headers."""
    decoded = [submit(h) for h in pdu_hexes]
    numbered = sorted(decoded, key=lambda f: (concat_of(f) or {"part_number": 1})["part_number"])
    return "".join(f["user_data"]["data"] for f in numbered)


def deliver(pdu_hex: str) -> dict[str, Any]:
    """sender, content, date and partial (concatenation) of an SMS-DELIVER."""
    return read_incoming_sms(pdu_hex)
