"""The notify service inside a running gateway (tests/notify/harness.py): the ladder, every
way of acknowledging, the siren, a storm, a dead relay, the test text."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import structlog.testing

from edge.command_handlers import acknowledge_alarm
from edge.commands import AckAlarmArgs
from tests.notify.harness import KEEPER, OFFICER, Site


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


def alarm_rows(s: Site) -> list[tuple[str, str, int, str | None, str | None]]:
    rows = s.rows("SELECT alarm_id, state, acked, acked_by, acked_via FROM alarms "
                  "ORDER BY raised_ms")
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def test_reply_from_the_keeper_stops_the_ladder_and_the_siren(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Site(tmp_path) as s:
            s.set_levels(125.0, count=1)  # above 124.8: an alarm on one point
            await s.until(lambda: len(s.texts_to(KEEPER)) == 1, "the keeper's text")
            text = s.texts_to(KEEPER)[0]
            assert text.startswith("【某某水库】报警：库水位 125m，高于限值 124.8m，")
            code = text[-6:-2]
            await s.until(lambda: s.relay.coils[0], "the siren on")
            # 3 s without an acknowledgement: the water officer is added.
            await s.until(lambda: len(s.texts_to(OFFICER)) == 1, "the second tier", 6)
            assert s.texts_to(OFFICER)[0] == text
            with structlog.testing.capture_logs() as logs:
                s.modem.deliver("+8613912345678", "1")  # a stranger: changes nothing
                await asyncio.sleep(1.0)
                assert not any(r[2] for r in alarm_rows(s))
                s.modem.deliver(KEEPER, f"确认{code}")
                await s.until(lambda: any(r[2] for r in alarm_rows(s)), "the acknowledgement")
                await s.until(lambda: not s.relay.coils[0] and s.relay.switches[-1].on is False,
                              "the siren off")
            events = [e["event"] for e in logs]
            assert "sms_reply_unknown_sender" in events and "sms_reply_acknowledged" in events
            assert alarm_rows(s)[0][2:] == (1, "王师傅", "sms")
            service = s.service
            assert service is not None
            await s.until(lambda: service.figures.get("escalations_pending") == 0,
                          "the escalation stopped")
            assert s.modem.stored() == {}  # the replies were read and deleted
            s.set_levels(123.0, count=1)
            await s.until(lambda: len(s.texts_to(KEEPER)) == 2, "the all-clear")
            assert "已解除：库水位 恢复正常（123m）" in s.texts_to(KEEPER)[1]
            await s.until(lambda: len(s.texts_to(OFFICER)) == 2, "the officer's all-clear")

    run(scenario())


def test_an_mqtt_acknowledgement_and_the_button_stop_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Site(tmp_path) as s:
            assert s.gateway is not None
            s.set_levels(125.0, count=2)
            await s.until(lambda: len(alarm_rows(s)) == 2 and s.relay.coils[0], "two alarms")
            first, second = (r[0] for r in alarm_rows(s))
            ack = acknowledge_alarm(s.gateway.pipeline)
            await ack(AckAlarmArgs(alarm_id=first, by="平台值班员"))
            await asyncio.sleep(0.5)
            assert s.relay.coils[0] or s.relay.switches[-1].on is False  # still sounding
            s.press(True)  # the keeper's push button: a rising edge
            await s.until(lambda: all(r[2] for r in alarm_rows(s)), "the button's ack")
            await s.until(lambda: not s.relay.coils[0], "the siren off")
            assert {r[0]: r[3:] for r in alarm_rows(s)} == {
                first: ("平台值班员", "mqtt"), second: ("值班按钮", "button")}
            service = s.service
            assert service is not None and service.button_acks == 1
            await s.until(lambda: service.figures.get("escalations_pending") == 0,
                          "the escalations stopped")
            assert s.texts_to(OFFICER) == []
            s.press(False)
            health = service.health()
            assert health["sirens"]["siren-1"]["relay_ok"] is True
            assert health["messages"]["escalations_pending"] == 0

    run(scenario())


def test_a_storm_is_paced_into_summaries_that_name_every_alarm(tmp_path: Path) -> None:
    async def scenario() -> None:
        # Three parts at most: a summary holds a few alarms, the rest wait for the next.
        async with Site(tmp_path, modem={"port": str(tmp_path / "usb-Quectel_EC25-if02-port0"),
                                         "command_timeout_s": 0.5, "max_parts": 3},
                        escalation=[{"after_min": 0, "contacts": ["keeper"]}],
                        sirens=[]) as s:
            s.set_levels(124.0)  # fifteen warnings in one poll
            await s.until(lambda: len(alarm_rows(s)) == 15, "fifteen alarms")
            # Texts queued (the service takes the alarms from the outbox after they are
            # stored: "none queued" alone held before the first was) and then all sent.
            await s.until(lambda: s.rows("SELECT 1 FROM notify_messages"), "texts queued")
            await s.until(lambda: not s.rows("SELECT 1 FROM notify_messages WHERE state IN "
                                             "('queued', 'sending')"), "all texts out", 15)
            texts = s.texts_to(KEEPER)
            assert 3 <= len(texts) <= 6, texts
            assert "条通知" in texts[1]
            codes = [body["code"] for (body,) in [
                (json.loads(b),) for (b,) in s.rows("SELECT body FROM notify_escalations")]]
            assert len(set(codes)) == 15
            assert all(sum(code in t for t in texts) == 1 for code in codes), (codes, texts)
            sent = s.rows("SELECT alarm_ids FROM notify_messages WHERE state='sent'")
            named = [a for (ids,) in sent for a in json.loads(ids)]
            assert sorted(named) == sorted(r[0] for r in alarm_rows(s))
            # One text per pace_s (1 s) at most.
            times = [t.parts[0].at for t in s.sent()]
            assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), times

    run(scenario())


def test_a_relay_that_does_not_answer_is_an_alarm_of_its_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Site(tmp_path) as s:
            assert s.gateway is not None
            await s.until(lambda: s.relay.requests > 0, "the siren's first write")
            s.relay.silent = True
            s.set_levels(125.0, count=1)
            await s.until(lambda: any(r[0].startswith("siren:siren-1@")
                                      for r in alarm_rows(s)), "the relay alarm", 10)
            relay_alarm = next(r for r in alarm_rows(s) if r[0].startswith("siren:"))
            await s.until(lambda: any("继电器无应答" in t for t in s.texts_to(KEEPER)),
                          "the keeper told of the relay")
            # It is in the alarm book: it can be acknowledged like any other, and a
            # rebuilt engine (a reload) keeps it instead of clearing it as an orphan.
            await s.gateway.pipeline.rebuild_engine(s.gateway._build_engine)
            assert await s.gateway.pipeline.acknowledge(relay_alarm[0], "王师傅", "page")
            s.relay.silent = False
            await s.until(lambda: all(r[1] == "cleared" for r in alarm_rows(s)
                                      if r[0].startswith("siren:")), "the relay alarm cleared")
            await s.until(lambda: s.relay.coils[0] or any(w.on for w in s.relay.switches),
                          "the siren sounding again")
            events = s.rows("SELECT state FROM alarm_events WHERE alarm_id=? ORDER BY seq",
                            relay_alarm[0])
            assert [e for (e,) in events] == ["raised", "acknowledged", "cleared"]

    run(scenario())


def test_the_notify_test_command(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Site(tmp_path) as s:
            assert s.gateway is not None
            router = s.gateway._router()
            root = "reservoir/test-site/gw-test"
            reply = await router.handle(f"{root}/cmd/notify_test",
                                        b'{"id": 7, "args": {"to": "water-officer"}}')
            assert reply is not None
            body = json.loads(reply.payload)
            assert body["ok"] is True, body
            assert body["result"]["state"] == "sent" and body["result"]["references"] == [40]
            assert "测试短信" in s.texts_to(OFFICER)[0]
            reply = await router.handle(f"{root}/cmd/notify_test",
                                        b'{"id": 8, "args": {"to": "mayor"}}')
            assert reply is not None
            assert json.loads(reply.payload) == {
                "id": 8, "ok": False, "error": "args.to: unknown contact 'mayor' (contacts: "
                                               "keeper, water-officer, grid-staff)"}

    run(scenario())
