"""``edge notify-test -c SITE --to CONTACT``: a test text to one of the site's contacts.

Used when a modem or SIM is installed or replaced, and by the keeper to check the channel
before the flood season. The text is stored in the gateway's store before it is sent, as
every notification is. Only one program may talk to the modem: when the gateway is
running, the text is queued for it (its sender looks at the queue every two seconds) and
this command waits for the outcome; when it is not, this command opens the modem itself.
Either way the outcome is also queued as an ``event`` for the MQTT uplink.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import TextIO

from edge.channels import notify_store as db
from edge.channels.escalation import TEST
from edge.channels.notify_store import FAILED, QUEUED, SENT, MessageRow, NewMessage
from edge.channels.notify_texts import site_texts
from edge.config import GatewaySettings
from edge.localstore import running_pid
from vocab.model import now_ms

READY_WAIT_S = 30.0
# A port that does not appear within this is not a modem being re-plugged.
PORT_WAIT_S = 3.0


class NotifyToolError(Exception):
    """The test text cannot be sent; the message says why."""


def notify_test(settings: GatewaySettings, contact_id: str, note: str = "",
                wait_s: float = 90.0, out: TextIO = sys.stdout) -> int:
    """Send a test text; 0 when the modem took it, 1 when it did not."""
    config = settings.notify
    if config is None or config.modem is None:
        raise NotifyToolError("the configuration has no notify.modem: there is no modem to "
                              "send with")
    contact = next((c for c in config.contacts if c.id == contact_id), None)
    if contact is None:
        known = ", ".join(c.id for c in config.contacts) or "none"
        raise NotifyToolError(f"--to {contact_id!r}: no such contact (contacts: {known})")
    texts = site_texts(settings)
    message = NewMessage(contact.id, contact.phone, TEST, (), (texts.test_line(),), False,
                         texts.test(note), paced=False)
    pid = running_pid(settings.store.path)
    if pid is not None:
        print(f"the gateway is running (pid {pid}): the text is queued for it", file=out)
        row = _through_the_gateway(settings, message, wait_s)
    else:
        print(f"the gateway is not running: sending through {config.modem.port}", file=out)
        row = asyncio.run(_directly(settings, message, min(wait_s, READY_WAIT_S)))
    return _report(row, out)


def _through_the_gateway(settings: GatewaySettings, message: NewMessage,
                         wait_s: float) -> MessageRow:
    path = settings.store.path
    if not path.exists():
        raise NotifyToolError(f"no store at {path}")
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        db.create_schema(conn)
        message_id = db.queue_message(conn, message, now_ms())
        deadline = time.monotonic() + wait_s
        while True:
            row = db.message(conn, message_id)
            assert row is not None
            tried = row.state in (SENT, FAILED) or (row.state == QUEUED and row.tries > 0)
            if tried or time.monotonic() > deadline:
                return row
            time.sleep(0.3)
    finally:
        conn.close()


async def _directly(settings: GatewaySettings, message: NewMessage,
                    ready_wait_s: float) -> MessageRow:
    from drivers.gsm_modem import GsmModem, ModemState
    from edge.channels.notify_sender import Sender, SendPolicy
    from edge.outbox import Outbox
    from edge.store import Store, StoreWorker

    config = settings.notify
    assert config is not None and config.modem is not None
    store = StoreWorker(Store(settings.store.path, settings.store.synchronous))
    try:
        conn = store.connection
        await store.run(db.create_schema, conn)
        message_id = await store.run(db.queue_message, conn, message, now_ms())
        async with GsmModem(config.modem) as modem:
            started = time.monotonic()
            while modem.state is not ModemState.READY and \
                    time.monotonic() - started < ready_wait_s:
                if not Path(config.modem.port).exists() and \
                        time.monotonic() - started > PORT_WAIT_S:
                    break  # no such port: waiting longer will not make a modem appear
                await asyncio.sleep(0.2)
            # One try: a test that fails says so now rather than being retried later.
            policy = SendPolicy(0, config.retry_s, config.retry_max_s, 1, 10_000)
            sender = Sender(store, Outbox(store), policy, lambda rows: message, modem)
            row = await store.run(db.message, conn, message_id)
            assert row is not None
            await sender.send(row)
        sent = await store.run(db.message, conn, message_id)
        assert sent is not None
        return sent
    finally:
        store.close()


def _report(row: MessageRow, out: TextIO) -> int:
    if row.state == SENT:
        print(f"sent to {row.contact} ({row.phone}): message reference(s) "
              f"{', '.join(str(r) for r in row.refs) or '-'}", file=out)
        print(f"text: {row.text}", file=out)
        return 0
    if row.state == QUEUED and row.tries:
        print(f"not sent yet ({row.error}); the gateway tries again", file=out)
    elif row.state == FAILED:
        print(f"failed: {row.error}", file=out)
    else:
        print(f"still waiting for the gateway (state {row.state}); it stays queued", file=out)
    return 1
