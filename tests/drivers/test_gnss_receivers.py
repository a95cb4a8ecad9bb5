"""What real GNSS receivers print, turned into epochs (issue #14).

The lines below are recorded output of real receivers, quoted from gpsd's regression logs
(test/daemon/*.log in the gpsd project, BSD-2-clause); each group names its file. Where a
test needs a variant a receiver was reported to send but no log holds, it is derived from a
recorded line and says so.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from drivers.gnss import IntervalEpochs
from drivers.nmea import (
    GnssBaseline,
    NmeaError,
    UnacceptedTalker,
    gga_displacement,
    gga_rejection,
    nmea_checksum,
    parse_gga,
    parse_rmc,
    parse_sentence,
)

# gpsd test/daemon/beidou-bd.log (SiRF-TriG, 2015-02-25): GNGGA with a 15th field after
# the differential station id. The first four are quality 0 without position.
BEIDOU_BD = [
    "$GNGGA,074150.799,,,,,0,00,,,M,0.0,M,,0000,*64",
    "$GNRMC,074150.799,V,,,,,,,250215,,,N*52",
    "$GNGGA,074155.799,3114.8770,N,12135.2463,E,1,05,1.3,156.9,M,8.3,M,,0000,4.9*77",
    "$GNRMC,074155.799,A,3114.8770,N,12135.2463,E,0.30,4.94,250215,,,A*76",
    "$GNGGA,074156.799,3114.8950,N,12135.2442,E,1,07,1.1,190.7,M,8.3,M,,0000,1.8*7B",
    "$GNGGA,074157.799,3114.8902,N,12135.2443,E,1,07,1.1,192.9,M,8.3,M,,0000,1.8*70",
    "$GNGGA,074158.799,3114.8953,N,12135.2439,E,1,07,1.1,198.5,M,8.3,M,,0000,1.8*70",
    "$GNGGA,074159.799,3114.8943,N,12135.2444,E,1,07,1.1,196.4,M,8.3,M,,0000,1.8*75",
]
BEIDOU_BASELINE = {"lat_deg": 31.24795, "lon_deg": 121.587438, "height_m": 165.2}

# gpsd test/daemon/bn-9015.log (Skytraq Venus 6): quality 0, yet a position.
BN_9015_INVALID = [
    "$GPGGA,170958.972,5200.8499,N,00421.7860,E,0,00,0.0,48.8,M,0.0,M,,0000*52",
    "$GPGGA,170959.972,5200.8499,N,00421.7860,E,0,00,0.0,48.8,M,0.0,M,,0000*53",
    "$GPGGA,171000.972,5200.8499,N,00421.7860,E,0,00,0.0,48.8,M,0.0,M,,0000*57",
]
BN_9015_BASELINE = {"lat_deg": 52.014165, "lon_deg": 4.363100, "height_m": 48.8}

# gpsd test/daemon/sirfstarv-nmea.log (SiRFstarV): every epoch as GPGGA and as GLGGA.
SIRFSTARV = [
    "$GPGGA,020935.000,4404.1351,N,12118.8556,W,1,08,0.9,1123.9,M,-19.6,M,,0000*5E",
    "$GLGGA,020935.000,4404.1351,N,12118.8556,W,1,02,0.9,1123.9,M,-19.6,M,,0000*48",
    "$GPGGA,020936.000,4404.1351,N,12118.8557,W,1,08,0.9,1123.9,M,-19.6,M,,0000*5C",
    "$GLGGA,020936.000,4404.1351,N,12118.8557,W,1,02,0.9,1123.9,M,-19.6,M,,0000*4A",
]
SIRFSTARV_BASELINE = {"lat_deg": 44.068918, "lon_deg": -121.314260, "height_m": 1104.3}

# gpsd test/daemon/telit-pls83-w.log (Telit PLS83-W): Galileo's own GGA beside GPGGA.
TELIT_GALILEO = "$GAGGA,043539.00,4333.190206,N,00127.618380,E,1,01,1.3,250.8,M,50.0,M,,*77"

# gpsd test/daemon/nmea-rtk.log (Trimble, RTK): quality 4 at 10 Hz.
TRIMBLE_RTK = [
    "$GNGGA,133859.80,4134.50180205,N,09345.03586649,W,4,19,0.7,280.827,M,-31.442,M,5.8,0002*6D",
    "$GNGGA,133859.90,4134.50180209,N,09345.03586633,W,4,19,0.7,280.828,M,-31.442,M,5.9,0002*63",
    "$GNGGA,133900.00,4134.50180323,N,09345.03586581,W,4,19,0.7,280.827,M,-31.442,M,6.0,0002*61",
]
TRIMBLE_BASELINE = {"lat_deg": 41.5750300, "lon_deg": -93.7505978, "height_m": 249.385}


def retalked(line: str, talker: str) -> str:
    """The same sentence under another talker, checksum recomputed (derived, not recorded)."""
    body = talker + line[3 : line.index("*")]
    return f"${body}*{nmea_checksum(body):02X}"


class Counters(dict[str, int]):
    def __call__(self, name: str) -> None:
        self[name] = self.get(name, 0) + 1


def interval(baseline: dict[str, object], lines: list[str]) -> tuple[IntervalEpochs, Counters]:
    counters = Counters()
    epochs = IntervalEpochs(GnssBaseline.model_validate(baseline), counters)
    for i, line in enumerate(lines):
        epochs.take(line + "\r\n", 1_700_000_000_000 + 100 * i)
    return epochs, counters


# --- a 15th field ----------------------------------------------------------------------------


def test_beidou_gga_with_a_15th_field_is_parsed() -> None:
    fix = parse_gga(BEIDOU_BD[2])
    assert fix.talker == "GN"
    assert fix.lat_deg == pytest.approx(31 + 14.8770 / 60, abs=1e-12)
    assert fix.lon_deg == pytest.approx(121 + 35.2463 / 60, abs=1e-12)
    assert (fix.fix_quality, fix.satellites, fix.hdop) == (1, 5, 1.3)
    assert fix.ellipsoidal_height_m == pytest.approx(165.2)
    assert fix.differential_station_id == "0000"


def test_beidou_receiver_gives_a_displacement() -> None:
    epochs, counters = interval(BEIDOU_BASELINE, BEIDOU_BD)
    outcome = epochs.close()
    assert outcome.mean is not None
    assert outcome.mean.epochs == 5
    # Quality 1 is not the RTK fixed the baseline requires: averaged, but suspect.
    assert outcome.mean.suspect_reason == "fix_not_rtk: quality 1 (gps)"
    assert "rejected_sentences" not in counters


def test_gga_still_needs_its_fourteen_fields() -> None:
    short = BEIDOU_BD[2][1 : BEIDOU_BD[2].index(",0000,")]
    with pytest.raises(NmeaError, match="GGA must have at least 14 fields, got 13"):
        parse_gga(f"${short}*{nmea_checksum(short):02X}")


def test_rmc_with_a_field_after_the_navigational_status_is_parsed() -> None:
    # Derived: a 4.1 RMC (gpsd's beidou-bd.log line above has 12 fields) with two appended.
    body = "GNRMC,074155.799,A,3114.8770,N,12135.2463,E,0.30,4.94,250215,,,A,V,extra"
    fix = parse_rmc(f"${body}*{nmea_checksum(body):02X}")
    assert fix.valid and fix.mode == "A"


# --- quality 0 -------------------------------------------------------------------------------


def test_quality_0_with_a_position_is_never_averaged() -> None:
    epochs, counters = interval(BN_9015_BASELINE, BN_9015_INVALID)
    outcome = epochs.close()
    assert outcome.mean is None
    assert outcome.no_fix == "no_fix: all 3 positioned GGA rejected: 3× fix quality 0 (invalid)"
    assert counters["epochs_invalid_fix"] == 3


def test_quality_0_beside_lesser_fixes_does_not_move_their_mean() -> None:
    # The invalid fixes sit ~80 m from the quality-1 ones; averaging them in would show it.
    lines = [*BN_9015_INVALID, *SIRFSTARV[::2]]
    epochs, _ = interval(SIRFSTARV_BASELINE, lines)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 2
    assert mean.values["fix_quality"] == 1.0
    assert abs(mean.values["north_mm"] or math.inf) < 100.0


def test_gga_displacement_refuses_quality_0() -> None:
    baseline = GnssBaseline.model_validate(BN_9015_BASELINE)
    with pytest.raises(NmeaError, match="fix quality 0 \\(invalid\\)"):
        gga_displacement(parse_gga(BN_9015_INVALID[0]), baseline)


def test_quality_0_cannot_be_required() -> None:
    with pytest.raises(ValidationError, match="fix quality 0 means no fix"):
        GnssBaseline.model_validate({**BN_9015_BASELINE, "required_fix_quality": [0, 4]})


# --- one epoch, several talkers --------------------------------------------------------------


def test_the_same_epoch_under_several_talkers_counts_once() -> None:
    first, second = SIRFSTARV[0], SIRFSTARV[2]
    # Derived: the first epoch also as GNGGA and GBGGA, moved 1 m north, as a receiver
    # printing its GPS-only and combined solutions would; only the first one counts.
    moved = first.replace("4404.1351,N", "4404.1356,N")
    lines = [first, retalked(moved, "GN"), retalked(moved, "GB"), second]
    epochs, counters = interval(SIRFSTARV_BASELINE, lines)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 2
    assert counters["epochs_repeated"] == 2
    baseline = GnssBaseline.model_validate(SIRFSTARV_BASELINE)
    expected = (gga_displacement(parse_gga(first), baseline).north_mm
                + gga_displacement(parse_gga(second), baseline).north_mm) / 2
    assert mean.values["north_mm"] == pytest.approx(expected, abs=1e-9)


def test_a_repeat_that_passes_the_gates_stands_in_for_one_that_failed() -> None:
    # Derived: the GP solution of an epoch with 4 satellites, the GN one with all 8.
    first = SIRFSTARV[0]
    lines = [retalked(first.replace(",08,", ",04,"), "GP"), retalked(first, "GN")]
    epochs, counters = interval(SIRFSTARV_BASELINE, lines)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 1 and mean.values["satellites"] == 8.0
    assert counters == {"epochs_few_satellites": 1}


def test_repeats_are_recognised_across_a_poll() -> None:
    epochs, counters = interval(SIRFSTARV_BASELINE, [SIRFSTARV[0]])
    assert epochs.close().mean is not None
    epochs.take(retalked(SIRFSTARV[0], "GN"), 0)
    outcome = epochs.close()
    assert outcome.mean is None and counters["epochs_repeated"] == 1


# --- talkers not accepted --------------------------------------------------------------------


@pytest.mark.parametrize(("lines", "talker"), [(SIRFSTARV[1::2], "GL"), ([TELIT_GALILEO], "GA")])
def test_gga_from_a_talker_not_accepted_is_reported_as_such(lines: list[str], talker: str) -> None:
    epochs, counters = interval(SIRFSTARV_BASELINE, lines)
    outcome = epochs.close()
    assert outcome.mean is None
    assert outcome.no_fix == (
        f"no_fix: GGA only from talker '{talker}', not accepted (accepted: BD, GB, GN, GP)"
    )
    assert counters == {"unaccepted_talker": len(lines)}


def test_unaccepted_talker_is_its_own_error() -> None:
    with pytest.raises(UnacceptedTalker) as raised:
        parse_sentence(SIRFSTARV[1])
    assert (raised.value.talker, raised.value.sentence_type) == ("GL", "GGA")


def test_accepted_gga_beside_unaccepted_ones_is_averaged() -> None:
    epochs, counters = interval(SIRFSTARV_BASELINE, SIRFSTARV)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 2
    assert counters == {"unaccepted_talker": 2}


# --- satellite and HDOP gates ----------------------------------------------------------------


def test_real_rtk_fixes_pass_the_default_gates() -> None:
    epochs, counters = interval(TRIMBLE_BASELINE, TRIMBLE_RTK)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 3 and mean.suspect_reason is None
    assert counters == {}


def test_default_gates() -> None:
    baseline = GnssBaseline.model_validate(TRIMBLE_BASELINE)
    assert (baseline.min_satellites, baseline.max_hdop) == (5, 6.0)
    fix = parse_gga(TRIMBLE_RTK[0])
    assert gga_rejection(fix, baseline) is None
    # Derived from the Trimble line: 4 satellites, then HDOP 6.1.
    few = parse_gga(retalked(TRIMBLE_RTK[0].replace(",4,19,", ",4,04,"), "GN"))
    rejection = gga_rejection(few, baseline)
    assert rejection is not None and rejection.reason == "epochs_few_satellites"
    assert rejection.detail == "4 satellites < min_satellites 5"
    poor = parse_gga(retalked(TRIMBLE_RTK[0].replace(",0.7,", ",6.1,"), "GN"))
    rejection = gga_rejection(poor, baseline)
    assert rejection is not None and rejection.reason == "epochs_high_hdop"
    assert rejection.detail == "HDOP 6.1 > max_hdop 6"


def test_gates_reject_and_count_by_reason() -> None:
    # beidou-bd.log: 5 satellites at HDOP 1.3, then 7 at 1.1.
    epochs, counters = interval({**BEIDOU_BASELINE, "min_satellites": 6, "max_hdop": 1.05},
                                BEIDOU_BD)
    outcome = epochs.close()
    assert outcome.mean is None
    assert counters["epochs_few_satellites"] == 1
    assert counters["epochs_high_hdop"] == 4
    assert outcome.no_fix == (
        "no_fix: all 5 positioned GGA rejected: 1× 5 satellites < min_satellites 6; "
        "4× HDOP 1.1 > max_hdop 1.05"
    )
    epochs, counters = interval({**BEIDOU_BASELINE, "min_satellites": 6, "max_hdop": 1.1},
                                BEIDOU_BD)
    mean = epochs.close().mean
    assert mean is not None and mean.epochs == 4
    assert mean.values["satellites"] == 7.0 and mean.values["hdop"] == 1.1


def test_missing_satellites_or_hdop_fail_a_gate_that_is_on() -> None:
    # gpsd test/daemon/ch-4711.log (CH-4711) leaves both empty; derived: quality 1.
    body = "GPGGA,135658.997,5543.0326,N,03724.7205,E,1,,,165.6,M,14.6,M,,"
    line = f"${body}*{nmea_checksum(body):02X}"
    place = {"lat_deg": 55.717, "lon_deg": 37.412, "height_m": 180.2}
    fix = parse_gga(line)
    on = GnssBaseline.model_validate(place)
    rejection = gga_rejection(fix, on)
    assert rejection is not None
    assert rejection.detail == "no satellite count (min_satellites 5)"
    no_count = GnssBaseline.model_validate({**place, "min_satellites": 0})
    rejection = gga_rejection(fix, no_count)
    assert rejection is not None and rejection.detail == "no HDOP (max_hdop 6)"
    off = GnssBaseline.model_validate({**place, "min_satellites": 0, "max_hdop": None})
    assert gga_rejection(fix, off) is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"min_satellites": -1}, "greater than or equal to 0"),
        ({"min_satellites": 2.5}, "valid integer"),
        ({"max_hdop": 0}, "greater than 0"),
        ({"max_hdop": math.nan}, "finite number"),
        ({"max_hdop": math.inf}, "finite number"),
    ],
)
def test_bad_gates_rejected(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GnssBaseline.model_validate({**TRIMBLE_BASELINE, **extra})
