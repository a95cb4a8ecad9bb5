"""The SL 651-2014 codec against the standard, published frames and an independent centre.

Every value the codec encodes is decoded by tests/channels/sl651_centre.py, which shares no
code with the codec; published frames from open-source projects check both against what
real stations and centres exchanged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.channels import sl651_codec as co
from edge.channels import sl651_describe as ds
from edge.channels import sl651_elements as el
from edge.channels import sl651_frames as fr
from edge.channels import sl651_reports as rp
from edge.channels import sl651_values as va
from simulator.sl651_centre import (
    EOT,
    ESC,
    Sl651Centre,
    centre_crc,
    decode_uplink,
    element_value,
)

BJ = co.BEIJING
SENT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=BJ)
OBSERVED = datetime(2024, 5, 6, 7, 5, tzinfo=BJ)
HEADER = {"centre": 5, "station": "0012345678", "password": 0x1234}

# Published frames. Sources (cited, not copied code):
# - yu-xiaoyao/sl651-2014-server, netty-server/src/test/java/me/yuxiaoyao/sl651/netty/
#   server/util/CrcUtilTest.java: three frames with their CRCs.
# - handsomestWei/sl651-2014, src/main/java/com/wjy/sl6512014/util/Crc16Util.java (main):
#   a timed report with CRC 83 97 (also 64673a/SL651-2014 samples/regular_report.hex).
# - 64673a/SL651-2014, "REF-SL651报文分析-公司来(1).docx": a vendor's annotated exchanges
#   with a centre, values as the vendor decoded them.
YX_KEEP_ALIVE = "7E7E01001234567812342F0008020003591011155111036BCA"
YX_KEEP_ALIVE_2 = "7E7E00987654321012342F0008027E0822101110074703C3AE"
YX_TIMED = ("7E7E05001122334403E832002B020034170718110016F1F1001122334448F0F0170718110020"
            "1900004026190000403923000104903812109903A421")
HW_TIMED = ("7E 7E 01 00 10 10 00 01 A0 00 32 00 2B 02 00 0C 20 07 24 17 23 49 F1 F1 00 10 "
            "10 00 01 48 F0 F0 20 07 24 17 23 20 19 00 01 30 22 19 00 00 40 39 23 00 00 05 "
            "50 38 12 12 68 03 83 97")
REF_TIMED = ("7E 7E 01 11 22 33 44 55 AA AA 32 00 32 02 00 03 24 01 09 15 30 00 F1 F1 11 22 "
             "33 44 55 48 F0 F0 24 01 09 15 30 22 19 00 00 00 20 19 00 00 35 39 23 AA AA AA "
             "AA FF 11 23 00 00 00 08 38 12 12 44 03 08 27")
REF_QUERY_37 = "7E 7E 11 22 33 44 55 01 AA AA 37 80 08 02 00 01 24 01 09 16 01 28 05 CD 00"
REF_ANSWER_37 = ("7E 7E 01 11 22 33 44 55 AA AA 37 00 2D 02 00 01 24 01 09 16 34 31 F1 F1 11 "
                 "22 33 44 55 48 F0 F0 24 01 09 16 34 20 19 00 00 35 39 23 AA AA AA AA FF 11 "
                 "23 00 00 00 21 38 12 12 45 03 0F C1")
REF_KEEP_ALIVE = "7E 7E 01 11 22 33 44 55 AA AA 2F 00 08 02 00 02 24 01 10 13 59 00 03 CC 42"
REF_CONFIRM_30 = "7E 7E 11 22 33 44 55 01 AA AA 30 80 08 02 00 05 24 01 10 14 20 33 1B F1 CC"
REF_HOURLY_EMPTY = (
    "7E 7E 01 00 12 34 56 78 A0 00 34 00 6D 02 00 03 24 01 05 14 00 00 F1 F1 00 12 34 56 78 "
    "48 F0 F0 24 01 05 13 05 F4 60 FF FF FF FF FF FF FF FF FF FF FF 00 F0 F0 24 01 05 14 00 "
    "26 19 00 01 05 F0 F0 24 01 05 13 05 F5 C0" + " FF" * 24 + " F0 F0 24 01 05 14 00 22 19 "
    "00 00 00 20 19 00 00 55 39 23 AA AA AA AA 38 12 12 01 03 80 63")
# The vendor's hourly report with data in F4H and F5H. Its printed CRC (F5 02) does not match
# its bytes (the document's author edited the frame), so the test recomputes the CRC.
REF_HOURLY_BODY = (
    "7E7E05001122334403E8340068020033240118110014F1F1001122334448F0F02401181005F4600500000014"
    "FFFFFFFFFF0000F0F024011811002619000040F0F02401181005F5C0000C000C001C00310031FFFFFFFFFFFF"
    "FFFFFFFF00310031F0F0240118110039230001049020190000403812109903")

NUMBER_ELEMENTS = [e for e in el.ELEMENTS if e.kind == "number"]


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _expected(value: float, decimals: int) -> float | int:
    """What a value becomes on the wire: rounded half away from zero, as the codec says."""
    scaled = Decimal(repr(value)).scaleb(decimals).quantize(Decimal(1), ROUND_HALF_UP)
    return int(scaled) if decimals == 0 else int(scaled) / 10 ** decimals


def _report(elements: list[va.Element], function: int = co.Function.TIMED,
            serial: int = 7) -> bytes:
    return rp.report_frame(function, serial=serial, sent=SENT, category=co.Category.RESERVOIR,
                           observed=OBSERVED, elements=elements, **HEADER)


# --- CRC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [YX_KEEP_ALIVE, YX_KEEP_ALIVE_2, YX_TIMED, HW_TIMED,
                                   REF_TIMED, REF_QUERY_37, REF_ANSWER_37, REF_KEEP_ALIVE,
                                   REF_CONFIRM_30, REF_HOURLY_EMPTY])
def test_crc_matches_published_frames_high_byte_first(frame: str) -> None:
    raw = _hex(frame)
    assert co.crc_bytes(raw[:-2]) == raw[-2:]
    assert centre_crc(raw[:-2]).to_bytes(2, "big") == raw[-2:]


def test_encoded_crc_is_sent_high_byte_first_and_swapped_bytes_are_named() -> None:
    frame = _report([va.value_of("Z", 28.96)])
    crc = co.crc16(frame[:-2])
    assert frame[-2:] == bytes([crc >> 8, crc & 0xFF])
    assert crc >> 8 != crc & 0xFF  # the test would not tell the orders apart otherwise
    swapped = frame[:-2] + frame[-1:] + frame[-2:-1]
    with pytest.raises(co.FrameError) as caught:
        fr.parse_frame(swapped)
    message = str(caught.value)
    assert caught.value.field == "CRC" and caught.value.offset == len(frame) - 2
    assert f"computed {crc:04X}" in message
    assert f"received {crc & 0xFF:02X}{crc >> 8:02X}" in message
    assert "low byte first" in message


# --- Elements ----------------------------------------------------------------------------


def test_worked_example_z_28960() -> None:
    """reservoir.md §5: `39 23 00 02 89 60` is Z = 28.960 m (a real Fujian message)."""
    raw = bytes.fromhex("392300028960")
    item, end = va.decode_element(raw, 0, None)
    assert (item.mnemonic, item.value, item.decimals, end) == ("Z", 28.96, 3, 6)
    assert va.encode_element(el.element("Z"), 28.96) == raw
    assert element_value(0x39, "00028960", 3) == 28.96


@pytest.mark.parametrize(("key", "value", "wire"), [
    ("AI", -5.2, "02 19 FF 00 52"),  # N(3,1): odd digits, "FF0" then the digits
    ("VT", -1.25, "38 1A FF 01 25"),  # N(4,2): even digits, one FF byte
    ("Z", -1.5, "39 2B FF 00 00 15 00"),  # 5 bytes counted, sign byte included (table 26)
    ("PT", -0.1, "26 21 FF 00 00 01"),
    ("Z", None, "39 23 FF FF FF FF"),  # missing: F to the full length, as real answers carry
    ("PJ", None, "20 19 FF FF FF"),
    ("ZU", 123.45, "3B 23 00 12 34 50"),
])
def test_sign_and_missing_encodings(key: str, value: float | None, wire: str) -> None:
    encoded = va.encode_element(el.element(key), value)
    assert encoded == _hex(wire)
    item, _ = va.decode_element(encoded, 0, None)
    assert item.value == value
    digits = encoded[2:].hex().upper()
    assert element_value(encoded[0], digits, encoded[1] & 7) == value


def test_zu_with_two_decimals_keeps_its_integer_digits() -> None:
    """Table E.5: a reservoir station may send ZU with 2 or 3 decimals."""
    encoded = va.encode_element(el.element("ZU"), 1234.567, decimals=2)
    assert encoded == _hex("3B 1A 12 34 57")  # N(6,2), 1234.567 rounds to 1234.57
    assert element_value(0x3B, "123457", 2) == 1234.57
    with pytest.raises(co.EncodeError, match=r"VT \(38H\) is sent with 2 decimals, not 3"):
        va.encode_element(el.element("VT"), 12.5, decimals=3)


def test_rounding_is_half_away_from_zero_on_the_decimal_form() -> None:
    pj = el.element("PJ")
    assert va.encode_element(pj, 0.25)[-1] == 0x03
    assert va.encode_element(pj, -0.25) == _hex("20 21 FF 00 00 03")
    assert va.encode_element(el.element("VT"), 2.675) == _hex("38 12 02 68")


@pytest.mark.parametrize(("key", "value", "match"), [
    ("Z", 10000.0, r"Z \(39H\) value 10000.0 does not fit N\(7,3\): at most 9999.999"),
    ("VT", 100, r"VT \(38H\) value 100 does not fit N\(4,2\)"),
    ("PJ", -10000, r"PJ \(20H\) value -10000 does not fit N\(5,1\)"),
    ("Z", float("nan"), r"Z \(39H\): nan cannot be sent"),
    ("Z", "28.9", r"Z \(39H\): '28.9' is not a number"),
    ("Z", True, r"is not a number"),
    ("DRP", [1.0] * 11, r"DRP \(F4H\) needs twelve 5-minute values"),
    ("DRP", [25.5] + [0.0] * 11, r"DRP \(F4H\) value 1 = 25.5 is outside 0..25.4 mm"),
    ("DRZ1", [0.0] * 11 + [-0.01], r"DRZ1 \(F5H\) value 12 = -0.01 is outside 0..655.34 m"),
    ("ZT", 1 << 32, r"status word must be an integer in 0..4294967295"),
    ("ZT", 1.5, r"needs the status word as an integer"),
    ("DRxnn", timedelta(seconds=90), r"must be whole, non-negative minutes"),
    ("DRxnn", timedelta(days=32), r"longer than 31 days"),
    ("DRxnn", 5, r"needs a timedelta"),
    ("RGZS", "PJ 02", r"carries raw bytes"),
])
def test_values_that_do_not_fit_are_refused_clearly(key: str, value: object, match: str) -> None:
    with pytest.raises(co.EncodeError, match=match):
        va.encode_element(el.element(key), value)  # type: ignore[arg-type]  # bad on purpose


@pytest.mark.parametrize("case", ["max", "negative", "small", "missing"])
def test_every_number_element_decodes_at_the_centre_to_what_was_encoded(case: str) -> None:
    elements, expected = [], {}
    for definition in NUMBER_ELEMENTS:
        top = (10 ** definition.digits - 1) / 10 ** definition.decimals
        value = {"max": top, "negative": -top, "small": 1 / 10 ** definition.decimals,
                 "missing": None}[case]
        if definition.decimals == 0 and value is not None:
            value = int(value)
        elements.append(va.value_of(definition, value))
        expected[definition.identifier] = (None if value is None
                                           else _expected(value, definition.decimals))
    report = decode_uplink(_report(elements))
    assert report.by_identifier == expected
    assert report.category == "K" and report.observed == OBSERVED


def test_series_status_time_step_and_user_defined_elements_at_the_centre() -> None:
    rain = (0.5, 0.0, None, 25.4, 1.2, 0.0, 0.0, 0.0, 0.1, None, 0.0, 3.0)
    levels = (0.12, 0.12, 0.28, 0.49, None, 655.34, 0.0, 0.0, 1.0, 2.5, 0.01, 0.49)
    vw0 = el.ElementDef.user_defined(0xFF11, "VW0", digits=7, decimals=3, unit="m")
    frame = _report([va.value_of("DRP", rain), va.value_of("DRZ3", levels),
                     va.value_of("ZT", 0b1000_0101), va.value_of("DRxnn", timedelta(minutes=5)),
                     va.value_of(vw0, -0.021), va.value_of("VT", 12.45)])
    report = decode_uplink(frame)
    assert report.values == {"DRP": rain, "DRZ3": levels, "ZT": 0b1000_0101,
                             "DRxnn": timedelta(minutes=5), "FF11H": -0.021, "VT": 12.45}
    assert b"\xf4\x60" in frame and b"\xf7\xc0" in frame and b"\x04\x18\x00\x00\x05" in frame
    decoded = fr.parse_report(fr.parse_frame(frame).body)
    assert decoded.values()["DRP"] == rain and decoded.values()["FF11H"] == -0.021
    with pytest.raises(co.EncodeError, match="user-defined identifier must be an integer in"):
        el.ElementDef.user_defined(0x3C, "X", 4, 1)


def test_manual_entry_data_run_to_the_end_of_the_body() -> None:
    frame = _report([va.value_of("RGZS", b"PJ 02 ")], function=co.Function.TEST)
    assert decode_uplink(frame).values["F2H"] == b"PJ 02 "
    assert fr.parse_report(fr.parse_frame(frame).body).values()["RGZS"] == b"PJ 02 "


def test_unknown_element_table_lookup_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"SL 651 has no element 'SEEPAGE' in table C\.1"):
        el.element("SEEPAGE")


def test_five_minute_rain_carry_over() -> None:
    """Table C.1 note e: more than 25.4 mm in 5 minutes carries into the next interval."""
    spread = va.spread_five_minute_rain([30.0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert spread[:3] == [25.4, 5.6, 0.0] and sum(spread) == pytest.approx(31.0)


# --- Published frames --------------------------------------------------------------------


def test_published_timed_reports_decode_to_their_published_values() -> None:
    report = fr.parse_report(fr.parse_frame(YX_TIMED).body)
    assert (report.serial, report.station, report.category) == (0x34, "0011223344", 0x48)
    assert report.sent == datetime(2017, 7, 18, 11, 0, 16, tzinfo=BJ)
    assert report.values() == {"PJ": 4.0, "PT": 4.0, "Z": 10.49, "VT": 10.99}
    assert decode_uplink(_hex(YX_TIMED)).values == {"PJ": 4.0, "PT": 4.0, "Z": 10.49,
                                                    "VT": 10.99}
    hw = decode_uplink(_hex(HW_TIMED))
    assert hw.values == {"PJ": 13.0, "PN05": 4.0, "Z": 0.55, "VT": 12.68}
    assert fr.parse_report(fr.parse_frame(HW_TIMED).body).values() == hw.values
    # The vendor's timed report: Z missing as AA AA (not the standard's F), a user-defined
    # FF11H vibrating-wire level 0.008 m, voltage 12.44 V.
    ref = fr.parse_report(fr.parse_frame(REF_TIMED).body)
    assert ref.values() == {"PN05": 0.0, "PJ": 3.5, "Z": None, "FF11H": 0.008, "VT": 12.44}
    assert decode_uplink(_hex(REF_TIMED)).values == {"PN05": 0.0, "PJ": 3.5, "Z": None,
                                                     "FF11H": 0.008, "VT": 12.44}


def test_published_keep_alives_query_and_answer() -> None:
    keep = fr.parse_frame(YX_KEEP_ALIVE)
    assert (keep.function, keep.centre, keep.station, keep.password) == (0x2F, 1, "0012345678",
                                                                         0x1234)
    assert fr.parse_report(keep.body).serial == 3 and keep.body[2:] == _hex("591011155111")
    assert fr.parse_report(fr.parse_frame(REF_KEEP_ALIVE).body).elements == ()
    query = rp.parse_centre_reply(REF_QUERY_37)
    assert (query.kind, query.function, query.serial) == ("command", 0x37, 1)
    assert query.frame.station == "1122334455" and query.frame.centre == 1
    answer = fr.parse_report(fr.parse_frame(REF_ANSWER_37).body)
    assert answer.values() == {"PJ": 3.5, "Z": None, "FF11H": 0.021, "VT": 12.45}


def test_published_confirmation_is_recognised_for_its_serial() -> None:
    reply = rp.parse_centre_reply(REF_CONFIRM_30)
    assert reply.kind == "confirm" and reply.stay_online
    assert reply.confirms(0x30, 5) and not reply.confirms(0x30, 6)
    assert not reply.confirms(0x32, 5)


def test_published_hourly_reports_decode_with_their_observation_times() -> None:
    empty = fr.parse_report(fr.parse_frame(REF_HOURLY_EMPTY).body)
    assert empty.values()["DRP"] == (None,) * 11 + (0.0,)
    assert empty.values()["DRZ1"] == (None,) * 12 and empty.values()["Z"] is None
    raw = _hex(REF_HOURLY_BODY)
    raw += co.crc_bytes(raw)
    report = fr.parse_report(fr.parse_frame(raw).body)
    values = report.values()
    assert values["DRP"] == (0.5, 0.0, 0.0, 0.0, 2.0, None, None, None, None, None, 0.0, 0.0)
    assert values["DRZ1"] == (0.12, 0.12, 0.28, 0.49, 0.49, None, None, None, None, None,
                              0.49, 0.49)
    assert (values["PT"], values["Z"], values["PJ"], values["VT"]) == (4.0, 10.49, 4.0, 10.99)
    times = {e.mnemonic: e.observed for e in report.elements}
    assert times["DRP"] == datetime(2024, 1, 18, 10, 5, tzinfo=BJ) == report.observed
    assert times["Z"] == datetime(2024, 1, 18, 11, 0, tzinfo=BJ)
    centre = decode_uplink(raw)
    assert centre.values["DRZ1"] == values["DRZ1"] and centre.values["DRP"] == values["DRP"]
    lines = ds.describe(REF_HOURLY_BODY + "F502")
    assert lines[-1].endswith("CRC received F502, computed 2D9D: MISMATCH")


# --- Frames of every kind ----------------------------------------------------------------


def _every_kind() -> dict[str, bytes]:
    level = [va.value_of("ZU", 123.456), va.value_of("PJ", 0.5), va.value_of("VT", 12.6)]
    rain = [0.0] * 11 + [1.5]
    return {
        "keep-alive": rp.keep_alive_frame(serial=7, sent=SENT, **HEADER),
        "test": _report(level, co.Function.TEST),
        "timed": _report(level, co.Function.TIMED),
        "added": _report(level, co.Function.ADDED),
        "hourly": rp.hourly_frame(serial=7, sent=SENT, category=co.Category.RESERVOIR,
                                  first_observed=OBSERVED - timedelta(minutes=55),
                                  rain5_mm=rain, levels5_m=[1.25] * 12, observed=OBSERVED,
                                  elements=[va.value_of("PT", 88.5), *level], **HEADER),
        "query": rp.query_realtime_frame(sent=SENT, **HEADER),
        "answer": _report(level, co.Function.QUERY_REALTIME),
        "confirm": rp.confirmation_frame(0x32, serial=7, sent=SENT, **HEADER),
        "confirm-esc": rp.confirmation_frame(0x33, serial=7, sent=SENT, end=co.ESC, **HEADER),
        "nak": rp.nak_frame(0x36, serial=7, sent=SENT, packet=(3, 2), **HEADER),
    }


@pytest.mark.parametrize("kind", list(_every_kind()))
def test_describe_prints_every_field_of_every_frame_kind(kind: str) -> None:
    frame = _every_kind()[kind]
    lines = ds.describe(frame)
    text = "\n".join(lines)
    assert lines == ds.describe(frame.hex(" ")) == ds.describe(frame.hex("-").lower())
    parsed = fr.parse_frame(frame)
    assert f"station address {HEADER['station']}" in text and "centre address 5" in text
    assert "password 1234" in text and f"function {parsed.function:02X}H" in text
    assert f"body length {len(frame) - 17}" in text
    assert lines[-1].endswith(f"computed {co.crc16(frame[:-2]):04X}: OK")
    assert "serial number " in text and "send time 2024-05-06 07:08:09 Beijing" in text
    assert not any(line.startswith("error") for line in lines)
    if parsed.downlink:
        assert "downlink (centre to station)" in text
        assert lines[2].split()[-1] == HEADER["station"]  # the station address comes first
        return
    report = fr.parse_report(parsed.body)
    for item in report.elements:
        line = next(x for x in lines if f"{item.mnemonic} ({item.identifier:02X}H)" in x)
        assert f"[{item.offset:3d}]" in line
        assert item.definition is not None
        decimals = item.decimals if item.definition.kind == "number" else None
        wire = va.encode_element(item.definition, item.value, decimals)
        assert line.split("] ", 1)[1].startswith(wire.hex(" ").upper())
    if kind != "keep-alive":
        assert "category K reservoir or lake" in text
        assert "ZU (3BH) upstream level (reservoir, sluice, station) N(·,3) in 4 B: 123.456 m" \
            in text


def test_hourly_report_groups_series_and_later_values_by_observation_time() -> None:
    frame = _every_kind()["hourly"]
    report = decode_uplink(frame)
    first = OBSERVED - timedelta(minutes=55)
    assert report.observed == first
    assert report.observed_at[0xF4] == first and report.observed_at[0xF5] == first
    assert report.observed_at[0x26] == OBSERVED and report.observed_at[0x3B] == OBSERVED
    assert report.values["DRP"][-1] == 1.5 and report.values["DRZ1"] == (1.25,) * 12
    with pytest.raises(co.EncodeError, match="ZU is not a 5-minute level element"):
        rp.hourly_frame(serial=7, sent=SENT, category=0x4B, first_observed=first,
                        rain5_mm=None, levels5_m=[0.0] * 12, observed=OBSERVED,
                        level_element="ZU", **HEADER)


def test_downlink_puts_the_station_address_first_and_parses_back() -> None:
    frame = rp.confirmation_frame(0x32, serial=9, sent=SENT, **HEADER)
    assert frame[:11] == _hex("7E 7E 00 12 34 56 78 05 12 34 32")
    assert frame[11:14] == _hex("80 08 02") and frame[-3] == co.EOT
    parsed = fr.parse_frame(frame)
    assert (parsed.downlink, parsed.centre, parsed.station) == (True, 5, "0012345678")
    nak = fr.parse_frame(_every_kind()["nak"])
    assert (nak.start, nak.packet, nak.end) == (co.SYN, (3, 2), co.NAK)


# --- Parse errors ------------------------------------------------------------------------

GOOD = _report([va.value_of("Z", 28.96)])


def _recrc(frame: bytes) -> bytes:
    return frame[:-2] + co.crc_bytes(frame[:-2])


@pytest.mark.parametrize(("frame", "field", "offset", "match"), [
    (b"\x68\x7e" + GOOD[2:], "start", 0, "expected 7E 7E, got 68 7E"),
    (GOOD[:12], "frame", 12, "short frame: 12 bytes, a frame needs at least 17"),
    (GOOD[:-3] + GOOD[-2:], "length", 11, "says 29 body bytes, so the frame is 46 bytes; 45"),
    (_recrc(GOOD[:11] + b"\x40" + GOOD[12:]), "direction", 11, "4 is neither 0"),
    (_recrc(GOOD[:13] + b"\x09" + GOOD[14:]), "start of body", 13, "09H is neither STX"),
    (_recrc(GOOD[:-3] + b"\x04" + GOOD[-2:]), "end character", 43,
     "04H does not end an uplink frame"),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "CRC", 44, "received"),
])
def test_parse_errors_name_the_field_and_byte(frame: bytes, field: str, offset: int,
                                              match: str) -> None:
    with pytest.raises(co.FrameError, match=match) as caught:
        fr.parse_frame(frame)
    assert (caught.value.field, caught.value.offset) == (field, offset)
    assert str(caught.value).startswith(f"SL 651 frame: {field} at byte {offset}:")
    lines = ds.describe(frame)
    if field in ("start", "frame", "length", "direction"):
        assert lines[-1].startswith("error: SL 651 frame:")


def test_body_errors_name_the_field_and_byte() -> None:
    bad_month = bytearray(fr.parse_frame(GOOD).body)
    bad_month[3] = 0x13
    with pytest.raises(co.FrameError, match=r"send time at byte 16: 24 13 06 07 08 09 is not"):
        fr.parse_report(bytes(bad_month))
    bad_bcd = bytearray(bad_month)
    bad_bcd[3] = 0x1A
    with pytest.raises(co.FrameError, match=r"send time at byte 17: 1A is not BCD"):
        fr.parse_report(bytes(bad_bcd))
    with pytest.raises(co.FrameError, match=r"Z \(39H\) at byte 0: data definition 23H "
                                            r"announces 4 bytes, only 2 remain"):
        va.decode_element(_hex("39 23 00 02"), 0, None)
    with pytest.raises(co.FrameError, match=r"serial and send time at byte 14: the body has 3"):
        fr.parse_report(b"\x00\x01\x24")
    truncated = ds.describe(_recrc(GOOD[:-9] + GOOD[-7:]))
    assert any(line.startswith("error:") for line in truncated)
    with pytest.raises(co.Sl651Error, match="not hex text"):
        ds.describe("7E 7E zz")


def test_frame_size_splits_a_stream() -> None:
    assert fr.frame_size(GOOD[:13]) is None
    assert fr.frame_size(GOOD[:14]) == len(GOOD) == fr.frame_size(GOOD + GOOD)
    assert fr.frame_size(b"\x7e") is None
    with pytest.raises(co.FrameError, match="start at byte 0: expected 7E 7E, got 7E 00"):
        fr.frame_size(b"\x7e\x00")


# --- Headers, times, serials -------------------------------------------------------------


def test_times_are_sent_in_beijing_time() -> None:
    utc = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert co.send_time_bytes(utc) == _hex("24 01 01 08 00 30")
    assert co.observation_time_bytes(int(utc.timestamp() * 1000)) == _hex("24 01 01 08 00")
    with pytest.raises(co.EncodeError, match="has no timezone: SL 651 sends Beijing time"):
        co.send_time_bytes(datetime(2024, 1, 1))
    with pytest.raises(co.EncodeError, match="only 2000-2099 can be sent"):
        co.send_time_bytes(datetime(1999, 12, 31, tzinfo=BJ))


@pytest.mark.parametrize(("change", "match"), [
    ({"centre": 0}, r"centre address must be an integer in 1..255, got 0"),
    ({"station": "12345"}, r"station address '12345' must be 10 hex digits"),
    ({"password": 0x10000}, r"password must be an integer in 0..65535"),
    ({"serial": 0}, r"serial number must be an integer in 1..65535, got 0"),
])
def test_header_fields_out_of_range_are_refused(change: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {**HEADER, "serial": 1, "sent": SENT, **change}
    with pytest.raises(co.EncodeError, match=match):
        rp.keep_alive_frame(**fields)  # type: ignore[arg-type]  # bad on purpose


def test_frame_level_encode_errors() -> None:
    with pytest.raises(co.EncodeError, match="end character 04H is not one an uplink frame"):
        fr.encode_frame(fr.Frame(5, "0012345678", 0, 0x32, b"", end=co.EOT))
    with pytest.raises(co.EncodeError, match="exceeds the 12-bit length field"):
        fr.encode_frame(fr.Frame(5, "0012345678", 0, 0x32, bytes(4096)))
    with pytest.raises(co.EncodeError, match="needs its packet"):
        fr.encode_frame(fr.Frame(5, "0012345678", 0, 0x32, b"", start=co.SYN))
    with pytest.raises(co.EncodeError, match="not a single-time report"):
        _report([], function=co.Function.HOURLY)
    with pytest.raises(co.EncodeError, match="a confirmation ends EOT, ESC or ACK"):
        rp.confirmation_frame(0x32, serial=1, sent=SENT, end=co.NAK, **HEADER)


def test_serial_numbers_cycle_from_1_to_65535() -> None:
    assert co.next_serial(1) == 2 and co.next_serial(65535) == 1 and co.next_serial(0) == 1
    assert rp.query_realtime_frame(sent=SENT, **HEADER)[14:16] == b"\x00\x00"


# --- Centre replies ----------------------------------------------------------------------


def test_centre_replies_are_classified() -> None:
    nak = rp.parse_centre_reply(_every_kind()["nak"])
    assert nak.kind == "nak" and nak.serial == 7 and not nak.confirms(0x36, 7)
    ack = rp.parse_centre_reply(rp.confirmation_frame(0x31, serial=4, sent=SENT, end=co.ACK,
                                                      **HEADER))
    assert ack.kind == "ack" and ack.confirms(0x31, 4) and not ack.stay_online
    empty = fr.encode_frame(fr.Frame(5, "0012345678", 0, 0x32, b"", downlink=True,
                                     end=co.EOT))
    assert rp.parse_centre_reply(empty).serial is None
    with pytest.raises(co.FrameError, match="direction at byte 11: an uplink frame is not"):
        rp.parse_centre_reply(GOOD)
    short = fr.encode_frame(fr.Frame(5, "0012345678", 0, 0x32, b"\x00\x07", downlink=True,
                                     end=co.EOT))
    with pytest.raises(co.FrameError, match="2 bytes: a reply carries 8"):
        rp.parse_centre_reply(short)


# --- Property: any value within N(x,y) survives ------------------------------------------


@st.composite
def _number_case(draw: st.DrawFn) -> tuple[el.ElementDef, int, float]:
    user = draw(st.booleans())
    if user:
        digits = draw(st.integers(1, 14))
        decimals = draw(st.integers(0, min(7, digits)))
        definition = el.ElementDef.user_defined(draw(st.integers(0xFF00, 0xFFFE)), "U",
                                                digits, decimals)
    else:
        definition = draw(st.sampled_from(NUMBER_ELEMENTS))
    decimals = draw(st.sampled_from((definition.decimals, *definition.alt_decimals)))
    digits = definition.digits - (definition.decimals - decimals)
    scaled = draw(st.integers(-(10 ** digits - 1), 10 ** digits - 1))
    jitter = draw(st.floats(-0.49, 0.49))
    return definition, decimals, (scaled + jitter) / 10 ** decimals


@settings(max_examples=300, deadline=None)
@given(_number_case())
def test_any_value_within_n_x_y_round_trips(case: tuple[el.ElementDef, int, float]) -> None:
    definition, decimals, value = case
    wire = va.encode_element(definition, value, decimals)
    expected = _expected(value, decimals)
    item, end = va.decode_element(wire, 0, None)
    assert end == len(wire) and item.value == expected
    head = 3 if definition.identifier > 0xFF else 2
    assert element_value(definition.identifier, wire[head:].hex().upper(),
                         wire[head - 1] & 7) == expected
    assert wire[head - 1] >> 3 == len(wire) - head  # the byte count covers the sign byte


# --- Over TCP, with the centre -----------------------------------------------------------


async def _exchange(centre: Sl651Centre, frame: bytes, reply_timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", centre.port)
    try:
        for i in range(0, len(frame), 7):  # split, as a slow GPRS link delivers
            writer.write(frame[i:i + 7])
            await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(14), reply_timeout)
        size = fr.frame_size(head)
        assert size is not None
        return head + await asyncio.wait_for(reader.readexactly(size - 14), reply_timeout)
    finally:
        writer.close()


def test_centre_confirms_reports_and_the_codec_recognises_the_serial() -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=5) as centre:
            frame = _report([va.value_of("ZU", 123.45, 2), va.value_of("VT", 12.6)], serial=41)
            reply = rp.parse_centre_reply(await _exchange(centre, frame))
            assert reply.confirms(co.Function.TIMED, 41) and reply.end == EOT
            assert reply.frame.station == "0012345678" and reply.frame.password == 0x1234
            [got] = await centre.wait_for(1)
            assert (got.function, got.serial, got.body_station, got.category) == (
                0x32, 41, "0012345678", "K")
            assert got.values == {"ZU": 123.45, "VT": 12.6} and got.observed == OBSERVED
            centre.set_mode("confirm", end=ESC)
            reply = rp.parse_centre_reply(await _exchange(centre, _report([], serial=42)))
            assert reply.stay_online and reply.confirms(0x32, 42)
    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["silent", "bad_crc", "nak"])
def test_centre_misbehaves_as_told(mode: str) -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=5, mode=mode) as centre:  # type: ignore[arg-type]  # the parametrized modes are valid
            frame = _report([va.value_of("Z", 1.0)], serial=3)
            if mode == "silent":
                with pytest.raises(TimeoutError):
                    await _exchange(centre, frame, reply_timeout=0.3)
                assert len(await centre.wait_for(1)) == 1
                return
            reply = await _exchange(centre, frame)
            if mode == "bad_crc":
                with pytest.raises(co.FrameError, match="CRC at byte 23: received"):
                    rp.parse_centre_reply(reply)
            else:
                parsed = rp.parse_centre_reply(reply)
                assert parsed.kind == "nak" and not parsed.confirms(0x32, 3)
    asyncio.run(scenario())


def test_centre_ignores_keep_alives_and_refuses_bad_frames() -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=5) as centre:
            keep = rp.keep_alive_frame(serial=9, sent=SENT, **HEADER)
            broken = GOOD[:-1] + bytes([GOOD[-1] ^ 1])
            with pytest.raises(TimeoutError):
                await _exchange(centre, b"junk" + keep + broken, reply_timeout=0.3)
            assert [r.function for r in await centre.wait_for(1, function=0x2F)] == [0x2F]
            assert centre.reports() == [] and centre.sent == []
            assert centre.rejected[0].startswith("garbage 6a756e6b")
            assert "CRC" in centre.rejected[1]
    asyncio.run(scenario())


def test_centre_query_reaches_the_station_and_parses_as_a_command() -> None:
    async def scenario() -> None:
        async with Sl651Centre(address=5) as centre:
            reader, writer = await asyncio.open_connection("127.0.0.1", centre.port)
            writer.write(rp.keep_alive_frame(serial=9, sent=SENT, **HEADER))
            await writer.drain()
            await centre.wait_for(1, function=0x2F)
            sent = await centre.query_realtime()
            received = await asyncio.wait_for(reader.readexactly(len(sent)), 2)
            query = rp.parse_centre_reply(received)
            assert (query.kind, query.function, query.serial) == ("command", 0x37, 0)
            assert query.frame.station == "0012345678"
            answer = _report([va.value_of("ZU", 101.5)], function=co.Function.QUERY_REALTIME,
                             serial=10)
            writer.write(answer)
            await writer.drain()
            [got] = await centre.wait_for(1, function=0x37)
            assert got.values == {"ZU": 101.5}
            writer.close()
    asyncio.run(scenario())
