"""Sending the queued texts through the site's 4G modem: paced, retried, every outcome kept.

Texts are sent one at a time (there is one modem), oldest first. Per recipient at most
one text goes out per ``pace_s``: whatever queues for them meanwhile goes in the next slot
as one summary naming every alarm (a storm of fifty alarms is one or two texts, and no
alarm is left out; a summary too long for ``max_parts`` takes what fits and leaves the
rest for the following slot). A test text is not paced.

Before a text goes to the modem its row is marked ``sending``; its outcome (sent with the
modem's message references, queued again after a backoff, or failed for good) is written
in the same transaction as the outbox event that publishes it on MQTT
(``Outbox.enqueue`` builds the payload inside its transaction: edge/store.py
``queue_message``), so the store and the platform never disagree about a text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from drivers.gsm_modem import SendOutcome
from edge.channels import notify_store as db
from edge.channels.notify_store import FAILED, QUEUED, SENT, MessageRow, NewMessage
from edge.outbox import Outbox
from edge.store import StoreWorker
from vocab.model import now_ms
from vocab.waits import wait_set

log = structlog.get_logger("edge.channels.notify")

# The sender looks at the queue at least this often (a test text queued by
# `edge notify-test` from another process is found within it).
IDLE_S = 2.0
# UCS-2 parts of a concatenated text (TS 23.040): what a Chinese summary may fill.
UCS2_PART_CHARS = 67


class Modem(Protocol):
    async def send(self, phone: str, text: str) -> SendOutcome: ...


@dataclass(frozen=True)
class SendPolicy:
    pace_ms: int
    retry_s: float
    retry_max_s: float
    max_tries: int
    max_chars: int

    def retry_at(self, now: int, tries: int) -> int:
        return now + round(min(self.retry_s * 2 ** (tries - 1), self.retry_max_s) * 1000)


def event_payload(seq: int, event: dict[str, Any]) -> str:
    """An outbox ``event`` message: published on ``{root}/events`` (docs/mqtt.md)."""
    return json.dumps({"seq": seq, "event": {**event, "ts": event.get("ts", now_ms())}},
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def pick(rows: Sequence[MessageRow], now: int, last_sent: dict[str, int],
         pace_ms: int) -> tuple[list[MessageRow], int | None]:
    """The texts to send now, all to one person (several: a summary), and when something
    else becomes due (epoch ms; None: nothing waits)."""
    by_phone: dict[str, list[MessageRow]] = {}
    for row in rows:
        if row.state == QUEUED:
            by_phone.setdefault(row.phone, []).append(row)
    later: list[int] = []
    for phone, group in by_phone.items():
        due = [r for r in group if r.due_ms <= now]
        later += [r.due_ms for r in group if r.due_ms > now]
        if not due:
            continue
        unpaced = [r for r in due if not r.paced]
        if unpaced:
            return [unpaced[0]], min(later, default=None)
        free_at = last_sent.get(phone, -pace_ms) + pace_ms
        if now >= free_at:
            return due, min(later, default=None)
        later.append(free_at)
    return [], min(later, default=None)


class Sender:
    """The one task that talks to the modem."""

    def __init__(self, store: StoreWorker, outbox: Outbox, policy: SendPolicy,
                 summarise: Callable[[Sequence[MessageRow]], NewMessage],
                 modem: Modem | None) -> None:
        self.store = store
        self.outbox = outbox
        self.policy = policy
        self.summarise = summarise
        self.modem = modem
        self.last_sent: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.attempts = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self.after_send: Callable[[], Awaitable[None]] | None = None  # figures to refresh
        self._failing = False

    async def start(self) -> None:
        self.last_sent = await self.store.run(db.last_sent, self.store.connection)

    async def run(self) -> None:
        conn = self.store.connection
        while True:
            self.wake.clear()
            rows = await self.store.run(db.waiting, conn)
            now = now_ms()
            group, next_ms = pick(rows, now, self.last_sent, self.policy.pace_ms)
            if group:
                self.idle.clear()
                try:
                    await self._send_group(group)
                finally:
                    self.idle.set()
                continue
            wait = IDLE_S if next_ms is None else min(IDLE_S, max(0.0, (next_ms - now) / 1000))
            await wait_set(self.wake, wait)

    def fit(self, group: Sequence[MessageRow]) -> list[MessageRow]:
        """The oldest texts whose summary fits in one (multi-part) SMS."""
        taken: list[MessageRow] = [group[0]]
        for row in group[1:]:
            if len(self.summarise([*taken, row]).text) > self.policy.max_chars:
                break
            taken.append(row)
        return taken

    async def _send_group(self, group: Sequence[MessageRow]) -> None:
        row = group[0]
        if len(group) > 1:
            fitted = self.fit(group)
            if len(fitted) > 1:
                summary = self.summarise(fitted)
                row = await self.store.run(db.merge, self.store.connection, fitted, summary,
                                           now_ms())
                log.info("notification_summary", contact=row.contact, merged=len(fitted),
                         alarms=len(row.alarm_ids))
        await self.send(row)

    async def send(self, row: MessageRow) -> None:
        """Send one queued text and record (and publish) what became of it."""
        conn = self.store.connection
        await self.store.run(db.mark_sending, conn, row.id, now_ms())
        self.attempts += 1
        if self.modem is None:
            outcome = None
            error, retryable, refs, parts = "no modem configured", False, (), 0
        else:
            try:
                outcome = await self.modem.send(row.phone, row.text)
            except Exception as exc:  # the driver never raises for a failure; a bug might
                log.exception("notification_send_crashed", notification=row.id)
                outcome = None
                error, retryable, refs, parts = f"internal_error: {exc}", True, (), 0
            else:
                error = str(outcome.error) if outcome.error is not None else None
                retryable = outcome.error.retryable if outcome.error is not None else False
                refs, parts = outcome.references, outcome.parts
        stamp = now_ms()
        tries = row.tries + 1
        if error is None:
            state, retry_at = SENT, None
        elif retryable and tries < self.policy.max_tries:
            state, retry_at = QUEUED, self.policy.retry_at(stamp, tries)
        else:
            state, retry_at = FAILED, None
        self._log(row, state, tries, error, refs)
        event = {"type": "notification", "ts": stamp, "notification": row.id,
                 "kind": row.kind, "contact": row.contact, "phone": row.phone,
                 "alarm_ids": list(row.alarm_ids), "text": row.text, "try": tries,
                 "outcome": {SENT: "sent", QUEUED: "retrying", FAILED: "failed"}[state],
                 "references": list(refs), "parts": parts, "error": error,
                 "retry_at": retry_at, "interrupted": row.interrupted}

        def build(seq: int) -> str:
            # Runs inside the outbox's transaction: the outcome and its event together.
            db.record_outcome(conn, row.id, state, refs, error, stamp, retry_at)
            return event_payload(seq, event)

        await self.outbox.enqueue("event", build)
        if state == SENT:
            self.last_sent[row.phone] = stamp
        if self.after_send is not None:
            await self.after_send()

    def _log(self, row: MessageRow, state: str, tries: int, error: str | None,
             refs: Sequence[int]) -> None:
        if state == SENT:
            if self._failing:
                log.info("notifications_recovered", failed_attempts=self.failed_attempts)
                self._failing = False
            log.info("notification_sent", notification=row.id, contact=row.contact,
                     kind=row.kind, tries=tries, references=list(refs),
                     interrupted=row.interrupted)
            return
        self.failed_attempts += 1
        self.last_error = error
        if state == FAILED:
            log.error("notification_failed", notification=row.id, contact=row.contact,
                      kind=row.kind, tries=tries, error=error)
        elif not self._failing:
            # Counted from here on; logged again when a text goes through.
            log.warning("notifications_failing", notification=row.id, contact=row.contact,
                        error=error)
        self._failing = True


def summary_capacity(max_parts: int) -> int:
    return UCS2_PART_CHARS * max_parts
