"""The notify service: alarms to the people on duty by SMS, sirens by relay, escalation
until someone acknowledges, all on the gateway and with no uplink needed.

* **Alarms in**: the service's outbox channel (``notify``, kind ``alarm``) hands it every
  alarm transition the pipeline committed. Each batch is applied to the escalations and
  the texts it causes are queued, in one store transaction, before the batch is
  acknowledged: nothing is lost across a restart or a SIGKILL, nothing applied twice.
* **The ladder** (edge/channels/escalation.py) adds the next tier when a tier's delay
  passes without acknowledgement; **the sender** (edge/channels/notify_sender.py) paces,
  summarises, sends, retries and publishes each outcome as an ``event`` on MQTT.
* **Acknowledgements** come from wherever the person is: an SMS reply from a known number
  (``1``, ``确认`` or the alarm's code), the MQTT ``ack_alarm`` command, the local page,
  or a push button on a Modbus discrete input. All go through
  ``Pipeline.acknowledge(alarm_id, by, via)``, which stores and publishes who, how and
  when; the service learns of each, whatever its path, from its channel (state
  ``acknowledged``) and stops the escalation and the sirens. Replies from unknown
  numbers change nothing and are logged.
* **Sirens** (edge/channels/sirens.py) follow the pending alarms.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import structlog

from drivers.gsm_modem import GsmModem, IncomingText
from edge.channels import notify_store as db
from edge.channels.escalation import ALARM, CLEAR, ESCALATED, SUMMARY, TEST, Escalation, Ladder
from edge.channels.notify_config import AckButtonConfig, ContactConfig, NotifyConfig
from edge.channels.notify_sender import (
    IDLE_S,
    Sender,
    SendPolicy,
    event_payload,
    summary_capacity,
)
from edge.channels.notify_store import FAILED, QUEUED, SENT, MessageRow, NewMessage
from edge.channels.notify_texts import AlarmFacts, new_code, parse_reply, site_texts
from edge.channels.sirens import Sirens
from edge.pipeline import AckNotStored
from vocab.model import now_ms
from vocab.waits import stop_tasks, wait_set

if TYPE_CHECKING:
    from edge.config import GatewaySettings
    from edge.ports import Ports

log = structlog.get_logger("edge.channels.notify")

CHANNEL = "notify"
INTAKE_BATCH = 50
BUTTON_CHECK_S = 0.2
TEST_WAIT_S = 30.0
RESTART_S = 5.0  # a loop that failed unexpectedly starts again after this
HOUSEKEEPING_S = 3600.0
STOP_WAIT_S = 5.0
_NOT_DIGITS = re.compile(r"\D")


class NotifyService:
    """See the module docstring; built by edge/channels/notify.py."""

    name = "notify"

    def __init__(self, settings: GatewaySettings, ports: Ports) -> None:
        config = settings.notify
        assert config is not None, "built only for a site with a notify section"
        self.config: NotifyConfig = config
        self.ports = ports
        self.store = ports.store
        self.retention_days = settings.store.retention_days
        self.contacts = {c.id: c for c in config.contacts}
        self.texts = site_texts(settings)
        self.ladder = Ladder(config.escalation, config.all_clear)
        self.channel = ports.outbox.channel(CHANNEL)
        self.modem: GsmModem | None = None
        max_parts = config.modem.max_parts if config.modem is not None else 10
        policy = SendPolicy(round(config.pace_s * 1000), config.retry_s, config.retry_max_s,
                            config.max_tries, summary_capacity(max_parts))
        self.sender = Sender(ports.store, ports.outbox, policy, self.summarise, None)
        self.sender.after_send = self._refresh
        self.sirens = Sirens(config.sirens, ports.buses, ports.pipeline, self.texts,
                             config.relay_alarm_severity, self._publish)
        self.figures: dict[str, int] = {}
        self.replies = {"acknowledged": 0, "unknown_sender": 0, "not_understood": 0,
                        "nothing_pending": 0}
        self.button_acks = 0
        self._climb = asyncio.Event()
        self._codes = random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        conn = self.store.connection
        await self.store.run(db.create_schema, conn)
        recovered = await self.store.run(db.recover, conn, now_ms())
        if recovered:
            log.warning("notifications_interrupted", count=recovered,
                        note="sent again: the modem may have taken them before the stop")
        self.sirens.update(await self.store.run(db.pending_escalations, conn))
        if self.config.modem is not None:
            self.modem = GsmModem(self.config.modem, self._on_text)
            self.sender.modem = self.modem
            await self.modem.start()
        await self.sender.start()
        await self._refresh()
        log.info("notify_started", contacts=len(self.contacts), tiers=len(self.ladder.tiers),
                 sirens=len(self.config.sirens), modem=bool(self.modem), **self.figures)
        jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("intake", self._intake), ("ladder", self._climb_ladder),
            ("sender", self.sender.run), ("sirens", self.sirens.run),
            ("housekeeping", self._housekeeping)]
        if self.config.ack_button is not None:
            button = self.config.ack_button
            jobs.append(("button", lambda: self._watch_button(button)))
        self._tasks = [asyncio.create_task(self._guarded(name, job), name=f"notify:{name}")
                       for name, job in jobs]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self._cancel(self._tasks)

    async def stop(self) -> None:
        # A text with the modem finishes (bounded); cut off, it is sent again at restart.
        await wait_set(self.sender.idle, STOP_WAIT_S)
        # The sirens' own task goes first, so that no write of its own follows the "off".
        await self._cancel(self._tasks)
        await self.sirens.stop()
        if self.modem is not None:
            await self.modem.stop()

    @staticmethod
    async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
        await stop_tasks(*tasks)

    async def _guarded(self, name: str, job: Callable[[], Awaitable[None]]) -> None:
        """A loop that fails is logged and started again: one bug must not silence the
        alarms for good."""
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notify_loop_failed", loop=name, restart_s=RESTART_S)
                await asyncio.sleep(RESTART_S)

    def health(self) -> dict[str, Any]:
        return {
            "modem": asdict(self.modem.health()) if self.modem is not None else None,
            "messages": dict(self.figures),
            "attempts": self.sender.attempts, "failed_attempts": self.sender.failed_attempts,
            "last_error": self.sender.last_error,
            "sirens": self.sirens.health(),
            "replies": dict(self.replies), "button_acks": self.button_acks,
        }

    async def _refresh(self) -> None:
        self.figures = await self.store.run(db.figures, self.store.connection)

    # -- alarms in, the ladder ----------------------------------------------------------------

    async def _intake(self) -> None:
        conn = self.store.connection
        while True:
            batch = await self.channel.next_batch(INTAKE_BATCH)
            if not batch:
                await self.channel.wait(IDLE_S)
                continue
            transitions = []
            for message in batch:
                try:
                    transitions.append((message.seq, json.loads(message.payload)["alarm"]))
                except (ValueError, KeyError, TypeError):
                    log.error("notify_alarm_unreadable", seq=message.seq)
            try:
                result = await self.store.run(db.intake, conn, transitions, self.ladder,
                                              self.compose, now_ms(), self._new_code)
            except Exception:
                log.exception("notify_intake_failed", first=batch[0].seq, last=batch[-1].seq)
                await self.channel.rewind(batch[0].seq, batch[-1].seq)
                await asyncio.sleep(RESTART_S)
                continue
            self.channel.acknowledge(m.seq for m in batch)
            self.sirens.update(result.escalations)
            if result.queued:
                self.sender.wake.set()
            self._climb.set()
            await self._refresh()

    def _new_code(self, taken: set[str]) -> str:
        return new_code(taken, self._codes)  # on the store thread only

    async def _climb_ladder(self) -> None:
        conn = self.store.connection
        while True:
            self._climb.clear()
            result = await self.store.run(db.advance_due, conn, self.ladder, self.compose,
                                          now_ms())
            if result.queued:
                self.sender.wake.set()
                await self._refresh()
            due = await self.store.run(db.next_tier_ms, conn)
            wait = 60.0 if due is None else min(60.0, max(0.0, (due - now_ms()) / 1000))
            await wait_set(self._climb, wait)

    def compose(self, escalation: Escalation, notice: tuple[str, str]) -> NewMessage | None:
        """The text of one notice (store thread: reads only the configuration)."""
        contact = self.contacts.get(notice[0])
        if contact is None:
            return None  # removed from the configuration since the alarm was raised
        kind = notice[1]
        facts = AlarmFacts(escalation.alarm_id, escalation.device, escalation.point,
                           escalation.severity, escalation.value, escalation.limit,
                           escalation.ts_ms, escalation.message, escalation.code)
        render = {ALARM: self.texts.alarm, ESCALATED: self.texts.escalated,
                  CLEAR: self.texts.clear}[kind]
        return NewMessage(contact.id, contact.phone, kind, (escalation.alarm_id,),
                          (self.texts.alarm_line(facts, kind),), kind != CLEAR, render(facts))

    def summarise(self, rows: Sequence[MessageRow]) -> NewMessage:
        lines = [line for row in rows for line in row.lines]
        alarm_ids = tuple(dict.fromkeys(a for row in rows for a in row.alarm_ids))
        asks = any(row.asks_ack for row in rows)
        return NewMessage(rows[0].contact, rows[0].phone, SUMMARY, alarm_ids, tuple(lines),
                          asks, self.texts.summary(lines, asks))

    async def _publish(self, event: dict[str, Any]) -> None:
        await self.ports.outbox.enqueue("event", lambda seq: event_payload(seq, event))

    async def _housekeeping(self) -> None:
        while True:
            before = now_ms() - self.retention_days * 86_400_000
            await self.store.run(db.prune, self.store.connection, before)
            await asyncio.sleep(HOUSEKEEPING_S)

    # -- acknowledgements ---------------------------------------------------------------------

    def contact_by_phone(self, sender: str) -> ContactConfig | None:
        """The contact a reply comes from: the network gives +86..., sometimes the
        national number alone."""
        digits = _NOT_DIGITS.sub("", sender)
        for contact in self.contacts.values():
            own = contact.phone[1:]
            if digits == own or (len(digits) >= 7 and own.endswith(digits)):
                return contact
        return None

    async def _on_text(self, text: IncomingText) -> None:
        """A reply read from the modem; raising keeps it on the modem for another try."""
        contact = self.contact_by_phone(text.sender)
        if contact is None:
            self.replies["unknown_sender"] += 1
            log.warning("sms_reply_unknown_sender", sender=text.sender, text=text.text[:60])
            return
        reply = parse_reply(text.text)
        if reply is None:
            self.replies["not_understood"] += 1
            log.info("sms_reply_not_understood", contact=contact.id, text=text.text[:60])
            return
        alarm_ids, unknown = await self.store.run(db.alarms_for_reply, self.store.connection,
                                                  contact.id, list(reply.codes))
        acknowledged = []
        for alarm_id in alarm_ids:
            # AckNotStored propagates: the reply stays on the modem and is read again.
            if await self.ports.pipeline.acknowledge(alarm_id, contact.label, "sms"):
                acknowledged.append(alarm_id)
        if not acknowledged:
            self.replies["nothing_pending"] += 1
            log.info("sms_reply_nothing_to_acknowledge", contact=contact.id,
                     unknown_codes=unknown)
            return
        self.replies["acknowledged"] += 1
        log.info("sms_reply_acknowledged", contact=contact.id, alarms=acknowledged,
                 unknown_codes=unknown)

    async def _watch_button(self, button: AckButtonConfig) -> None:
        """A rising edge of the button's input acknowledges every alarm of the site."""
        last_ts: int | None = None
        last_on: bool | None = None  # unknown at start: a button held down is no press
        while True:
            reading = self.ports.pipeline.latest.get(button.point)
            if reading is not None and reading.ts_ms != last_ts:
                last_ts = reading.ts_ms
                if reading.quality != "bad" and reading.value is not None:
                    on = bool(reading.value)
                    if on and last_on is False:
                        await self._button_pressed(button.by or button.point)
                    last_on = on
            await asyncio.sleep(BUTTON_CHECK_S)

    async def _button_pressed(self, by: str) -> None:
        acknowledged = []
        for alarm in self.ports.pipeline.active_alarms():
            if alarm.acked:
                continue
            try:
                if await self.ports.pipeline.acknowledge(alarm.alarm_id, by, "button"):
                    acknowledged.append(alarm.alarm_id)
            except AckNotStored:
                log.error("ack_button_not_stored", alarm=alarm.alarm_id)
        self.button_acks += 1
        log.info("ack_button_pressed", by=by, acknowledged=acknowledged)

    # -- test texts ---------------------------------------------------------------------------

    async def send_test(self, contact_id: str, note: str = "") -> dict[str, Any]:
        """Queue a test text to a contact and wait (bounded) for its first outcome."""
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise LookupError(f"unknown contact {contact_id!r} (contacts: "
                              f"{', '.join(self.contacts) or 'none'})")
        if self.modem is None:
            raise LookupError("this site has no SMS modem (notify.modem)")
        conn = self.store.connection
        message = NewMessage(contact.id, contact.phone, TEST, (), (self.texts.test_line(),),
                             False, self.texts.test(note), paced=False)
        message_id = await self.store.run(db.queue_message, conn, message, now_ms())
        self.sender.wake.set()
        deadline = time.monotonic() + TEST_WAIT_S
        while True:
            row = await self.store.run(db.message, conn, message_id)
            assert row is not None
            tried = row.state in (SENT, FAILED) or (row.state == QUEUED and row.tries > 0)
            if tried or time.monotonic() > deadline:
                return outcome_of(row)
            await asyncio.sleep(0.2)


def outcome_of(row: MessageRow) -> dict[str, Any]:
    return {"notification": row.id, "contact": row.contact, "phone": row.phone,
            "state": row.state, "tries": row.tries, "references": list(row.refs),
            "error": row.error, "text": row.text}
