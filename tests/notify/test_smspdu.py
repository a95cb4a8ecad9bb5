"""SMS-SUBMIT and SMS-DELIVER PDUs (TS 23.040, TS 23.038), checked with an independent decoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from drivers.smspdu import (
    PduError,
    decode_deliver,
    decode_submit,
    encode_deliver,
    encode_submit,
    join_parts,
    normalise_phone,
)
from tests.notify import independent

ALARM = "【某某水库】库水位 123.62m 超汛限水位 123.50m（报警）2026-07-01 14:05 回复1确认"
ENGLISH = "Mouxx reservoir: level 123.62m above flood limit 123.50m (ALARM) 2026-07-01 14:05"
KEEPER = "+8613800138000"


def test_chinese_alarm_goes_as_one_ucs2_part_that_decodes_to_the_same_text() -> None:
    plan = encode_submit(KEEPER, ALARM, concat_reference=7)
    assert plan.encoding == "ucs2" and len(plan.parts) == 1 and plan.concat_reference is None
    fields = independent.submit(plan.parts[0].hex)
    assert fields["user_data"]["data"] == ALARM
    assert fields["dcs"]["encoding"] == "ucs2"
    assert fields["recipient"]["number"] == "8613800138000"
    assert fields["recipient"]["toa"]["ton"] == "international"
    assert fields["header"]["srr"] is False  # no status report: acks come by reply
    raw = bytes.fromhex(plan.parts[0].hex)
    assert plan.parts[0].tpdu_length == len(raw) - 1  # no SMSC: one octet of SCA


def test_seventy_chinese_characters_fit_one_part_seventy_one_need_two() -> None:
    assert len(encode_submit(KEEPER, "水" * 70, 1).parts) == 1
    plan = encode_submit(KEEPER, "水" * 71, 1)
    assert [len(independent.submit(p.hex)["user_data"]["data"]) for p in plan.parts] == [67, 4]


def test_long_chinese_text_goes_as_concatenated_parts_that_reassemble_in_order() -> None:
    text = ALARM + "；" + ALARM.replace("库水位", "坝基渗压") + "；请立即巡查大坝下游坡面。"
    plan = encode_submit(KEEPER, text, concat_reference=200)
    assert plan.encoding == "ucs2" and plan.concat_reference == 200
    assert len(plan.parts) == -(-len(text) // 67)
    headers = [independent.concat_of(independent.submit(p.hex)) for p in plan.parts]
    assert headers == [
        {"reference": 200, "parts_count": len(plan.parts), "part_number": n}
        for n in range(1, len(plan.parts) + 1)
    ]
    assert independent.submit_text([p.hex for p in reversed(plan.parts)]) == text


def test_english_text_goes_as_gsm_7_bit() -> None:
    plan = encode_submit(KEEPER, ENGLISH, 3)
    assert plan.encoding == "gsm7" and len(plan.parts) == 1
    fields = independent.submit(plan.parts[0].hex)
    assert fields["dcs"]["encoding"] == "gsm"
    assert fields["user_data"]["data"] == ENGLISH
    # 7 bits a character: the user data (after the UDL octet) has fewer octets than characters.
    raw = bytes.fromhex(plan.parts[0].hex)
    assert raw[-72] == len(ENGLISH) and len(raw[-71:]) == -(-len(ENGLISH) * 7 // 8)


def test_gsm_7_bit_limits_count_extension_characters_twice() -> None:
    assert len(encode_submit(KEEPER, "a" * 160, 1).parts) == 1
    plan = encode_submit(KEEPER, "a" * 161, 1)
    assert [len(independent.submit(p.hex)["user_data"]["data"]) for p in plan.parts] == [153, 8]
    # '€' and '{' need the escape to the extension table: two septets each.
    assert len(encode_submit(KEEPER, "€" * 80, 1).parts) == 1
    assert independent.submit(encode_submit(KEEPER, "€" * 80, 1).parts[0].hex)[
        "user_data"]["data"] == "€" * 80
    # 41 × "{x}€" is 287 septets: a part holds 153, and an escape pair is never split, so
    # the first part carries 152 (UDL 159 with the 7 septets of the header).
    long_plan = encode_submit(KEEPER, "{x}€" * 41, 1)
    assert long_plan.encoding == "gsm7" and len(long_plan.parts) == 2
    udls = [independent.submit(p.hex)["user_data"] for p in long_plan.parts]
    assert [bytes.fromhex(p.hex)[14] for p in long_plan.parts] == [159, 7 + 287 - 152]
    assert [decode_submit(p.hex).text for p in long_plan.parts] == ["{x}€" * 21 + "{x}",
                                                                    "€" + "{x}€" * 19]
    # smspdudecoder cuts the decoded characters at the UDL's septet count, so with escape
    # pairs it keeps the spare bits at the end as an '@': only its first part is compared.
    assert udls[1]["data"] == "€" + "{x}€" * 19


def test_a_configured_smsc_is_not_counted_in_the_tpdu_length() -> None:
    plan = encode_submit(KEEPER, ALARM, 1, smsc="+8613800100500")
    raw = bytes.fromhex(plan.parts[0].hex)
    assert raw[0] == 8  # TOA and seven octets of digits
    assert plan.parts[0].tpdu_length == len(raw) - 9
    fields = independent.submit(plan.parts[0].hex)
    assert fields["smsc"]["number"] == "8613800100500"
    assert fields["user_data"]["data"] == ALARM


def test_characters_beyond_the_basic_plane_go_as_surrogate_pairs() -> None:
    text = "𠀀家坝水库 水位超限 🌊"
    plan = encode_submit(KEEPER, text, 1)
    assert plan.encoding == "ucs2"
    assert independent.submit(plan.parts[0].hex)["user_data"]["data"] == text
    assert decode_submit(plan.parts[0].hex).text == text


def test_national_numbers_and_separators() -> None:
    assert normalise_phone("+86 138-0013-8000") == KEEPER
    plan = encode_submit("13800138000", "test", 1)
    recipient = independent.submit(plan.parts[0].hex)["recipient"]
    assert recipient["number"] == "13800138000" and recipient["toa"]["ton"] == "national"


@pytest.mark.parametrize(
    ("phone", "text", "kwargs", "message"),
    [
        ("138abc", "x", {}, "'138abc' is not a phone number"),
        ("12", "x", {}, "'12' is not a phone number"),
        ("+" + "1" * 21, "x", {}, "is not a phone number"),
        (KEEPER, "", {}, "the text to send is empty"),
        (KEEPER, "水" * 200, {"max_parts": 2}, "needs 3 ucs2 parts, more than max_parts=2"),
        (KEEPER, "x", {"smsc": "service"}, "SMSC 'service' is not a phone number"),
    ],
)
def test_what_cannot_be_sent_is_refused_with_the_reason(
    phone: str, text: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PduError, match=message.replace("+", r"\+").replace("(", r"\(")):
        encode_submit(phone, text, 1, **kwargs)


def test_concatenation_reference_must_fit_one_octet() -> None:
    with pytest.raises(PduError, match="reference 256 is outside 0-255"):
        encode_submit(KEEPER, "x", 256)


def test_a_published_sms_deliver_decodes() -> None:
    # The SMS-DELIVER example that circulates with every PDU tutorial ("How are you?").
    text = decode_deliver(
        "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
    )
    assert text.sender == "+31641600986"
    assert text.text == "How are you?"
    assert text.smsc == "+31624000000"
    assert text.concat is None
    # Its zone octet 0x08 is "-00" by TS 23.040 §9.2.3.11 (the sign is bit 3 of the first
    # semi-octet, the low nibble), not the +2 h that tutorials read into it.
    assert text.sent_at == datetime(2002, 8, 26, 19, 37, 41, tzinfo=UTC)


def test_sms_deliver_of_the_simulator_decodes_independently() -> None:
    stamp = datetime(2026, 7, 1, 14, 7, 3, tzinfo=timezone(timedelta(hours=8)))
    (pdu,) = encode_deliver("+8613912345678", "1 收到，马上去坝上", stamp)
    fields = independent.deliver(pdu)
    assert fields["sender"] == "+8613912345678"
    assert fields["content"] == "1 收到，马上去坝上"
    assert fields["date"] == stamp
    ours = decode_deliver(pdu)
    assert (ours.sender, ours.text, ours.sent_at) == ("+8613912345678", "1 收到，马上去坝上", stamp)
    west = datetime(2026, 7, 1, 2, 7, 3, tzinfo=timezone(timedelta(hours=-4)))
    assert decode_deliver(encode_deliver("10086", "ok", west)[0]).sent_at == west


def test_a_surrogate_pair_split_between_parts_is_joined() -> None:
    text = "水" * 66 + "𠀀" + "库" * 10  # the pair straddles the 67-unit boundary
    stamp = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
    pdus = encode_deliver(KEEPER, text, stamp, concat_reference=9)
    parts = [decode_deliver(p) for p in pdus]
    assert [p.concat.number for p in parts if p.concat] == [1, 2]
    assert {p.concat.reference for p in parts if p.concat} == {9}
    assert join_parts([p.text for p in parts]) == text
    assert join_parts(["\ud840"]) == "\ufffd"  # a half pair alone is replaced, not kept


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        ("ZZ", "not an even number of hex digits"),
        ("0791", "too short for its SMSC address"),
        ("00040B91", "does not decode"),
        (encode_submit(KEEPER, "x", 1).parts[0].hex, "is an SMS-SUBMIT, not an SMS-DELIVER"),
        ("0006", "SMS-STATUS-REPORT"),
    ],
)
def test_what_does_not_decode_says_why(pdu: str, message: str) -> None:
    with pytest.raises(PduError, match=message):
        decode_deliver(pdu)


def test_submit_of_a_deliver_is_refused() -> None:
    (pdu,) = encode_deliver(KEEPER, "x", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(PduError, match="is an SMS-DELIVER, not an SMS-SUBMIT"):
        decode_submit(pdu)
    with pytest.raises(PduError, match="needs a UTC offset"):
        encode_deliver(KEEPER, "x", datetime(2026, 1, 1))
