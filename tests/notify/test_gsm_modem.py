"""The modem driver against the simulated modem on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from pydantic import ValidationError

from drivers.gsm_modem import (
    GsmModem,
    IncomingText,
    ModemConfig,
    SendErrorKind,
    cme_reason,
    cms_reason,
    csq_to_dbm,
)
from drivers.smspdu import encode_deliver
from simulator.modem import ModemFault, SimulatedModem
from tests.notify import independent

ALARM = "【某某水库】库水位 123.62m 超汛限水位 123.50m（报警）2026-07-01 14:05 回复1确认"
LONG_ALARM = (
    ALARM + "；" + ALARM.replace("库水位", "坝基渗压计P3") + "；请立即巡查大坝下游坡面及溢洪道。"
)
KEEPER = "+8613800138000"
REPLIER = "+8613912345678"


class Replies:
    """The on_text callback: keeps what arrives, or fails as a broken store would."""

    def __init__(self) -> None:
        self.texts: list[IncomingText] = []
        self.failing = False

    async def __call__(self, text: IncomingText) -> None:
        if self.failing:
            raise RuntimeError("outbox is read-only")
        self.texts.append(text)


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "usb-Quectel_EC25-if02-port0"


@pytest.fixture
def sim(link: Path) -> Iterator[SimulatedModem]:
    with SimulatedModem(link, first_reference=40) as modem:
        yield modem


def config(link: Path, **overrides: Any) -> ModemConfig:
    values: dict[str, Any] = {
        "port": str(link), "command_timeout_s": 0.5, "send_timeout_s": 2, **overrides
    }
    return ModemConfig.model_validate(values)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def run(
    link: Path, scenario: Callable[[GsmModem, Replies], Awaitable[None]], **overrides: Any
) -> None:
    async def main() -> None:
        replies = Replies()
        modem = GsmModem(config(link, **overrides), replies)
        await modem.start()
        try:
            await asyncio.wait_for(scenario(modem, replies), 15)
        finally:
            await modem.stop()

    asyncio.run(main())


# -- set-up and health ------------------------------------------------------------------------


def test_set_up_dialogue_and_health(sim: SimulatedModem, link: Path) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        health = modem.health()
        assert health.port == str(link) and health.port_open
        assert health.state == "ready" and health.sim == "ready"
        assert health.registration == "registered_home" and health.registered
        assert health.signal_dbm == -113 + 2 * 20
        assert health.last_error is None and health.sent == health.failed == 0
        assert sim.commands[:11] == [
            "AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", "AT+CNMI=2,1,0,0,0",
            "AT+CREG=1", "AT+CEREG=1", "AT+CREG?", "AT+CEREG?", "AT+CSQ",
        ]
        await wait_until(lambda: "AT+CMGL=4" in sim.commands, "the first listing")
        # A change of registration is reported by the modem, not polled.
        sim.set_registration(5)
        await wait_until(lambda: modem.health().registration == "registered_roaming", "roaming")
        assert modem.health().registered
        # Signal is measured at every status check.
        sim.set_signal(31)
        await wait_until(lambda: modem.health().signal_dbm == -51, "-51 dBm")
        sim.set_signal(99)
        await wait_until(lambda: modem.health().signal_dbm is None, "unknown signal")

    run(link, scenario, status_interval_s=0.2)


def test_signal_and_registration_codes() -> None:
    assert [csq_to_dbm(r) for r in (0, 1, 15, 31, 99, 100, 191, 199)] == [
        -113, -111, -83, -51, None, -116, -25, None,
    ]
    assert cms_reason(500) == ("unknown error", True)
    assert cms_reason(330) == ("SMSC address unknown", False)
    assert cms_reason(38) == ("network out of order", True)
    assert cms_reason(1) == ("unassigned (unallocated) number", False)
    assert cms_reason(60) == ("network refused the message (RP cause 60)", True)
    assert cms_reason(200) == ("service centre refused the message (TP failure cause 200)", False)
    assert cms_reason(530) == ("manufacturer-specific error 530", True)
    assert cme_reason(10) == ("SIM not inserted", False)
    assert cme_reason(30) == ("no network service", True)


def test_config_is_strict_and_names_what_is_wrong(link: Path) -> None:
    parsed = ModemConfig.model_validate(
        {"port": str(link), "send_timeout_s": "2min", "smsc": "+86 138 0010 0500"}
    )
    assert parsed.send_timeout_s == 120 and parsed.smsc == "+8613800100500"
    assert parsed.baudrate == 115200 and parsed.command_timeout_s == 5
    with pytest.raises(ValidationError, match="smsc 'operator' is not a phone number"):
        ModemConfig.model_validate({"port": str(link), "smsc": "operator"})
    with pytest.raises(ValidationError, match="baud_rate"):
        ModemConfig.model_validate({"port": str(link), "baud_rate": 9600})
    with pytest.raises(ValidationError, match="max_parts"):
        ModemConfig.model_validate({"port": str(link), "max_parts": 0})


# -- sending ----------------------------------------------------------------------------------


def test_chinese_alarm_is_sent_as_ucs2_and_decodes_to_the_same_text(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.ok, outcome.error
        assert (outcome.parts, outcome.encoding, outcome.references) == (1, "ucs2", (40,))
        (part,) = sim.sent_parts
        fields = independent.submit(part.pdu)
        assert fields["user_data"]["data"] == ALARM
        assert fields["recipient"]["number"] == KEEPER.lstrip("+")
        assert fields["dcs"]["encoding"] == "ucs2"
        health = modem.health()
        assert (health.sent, health.failed, health.parts_sent) == (1, 0, 1)

    run(link, scenario)


def test_long_chinese_text_goes_as_concatenated_parts_in_order(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        first = await modem.send(KEEPER, LONG_ALARM)
        second = await modem.send(KEEPER, LONG_ALARM)
        assert first.ok and second.ok
        parts = -(-len(LONG_ALARM) // 67)
        assert first.parts == parts >= 3
        assert first.references == tuple(range(40, 40 + parts))
        assert second.references == tuple(range(40 + parts, 40 + 2 * parts))
        texts = sim.sent
        assert len(texts) == 2 and all(t.complete and t.text == LONG_ALARM for t in texts)
        pdus = [p.pdu for p in texts[0].parts]
        headers = [independent.concat_of(independent.submit(p)) for p in pdus]
        assert [h["part_number"] for h in headers if h] == list(range(1, parts + 1))
        assert independent.submit_text(list(reversed(pdus))) == LONG_ALARM
        # Two long texts to one keeper must not share a concatenation reference.
        refs = {p.concat.reference for t in texts for p in t.parts if p.concat}
        assert len(refs) == 2

    run(link, scenario)


def test_english_text_is_sent_as_gsm_7_bit(sim: SimulatedModem, link: Path) -> None:
    text = "Reservoir X: level 123.62m above flood limit 123.50m (ALARM). Reply 1 to confirm"

    async def scenario(modem: GsmModem, _: Replies) -> None:
        outcome = await modem.send("13800138000", text)
        assert outcome.ok and outcome.encoding == "gsm7" and outcome.parts == 1
        fields = independent.submit(sim.sent_parts[0].pdu)
        assert fields["dcs"]["encoding"] == "gsm"
        assert fields["user_data"]["data"] == text
        assert fields["recipient"]["number"] == "13800138000"

    run(link, scenario)


def test_configured_smsc_goes_in_the_pdu_and_the_modem_accepts_the_length(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.ok, outcome.error
        assert independent.submit(sim.sent_parts[0].pdu)["smsc"]["number"] == "8613800100500"

    run(link, scenario, smsc="+8613800100500")


def test_cms_error_500_gives_a_classified_failure_and_last_error(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        sim.set_fault(ModemFault.SEND_ERROR)
        outcome = await modem.send(KEEPER, ALARM)
        assert not outcome.ok and outcome.error is not None
        assert outcome.error.kind is SendErrorKind.CMS_ERROR
        assert (outcome.error.code, outcome.error.reason) == (500, "unknown error")
        assert outcome.error.retryable and outcome.references == ()
        assert str(outcome.error) == "cms_error 500: unknown error"
        health = modem.health()
        assert health.failed == 1 and health.sent == 0
        assert health.last_error == "send: cms_error 500: unknown error"
        assert health.last_error_ms is not None and health.last_error_ms > 0
        # A long text fails at its first part, and says which.
        long = await modem.send(KEEPER, LONG_ALARM)
        assert long.error is not None and long.error.part == 1
        sim.set_fault(ModemFault.SEND_ERROR, False)
        assert (await modem.send(KEEPER, ALARM)).ok
        assert modem.health().sent == 1 and modem.health().state == "ready"

    run(link, scenario)


def test_a_silent_modem_times_out_clearly_and_blocks_nothing(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        sim.set_fault(ModemFault.SILENT)
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None and outcome.error.kind is SendErrorKind.TIMEOUT
        assert outcome.error.reason == "no answer to AT+CMGS=128 within 0.5 s"
        assert outcome.error.retryable
        assert 0.45 < outcome.elapsed_s < 1.0
        # Until the modem answers a probe again, sends fail at once instead of each waiting.
        quick = await modem.send(KEEPER, ALARM)
        assert quick.error is not None and quick.error.kind is SendErrorKind.UNRESPONSIVE
        assert quick.elapsed_s < 0.1
        assert modem.health().state == "unresponsive"
        ticking.cancel()
        assert max(gaps) < 0.1  # the event loop went on the whole time
        sim.set_fault(ModemFault.SILENT, False)
        await wait_until(lambda: modem.state == "ready", "the modem answering again")
        assert (await modem.send(KEEPER, ALARM)).ok
        assert sim.cancelled_sends == 0  # it heard neither the command nor the ESC

    run(link, scenario)


def test_no_acceptance_within_send_timeout_and_the_late_one_is_counted(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        sim.send_delay_s = 0.6
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None and outcome.error.kind is SendErrorKind.TIMEOUT
        assert outcome.error.reason == "no answer to AT+CMGS=128 within 0.3 s"
        await wait_until(
            lambda: modem.health().counters.get("late_send_confirmations") == 1,
            "the late +CMGS",
        )
        sim.send_delay_s = 0.0
        await wait_until(lambda: modem.state == "ready", "ready again")
        assert (await modem.send(KEEPER, ALARM)).ok

    run(link, scenario, send_timeout_s=0.3)


def test_sends_queue_behind_each_other(sim: SimulatedModem, link: Path) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        sim.send_delay_s = 0.3
        first = asyncio.create_task(modem.send(KEEPER, ALARM))
        second = asyncio.create_task(modem.send("+8613700000000", ALARM))
        await wait_until(lambda: modem.health().queued == 1, "one send waiting")
        outcomes = await asyncio.gather(first, second)
        assert all(o.ok for o in outcomes)
        assert [o.references for o in outcomes] == [(40,), (41,)]
        assert modem.health().queued == 0

    run(link, scenario)


def test_invalid_number_or_text_fails_without_touching_the_modem(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        bad = await modem.send("keeper-1", ALARM)
        assert bad.error is not None and bad.error.kind is SendErrorKind.INVALID_NUMBER
        assert "'keeper-1' is not a phone number" in bad.error.reason
        assert not bad.error.retryable and bad.parts == 0
        empty = await modem.send(KEEPER, "")
        assert empty.error is not None and empty.error.kind is SendErrorKind.INVALID_TEXT
        too_long = await modem.send(KEEPER, ALARM * 20)
        assert too_long.error is not None and "more than max_parts=10" in too_long.error.reason
        assert not any(c.startswith("AT+CMGS") for c in sim.commands)

    run(link, scenario)


# -- the link coming and going ----------------------------------------------------------------


def test_unplugged_modem_is_reopened_by_path_and_sends_again(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        assert (await modem.send(KEEPER, ALARM)).ok
        sim.unplug()
        await wait_until(lambda: not modem.health().port_open, "the port to be lost")
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None
        assert outcome.error.kind is SendErrorKind.PORT_UNAVAILABLE and outcome.error.retryable
        assert outcome.elapsed_s < 0.1
        assert modem.health().state == "closed"
        await asyncio.sleep(0.6)  # a failed re-open or two while the link is gone
        sim.plug()
        await wait_until(lambda: modem.state == "ready", "the modem back", timeout=5)
        health = modem.health()
        assert health.port_open and health.reopens == 1
        assert sim.commands.count("ATE0") == 2  # set up again from scratch
        assert (await modem.send(KEEPER, ALARM)).ok
        assert len(sim.sent) == 2

    run(link, scenario)


def test_rebooted_modem_is_set_up_again_and_indications_work(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, replies: Replies) -> None:
        sim.reboot(down_s=0.3)
        await wait_until(lambda: sim.commands.count("ATE0") == 2, "a second set-up", timeout=5)
        await wait_until(lambda: modem.state == "ready", "ready after the reboot")
        # The rebooted modem forgot AT+CNMI: a +CMTI now proves the driver set it again.
        sim.deliver(REPLIER, "1")
        await wait_until(lambda: len(replies.texts) == 1, "the reply")
        assert sim.boots == 2

    run(link, scenario)


def test_modem_that_restarts_in_place_is_set_up_again(sim: SimulatedModem, link: Path) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        sim.restart_in_place()  # says RDY, echo back on, PDU mode and indications gone
        await wait_until(lambda: sim.commands.count("ATE0") == 2, "a second set-up")
        await wait_until(lambda: modem.state == "ready", "ready")
        assert modem.health().counters["modem_restarts"] == 1
        assert (await modem.send(KEEPER, ALARM)).ok

    run(link, scenario)


def test_modem_missing_at_start_is_picked_up_when_it_appears(tmp_path: Path) -> None:
    link = tmp_path / "usb-SIMCOM_SIM7600-if02-port0"

    async def scenario(modem: GsmModem, _: Replies) -> None:
        health = modem.health()
        assert not health.port_open and health.state == "closed"
        assert health.last_error == f"{link} not found"
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None
        assert outcome.error.kind is SendErrorKind.PORT_UNAVAILABLE
        assert outcome.error.reason == f"{link} not found"
        with SimulatedModem(link) as late:
            await wait_until(lambda: modem.state == "ready", "the modem", timeout=5)
            assert (await modem.send(KEEPER, ALARM)).ok
            assert len(late.sent) == 1
            assert modem.health().reopens == 0  # first open, not a re-open

    run(link, scenario)


# -- SIM and network --------------------------------------------------------------------------


def test_no_sim_is_reported_and_sends_fail_until_one_is_inserted(
    sim: SimulatedModem, link: Path
) -> None:
    sim.set_fault(ModemFault.NO_SIM)

    async def scenario(modem: GsmModem, _: Replies) -> None:
        health = modem.health()
        assert (health.state, health.sim) == ("sim_not_ready", "absent")
        assert health.last_error == "setup: SIM not inserted (cme_error 10)"
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None
        assert outcome.error.kind is SendErrorKind.SIM_NOT_READY
        assert outcome.error.reason == "SIM not inserted (cme_error 10)"
        assert not outcome.error.retryable
        sim.set_fault(ModemFault.NO_SIM, False)
        await wait_until(lambda: modem.state == "ready", "the SIM found", timeout=5)
        assert modem.health().sim == "ready"
        assert (await modem.send(KEEPER, ALARM)).ok

    run(link, scenario)


def test_sim_asking_for_a_pin_is_reported_as_such(sim: SimulatedModem, link: Path) -> None:
    sim.set_fault(ModemFault.PIN_LOCKED)

    async def scenario(modem: GsmModem, _: Replies) -> None:
        assert (modem.health().state, modem.health().sim) == ("sim_not_ready", "pin_required")
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None and outcome.error.reason == "SIM PIN required"

    run(link, scenario)


@pytest.mark.parametrize(
    ("stat", "registration", "retryable"), [(2, "searching", True), (3, "denied", False)]
)
def test_not_registered_is_reported_and_sends_wait_for_the_network(
    link: Path, stat: int, registration: str, retryable: bool
) -> None:
    with SimulatedModem(link, unregistered_stat=stat) as sim:
        sim.set_fault(ModemFault.NOT_REGISTERED)

        async def scenario(modem: GsmModem, _: Replies) -> None:
            health = modem.health()
            assert health.state == "ready"  # the modem itself is fine
            assert (health.registration, health.registered) == (registration, False)
            outcome = await modem.send(KEEPER, ALARM)
            assert outcome.error is not None
            assert outcome.error.kind is SendErrorKind.NOT_REGISTERED
            assert outcome.error.reason == f"modem not registered to a network ({registration})"
            assert outcome.error.retryable is retryable
            assert not any(c.startswith("AT+CMGS") for c in sim.commands)
            sim.set_fault(ModemFault.NOT_REGISTERED, False)  # reported as +CREG: 1
            await wait_until(lambda: modem.health().registered, "registration")
            assert (await modem.send(KEEPER, ALARM)).ok

        run(link, scenario)


# -- incoming texts ---------------------------------------------------------------------------


def test_incoming_reply_is_read_decoded_and_deleted(sim: SimulatedModem, link: Path) -> None:
    stamp = datetime(2026, 7, 1, 14, 9, 30, tzinfo=timezone(timedelta(hours=8)))

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        await wait_until(lambda: "AT+CMGL=4" in sim.commands, "the first listing")
        (index,) = sim.deliver(REPLIER, "1 收到", stamp)
        await wait_until(lambda: len(replies.texts) == 1, "the reply")
        reply = replies.texts[0]
        assert (reply.sender, reply.text, reply.sent_at) == (REPLIER, "1 收到", stamp)
        assert reply.sent_at_ms == int(stamp.timestamp() * 1000)
        assert reply.complete and reply.parts == 1
        await wait_until(lambda: not sim.stored(), "the store emptied")
        assert f"AT+CMGR={index}" in sim.commands and f"AT+CMGD={index}" in sim.commands
        assert modem.health().received == 1

    run(link, scenario)


def test_texts_stored_before_start_and_concatenated_replies_are_read(
    sim: SimulatedModem, link: Path
) -> None:
    long_reply = "收到。" + "我已到达大坝，正在检查下游坡面渗水情况，" * 5 + "稍后回报。"
    sim.deliver(REPLIER, "1")  # before the gateway is there: no indication asked for yet
    sim.deliver("+8613600000000", long_reply)
    assert len(sim.stored()) == 1 + -(-len(long_reply) // 67)

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        await wait_until(lambda: len(replies.texts) == 2, "both texts")
        by_sender = {t.sender: t for t in replies.texts}
        assert by_sender[REPLIER].text == "1"
        assert by_sender["+8613600000000"].text == long_reply
        assert by_sender["+8613600000000"].parts == -(-len(long_reply) // 67)
        await wait_until(lambda: not sim.stored(), "the store emptied")
        assert not any(c.startswith("AT+CMGR") for c in sim.commands)  # all by the listing

    run(link, scenario)


def test_a_failing_receiver_leaves_the_text_stored_until_it_takes_it(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, replies: Replies) -> None:
        replies.failing = True
        sim.deliver(REPLIER, "1")
        await wait_until(
            lambda: modem.health().counters.get("incoming_handler_errors", 0) >= 1, "a failure"
        )
        assert len(sim.stored()) == 1
        assert modem.health().last_error == "on_text: RuntimeError: outbox is read-only"
        replies.failing = False
        await wait_until(lambda: len(replies.texts) == 1, "the text on a later listing")
        await wait_until(lambda: not sim.stored(), "the store emptied")

    run(link, scenario, status_interval_s=0.2)


def test_a_stored_pdu_that_does_not_decode_is_counted_and_removed(
    sim: SimulatedModem, link: Path
) -> None:
    sim.store_raw("0006D60B911326880736F4111011719551401110117195714000")  # a status report
    sim.store_raw("00040B91")  # cut short

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        await wait_until(lambda: not sim.stored(), "the store emptied")
        assert modem.health().counters["undecodable_texts"] == 2
        assert replies.texts == []
        assert modem.state == "ready"

    run(link, scenario)


def test_unsolicited_and_garbage_lines_inside_a_send_do_not_confuse_it(
    sim: SimulatedModem, link: Path
) -> None:
    stamp = datetime(2026, 7, 1, 6, 10, tzinfo=UTC)
    index = sim.store_raw(encode_deliver(REPLIER, "1", stamp)[0])

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        await wait_until(lambda: len(replies.texts) == 1, "the text stored before")
        index2 = sim.store_raw(encode_deliver(REPLIER, "2", stamp)[0])
        sim.interject([
            f'+CMTI: "SM",{index2}',
            "RING",
            b"\xff\xfe\x00\x13noise",
            "+CREG: 5",
            '+CEREG: 5,"1A2B","01C3D4E5",7',
            "^RSSI: 12",
            "+QIND: SMS DONE",
            "+CLIP: \"13800000000\",129",
        ])
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.ok, outcome.error
        assert outcome.references == (40,)
        await wait_until(lambda: len(replies.texts) == 2, "the text announced mid-send")
        assert [t.text for t in replies.texts] == ["1", "2"]
        health = modem.health()
        assert health.registration == "registered_roaming"
        assert health.counters["rings"] == 2  # RING and +CLIP
        assert (await modem.send(KEEPER, "after the noise")).references == (41,)
        assert f"AT+CMGD={index}" in sim.commands and f"AT+CMGR={index2}" in sim.commands

    run(link, scenario)


def test_send_after_stop_is_refused(sim: SimulatedModem, link: Path) -> None:
    async def main() -> None:
        modem = GsmModem(config(link))
        await modem.start()
        await modem.stop()
        outcome = await modem.send(KEEPER, ALARM)
        assert outcome.error is not None and outcome.error.kind is SendErrorKind.STOPPED
        assert modem.health().state == "stopped" and not modem.health().port_open

    asyncio.run(main())


def test_without_a_receiver_texts_stay_in_the_modem(sim: SimulatedModem, link: Path) -> None:
    async def main() -> None:
        async with GsmModem(config(link, status_interval_s=0.1)) as modem:
            sim.deliver(REPLIER, "1")
            await asyncio.sleep(0.3)
            assert len(sim.stored()) == 1
            assert modem.health().received == 0
            assert not any(c.startswith(("AT+CMGR", "AT+CMGL")) for c in sim.commands)

    asyncio.run(main())


def test_noise_between_a_listed_header_and_its_pdu_is_skipped(
    sim: SimulatedModem, link: Path
) -> None:
    sim.deliver(REPLIER, "1")
    sim.interject_in_listing(["^RSSI: 17", "garbage"])

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        await wait_until(lambda: len(replies.texts) == 1, "the text")
        assert replies.texts[0].text == "1"
        assert "undecodable_texts" not in modem.health().counters

    run(link, scenario)


def test_a_text_delivered_straight_to_the_gateway_is_handed_over(
    sim: SimulatedModem, link: Path
) -> None:
    stamp = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    (pdu,) = encode_deliver(REPLIER, "1 已到坝上", stamp)

    async def scenario(modem: GsmModem, replies: Replies) -> None:
        replies.failing = True
        sim.emit(f"+CMT: ,{len(pdu) // 2 - 1}")
        sim.emit(pdu)
        await wait_until(
            lambda: modem.health().counters.get("incoming_handler_errors", 0) >= 1, "a failure"
        )
        replies.failing = False  # kept in memory, since the modem did not store it
        await wait_until(lambda: len(replies.texts) == 1, "the text on the next round")
        assert (replies.texts[0].sender, replies.texts[0].text) == (REPLIER, "1 已到坝上")
        assert not any(c.startswith("AT+CMGD") for c in sim.commands)

    run(link, scenario, status_interval_s=0.2)


def test_state_changes_are_logged_once_and_attempts_are_counted(
    sim: SimulatedModem, link: Path
) -> None:
    async def scenario(modem: GsmModem, _: Replies) -> None:
        with structlog.testing.capture_logs() as logs:
            sim.set_fault(ModemFault.SILENT)
            for _ in range(3):
                await modem.send(KEEPER, ALARM)
            await asyncio.sleep(1.0)  # a probe or two more fail meanwhile
            sim.set_fault(ModemFault.SILENT, False)
            await wait_until(lambda: modem.state == "ready", "ready", timeout=5)
            sim.unplug()
            await asyncio.sleep(0.8)  # re-opens fail at once and 0.5 s later
            sim.plug()
            await wait_until(lambda: modem.state == "ready", "back", timeout=5)
        events = [entry["event"] for entry in logs]
        assert events == [
            "modem_unresponsive",
            "sms_sending_failed",  # timeout, then modem_unresponsive: two kinds of failure
            "sms_sending_failed",
            "modem_ready",
            "modem_port_lost",
            "modem_port_unavailable",
            "modem_port_open",
            "modem_ready",
        ], events
        counters = modem.health().counters
        assert counters["open_failures"] >= 2
        assert counters["send_modem_unresponsive"] == 2 and counters["send_timeout"] == 1

    run(link, scenario)
