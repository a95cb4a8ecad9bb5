"""One SL 651 centre: its TCP connection, its place in the outbox, its confirmations.

Each configured centre gets one ``CentreLink`` and its own outbox channel
(``sl651-centre-N``), so a centre that is away keeps its backlog without holding back the
other centres or the MQTT uplink. The link

* connects with backoff (doubling up to ``retry_max_s``) and, once connected, sends the
  reports that waited, oldest first, paced by ``pace_s``;
* in the confirmed mode (M2, §6.3.1.2) sends one report at a time and acknowledges it in
  the outbox only when the centre's confirmation for its function and serial number
  arrives; without one within ``confirm_timeout_s`` it sends the same frame again, and
  after ``max_resends`` it drops the connection and starts over (a centre that never
  confirms is treated as away: nothing is lost);
* a report the centre answers with NAK every time it is sent is set aside for this
  centre (kept in the store, counted, never re-sent forever);
* sends a keep-alive (2FH, the last serial, no reply expected) when the link was idle for
  ``keepalive_s``;
* answers the centre's real-time query (37H) with the current values and refuses every
  other downlink (logged, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from edge.channels import sl651_record as record
from edge.channels.sl651_codec import ENQ, NAK, Function, Sl651Error, next_serial
from edge.channels.sl651_frames import frame_size, parse_frame
from edge.channels.sl651_messages import StoredReport, frame_for
from edge.channels.sl651_reports import CentreReply, keep_alive_frame, parse_centre_reply
from edge.outbox import ChannelOutbox, OutboxMessage
from edge.sl651_config import CentreConfig, Sl651Config
from edge.store import StoreWorker
from vocab.model import now_ms
from vocab.waits import stop_tasks

log = structlog.get_logger("edge.channels.sl651")

CONNECT_TIMEOUT_S = 10.0
FIRST_RETRY_S = 0.5
READ_SIZE = 4096


class CentreLink:
    """See the module docstring."""

    def __init__(self, config: Sl651Config, centre: CentreConfig, channel: ChannelOutbox,
                 current: Callable[[], StoredReport], store: StoreWorker,
                 retention_days: int) -> None:
        self.config = config
        self.centre = centre
        self.channel = channel
        self.name = channel.name
        self._current = current  # the 37H answer: the values now
        self._store = store  # the record of frames sent (edge/channels/sl651_record.py)
        self._retention_ms = retention_days * 86_400_000
        self.serial = 0  # the last serial sent; keep-alives repeat it (§6.6.4.2)
        self.connected = False
        self.backlog = 0
        self.last_confirmation_ms: int | None = None
        self.last_error: str | None = None  # kept after a reconnect: the last one seen
        self.last_error_ms: int | None = None
        self.counts = {"sent": 0, "confirmed": 0, "resent": 0, "nak": 0, "set_aside": 0,
                       "bad_frames": 0, "keep_alives": 0, "queries_answered": 0,
                       "downlinks_refused": 0, "connects": 0}
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[CentreReply] = asyncio.Queue()
        self._held: OutboxMessage | None = None  # sent, not yet confirmed
        self._held_serial = 0

    # --- the connection ---------------------------------------------------------------------

    async def run(self) -> None:
        # Serials go on from the last one sent, across restarts and reloads: a centre that
        # keys reports by station and serial would take a counter started again at 1 for
        # repeats of the reports it already has.
        try:
            self.serial = await self._store.run(record.last_serial, self._store.connection,
                                                self.name)
        except Exception:
            log.exception("sl651_record_failed", channel=self.name)
        retry = FIRST_RETRY_S
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):  # not wait_for: vocab/waits.py
                    reader, writer = await asyncio.open_connection(self.centre.host,
                                                                   self.centre.port)
            except (OSError, TimeoutError) as exc:
                self._note_error(f"connect: {exc or type(exc).__name__}")
                await self._refresh_backlog()
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.config.retry_max_s)
                continue
            retry = FIRST_RETRY_S
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.connected = True
        self.counts["connects"] += 1
        log.info("sl651_centre_connected", channel=self.name, host=self.centre.host,
                 port=self.centre.port)
        await self.channel.connected()
        reading = asyncio.create_task(self._read(reader), name=f"{self.name}-read")
        try:
            await self._send_loop(reading)
        except (OSError, ConnectionError) as exc:
            self._note_error(f"connection: {exc}")
        finally:
            await stop_tasks(reading)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._writer = None
            self.connected = False
            self._replies = asyncio.Queue()
            log.warning("sl651_centre_disconnected", channel=self.name, reason=self.last_error)

    def _note_error(self, error: str) -> None:
        if error != self.last_error:
            log.warning("sl651_centre_error", channel=self.name, error=error)
        self.last_error, self.last_error_ms = error, now_ms()

    async def _write(self, frame: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(frame)
        await self._writer.drain()

    # --- sending ------------------------------------------------------------------------------

    async def _send_loop(self, reading: asyncio.Task[None]) -> None:
        idle_since = asyncio.get_running_loop().time()
        while not reading.done():
            message = self._held or await self._next()
            if message is None:
                await self.channel.wait(min(1.0, self.config.keepalive_s))
                await self._refresh_backlog()  # acknowledgements are written in bursts
                loop_time = asyncio.get_running_loop().time()
                if loop_time - idle_since >= self.config.keepalive_s and not reading.done():
                    await self._keep_alive()
                    idle_since = loop_time
                continue
            if not await self._deliver(message, reading):
                return  # no confirmation: start the connection over, the report is held
            idle_since = asyncio.get_running_loop().time()
            await self._refresh_backlog()
            if self.config.pace_s:
                await asyncio.sleep(self.config.pace_s)

    async def _next(self) -> OutboxMessage | None:
        batch = await self.channel.next_batch(1)
        return batch[0] if batch else None

    async def _keep_alive(self) -> None:
        frame = keep_alive_frame(centre=self.centre.address, station=self.config.station_address,
                                 password=self.config.password(), serial=max(self.serial, 1),
                                 sent=now_ms())
        await self._write(frame)
        self.counts["keep_alives"] += 1

    async def _deliver(self, message: OutboxMessage, reading: asyncio.Task[None]) -> bool:
        """Send one report until confirmed; False when the connection should start over."""
        try:
            report = StoredReport.from_payload(message.payload)
        except (ValueError, KeyError, TypeError) as exc:
            await self._set_aside(message, f"unreadable report: {exc}")
            return True
        if self._held is not message:
            self._held, self._held_serial = message, next_serial(self.serial)
            self.serial = self._held_serial
        naks = 0
        for attempt in range(self.config.max_resends + 1):
            await self._refresh_backlog()
            try:
                frame = frame_for(report, self.config, self.centre.address, self._held_serial,
                                  now_ms(), self.config.password())
            except Sl651Error as exc:
                await self._set_aside(message, f"cannot encode: {exc}")
                return True
            await self._write(frame)
            self.counts["sent" if attempt == 0 else "resent"] += 1
            await self._record(record.sent, message.seq, self._held_serial, report.function,
                               frame, now_ms(), now_ms() - self._retention_ms)
            if not self.centre.confirm:
                await self._confirmed(message)
                return True
            reply = await self._await_reply(report.function, reading)
            if reply == "confirmed":
                await self._confirmed(message)
                return True
            if reply == "nak":
                naks += 1
        if naks == self.config.max_resends + 1:
            await self._set_aside(message, f"refused by the centre ({naks} NAK)")
            return True
        self._note_error(f"no confirmation of {report.function:02X}H serial "
                         f"{self._held_serial} after {self.config.max_resends + 1} sends")
        return False

    async def _await_reply(self, function: int, reading: asyncio.Task[None]) -> str:
        deadline = asyncio.get_running_loop().time() + self.config.confirm_timeout_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if reading.done():
                raise ConnectionError(self.last_error or "the centre closed the connection")
            try:
                async with asyncio.timeout(min(left, 0.5)):
                    reply = await self._replies.get()
            except TimeoutError:
                continue
            if reply.confirms(function, self._held_serial):
                return "confirmed"
            if reply.end == NAK and reply.function == function:
                self.counts["nak"] += 1
                log.warning("sl651_report_nak", channel=self.name, function=function,
                            serial=self._held_serial)
                return "nak"
        return "timeout"

    async def _confirmed(self, message: OutboxMessage) -> None:
        self.channel.acknowledge([message.seq])
        self._held = None
        self.counts["confirmed"] += 1
        self.last_confirmation_ms = now_ms()
        outcome = "confirmed" if self.centre.confirm else "sent (not confirmed mode)"
        await self._record(record.outcome, message.seq, outcome, self.last_confirmation_ms)

    async def _set_aside(self, message: OutboxMessage, reason: str) -> None:
        self._held = None
        self.counts["set_aside"] += 1
        await self.channel.set_aside(message.seq, reason)
        await self._record(record.outcome, message.seq, f"set aside: {reason}", now_ms())

    async def _record(self, write: Callable[..., None], *args: Any) -> None:
        """Write to the record of frames; a failure there never stops the reports."""
        try:
            await self._store.run(write, self._store.connection, self.name, *args)
        except Exception:
            log.exception("sl651_record_failed", channel=self.name)

    async def _refresh_backlog(self) -> None:
        with contextlib.suppress(Exception):
            self.backlog = (await self.channel.stats()).depth

    # --- what the centre sends ----------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        while chunk := await reader.read(READ_SIZE):
            buffer += chunk
            while (frame := self._take_frame(buffer)) is not None:
                await self._downlink(frame)
        self._note_error("the centre closed the connection")

    def _take_frame(self, buffer: bytearray) -> bytes | None:
        """The next whole frame from the stream; garbage before a 7E 7E is dropped."""
        start = buffer.find(b"\x7e\x7e")
        if start < 0:
            del buffer[:max(0, len(buffer) - 1)]
            return None
        if start:
            self.counts["bad_frames"] += 1
            del buffer[:start]
        size = frame_size(bytes(buffer))
        if size is None or len(buffer) < size:
            return None
        frame = bytes(buffer[:size])
        del buffer[:size]
        return frame

    async def _downlink(self, raw: bytes) -> None:
        try:
            reply = parse_centre_reply(parse_frame(raw))
        except Sl651Error as exc:
            # A frame with a wrong CRC confirms nothing: the report is sent again.
            self.counts["bad_frames"] += 1
            log.warning("sl651_bad_downlink", channel=self.name, error=str(exc),
                        frame=raw.hex().upper())
            return
        if reply.end != ENQ:
            self._replies.put_nowait(reply)
            return
        if reply.function == Function.QUERY_REALTIME:
            await self._answer_query(reply)
            return
        self.counts["downlinks_refused"] += 1
        log.warning("sl651_downlink_refused", channel=self.name, function=reply.function,
                    note="only the real-time query (37H) is answered")

    async def _answer_query(self, query: CentreReply) -> None:
        current = self._current()
        answer = StoredReport(Function.QUERY_REALTIME, current.observed_ms, current.values)
        serial = query.serial or max(self.serial, 1)
        await self._write(frame_for(answer, self.config, self.centre.address, serial,
                                    now_ms(), self.config.password()))
        self.counts["queries_answered"] += 1

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "backlog": self.backlog,
                "last_confirmation_ms": self.last_confirmation_ms,
                "last_error": self.last_error, "last_error_ms": self.last_error_ms,
                "serial": self.serial, **self.counts}
