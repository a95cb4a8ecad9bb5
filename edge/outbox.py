"""The outbox: every message the gateway must get out, and each channel's place in it.

Readings and alarm transitions are committed to the store with their ``seq`` before any
channel sees them (edge/store.py). This module hands them to the output channels (the
MQTT uplink, SL 651 centres, notifications) and takes their acknowledgements:

* each channel has its own durable place: the rows it has not acknowledged carry its bit
  (edge/outboxrows.py), so a message is kept until every channel that needs it has it,
  and one channel that is away never holds back another;
* **priority**: alarms (and events) go first, then live telemetry and the backlog share
  what is left of a batch, so current data keeps flowing while an old backlog drains;
* **replay**: telemetry that waited longer than ``REPLAY_AGE_S`` when a channel came up
  (or that a ``resend`` put back) is sent oldest first and marked as replay;
* **poison**: a message a channel's peer refuses for good is set aside, kept in the store
  and counted, instead of blocking everything behind it;
* **quota**: the store is kept within its disk quota and retention on a schedule.

A channel's stream cursors are only ever moved on the store thread (in the same step as
the rows they select), so the rows and the cursors cannot disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from edge.outboxrows import Kind, OutboxEntry, OutboxRows, OutboxStats, RequeueReport
from edge.store import StoreWorker
from vocab.model import now_ms
from vocab.waits import wait_set

log = structlog.get_logger("edge.outbox")

# Telemetry older than this when a channel comes up is delivered late: it is sent from
# the backlog, oldest first, and marked as replay.
REPLAY_AGE_S = 10
# Alarms and events go before telemetry; any other kind of a channel's own (an SL 651
# report) is sent in seq order after them.
PRIORITY_KINDS: tuple[Kind, ...] = ("alarm", "event")
# Acknowledgements are written in bursts: one transaction per burst, not per message.
ACK_WRITE_DELAY_S = 0.05


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    kind: str
    payload: str
    replay: bool  # sent from the backlog: late, not live


@dataclass
class ChannelCounts:
    acked: int = 0
    set_aside: int = 0
    last_ack_ms: int | None = None


class _Stream:
    """A channel's cursors over the outbox (store thread only)."""

    def __init__(self, bit: int, kinds: frozenset[str], last_seq: int) -> None:
        self.bit = bit
        self.kinds = kinds
        self.priority: list[Kind] = [k for k in PRIORITY_KINDS if k in kinds]
        self.priority += sorted(kinds - set(PRIORITY_KINDS) - {"telemetry"})
        self.telemetry = "telemetry" in kinds
        self.cursors: dict[str, int] = dict.fromkeys(self.priority, 0)
        # What was queued before this process ran is backlog; live = queued since.
        self.live = last_seq
        self.backlog: list[list[int]] = [[0, last_seq]] if last_seq else []

    def next_batch(self, rows: OutboxRows, room: int) -> list[OutboxMessage]:
        batch: list[OutboxMessage] = []
        for kind in self.priority:
            if room <= 0:
                return batch
            found = rows.pending(kind, self.cursors[kind], room, self.bit)
            if found:
                self.cursors[kind] = found[-1].seq
            batch += [_message(e, False) for e in found]
            room -= len(found)
        if room <= 0 or not self.telemetry:
            return batch
        # Live data gets at least half of what is left, so it stays current while a long
        # backlog drains.
        live = rows.pending("telemetry", self.live, max(1, room // 2), self.bit)
        if live:
            self.live = live[-1].seq
        room -= len(live)
        while room > 0 and self.backlog:
            low, high = self.backlog[0]
            older = [e for e in rows.pending("telemetry", low, room, self.bit)
                     if e.seq <= high]
            if not older:
                self.backlog.pop(0)
                continue
            self.backlog[0][0] = older[-1].seq
            batch += [_message(e, True) for e in older]
            room -= len(older)
        return batch + [_message(e, False) for e in live]

    def cut_backlog(self, rows: OutboxRows) -> None:
        """After a (re)connect: what waited longer than REPLAY_AGE_S becomes backlog.

        Messages queued in the last seconds (the first poll of a fresh start, say) are
        still current and go out as live data.
        """
        cut = rows.last_telemetry_seq_before(self.live, now_ms() - REPLAY_AGE_S * 1000,
                                             self.bit)
        if cut > self.live:
            self.backlog.append([self.live, cut])
            self.live = cut

    def rewind(self, after_seq: int, to_seq: int) -> None:
        """Send the seqs in (after_seq, to_seq] again, as backlog, priority kinds first."""
        self.backlog.insert(0, [after_seq, to_seq])
        for kind in self.cursors:
            self.cursors[kind] = min(self.cursors[kind], after_seq)


def _message(entry: OutboxEntry, replay: bool) -> OutboxMessage:
    return OutboxMessage(entry.seq, entry.kind, entry.payload, replay)


@dataclass
class ChannelOutbox:
    """One channel's view of the outbox: the only way a channel reads or acknowledges."""

    name: str
    _outbox: Outbox
    _stream: _Stream
    counts: ChannelCounts = field(default_factory=ChannelCounts)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout_s: float | None = None) -> None:
        """Until something was committed (or the timeout passed)."""
        await wait_set(self._wake, timeout_s)
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    @property
    def bit(self) -> int:
        return self._stream.bit

    @property
    def kinds(self) -> frozenset[str]:
        return self._stream.kinds

    async def next_batch(self, room: int) -> list[OutboxMessage]:
        """Up to ``room`` messages not yet handed to this channel, in priority order."""
        stream = self._stream
        return await self._outbox.store.run(
            lambda: stream.next_batch(self._outbox.store.rows, room))

    async def connected(self) -> None:
        """The channel's peer is reachable again: what waited long is now backlog."""
        stream = self._stream
        await self._outbox.store.run(lambda: stream.cut_backlog(self._outbox.store.rows))

    def acknowledge(self, seqs: Iterable[int]) -> None:
        """The peer has these messages; written to the store in the next burst."""
        seqs = list(seqs)
        if seqs:
            self._outbox.queue_acks(self, seqs)

    async def set_aside(self, seq: int, reason: str) -> None:
        """Take a message the peer will never accept out of this channel's stream."""
        await self._outbox.flush_acks(delete_now=True)
        rows = self._outbox.store.rows
        await self._outbox.store.run(rows.set_aside, seq, reason, self.name, self._stream.bit)
        self.counts.set_aside += 1
        log.error("outbox_message_set_aside", channel=self.name, seq=seq, reason=reason)

    async def rewind(self, from_seq: int, to_seq: int) -> None:
        """Hand the seqs in [from_seq, to_seq] to this channel again (still queued)."""
        await self._outbox.flush_acks(delete_now=True)
        stream = self._stream
        await self._outbox.store.run(stream.rewind, from_seq - 1, to_seq)
        self.wake()

    async def requeue(self, from_seq: int, to_seq: int) -> RequeueReport:
        """Put a seq range back for this channel from the store, and send it again."""
        return await self.requeue_ranges([(from_seq, to_seq)])

    async def requeue_ranges(self, ranges: list[tuple[int, int]]) -> RequeueReport:
        """Put sorted, disjoint seq ranges back for this channel, in one store step."""
        await self._outbox.flush_acks(delete_now=True)
        rows, stream = self._outbox.store.rows, self._stream

        def requeue() -> RequeueReport:
            report = rows.requeue_ranges(ranges, stream.bit)
            for low, high in reversed(ranges):  # the backlog then runs in seq order
                stream.rewind(low - 1, high)
            return report

        report = await self._outbox.store.run(requeue)
        self.wake()
        return report

    async def stats(self) -> OutboxStats:
        rows = self._outbox.store.rows
        return await self._outbox.store.run(rows.stats, self._stream.bit)


class Outbox:
    """The channels' shared outbox; see the module docstring."""

    def __init__(self, store: StoreWorker) -> None:
        self.store = store
        self.channels: dict[str, ChannelOutbox] = {}
        self._acks: list[tuple[ChannelOutbox, list[int]]] = []
        self._ack_wake = asyncio.Event()

    async def open(self, kinds: Mapping[str, Iterable[str]]) -> None:
        """Register the configured channels (name → kinds of message each takes).

        At start, and again at a reload whose services changed (their channels' users are
        stopped first): a channel that stays keeps its place and counts, a new one takes
        what is committed from now on, and one that went releases its bit.
        """
        # Acks still queued are written while every channel has the bit they were given
        # for: a channel that goes is released with what it acknowledged already cleared.
        await self.flush_acks()
        wanted = {name: frozenset(k) for name, k in kinds.items()}
        bits = await self.store.run(self.store.rows.register_channels, wanted)
        last_seq = self.store.last_seq
        before = self.channels.keys()
        kept = {name: channel for name, channel in self.channels.items()
                if name in wanted and channel.bit == bits[name]
                and channel.kinds == wanted[name]}
        added, removed = wanted.keys() - before, before - wanted.keys()
        self.channels = {name: kept.get(name) or ChannelOutbox(
            name, self, _Stream(bits[name], wanted[name], last_seq)) for name in wanted}
        if added or removed:
            log.info("outbox_channels_registered", added=sorted(added),
                     removed=sorted(removed))

    def channel(self, name: str) -> ChannelOutbox:
        return self.channels[name]

    def notify(self) -> None:
        """New messages were committed: every channel may have something to send."""
        for channel in self.channels.values():
            channel.wake()

    async def enqueue(self, kind: Kind, build: Callable[[int], str]) -> int | None:
        """Commit a message of a channel's own making; see ``StoreWorker.queue_message``."""
        seq = await self.store.queue_message(kind, build)
        if seq is not None:
            self.notify()
        return seq

    async def stats(self) -> OutboxStats:
        """The whole outbox, every channel's messages counted once."""
        return await self.store.run(self.store.rows.stats, None)

    async def set_aside_total(self) -> int:
        return await self.store.run(self.store.rows.set_aside_count)

    # --- quota -----------------------------------------------------------------------------

    async def maintain(self, quota_bytes: int, retention_days: int) -> None:
        """Keep the store within its quota and retention (edge/quota.py)."""
        await self.flush_acks()
        try:
            await self.store.maintain(quota_bytes, now_ms() - retention_days * 86_400_000)
        except Exception:
            log.exception("store_maintenance_failed")

    async def run_maintenance(self, quota_bytes: int, retention_days: int,
                              interval_s: float) -> None:
        while True:
            await self.maintain(quota_bytes, retention_days)
            await asyncio.sleep(interval_s)

    # --- acknowledgements ------------------------------------------------------------------

    def queue_acks(self, channel: ChannelOutbox, seqs: list[int]) -> None:
        self._acks.append((channel, seqs))
        self._ack_wake.set()

    async def flush_acks(self, delete_now: bool = False) -> None:
        """Write the acknowledgements received so far.

        With ``delete_now`` the acknowledged rows leave the outbox at once instead of
        with the next poll: before a stream is rewound or a message set aside, so that
        what was delivered is not handed to the channel a second time.
        """
        if not self._acks and not delete_now:
            return
        batch, self._acks = self._acks, []
        rows = self.store.rows

        def write() -> None:
            for channel, seqs in batch:
                rows.ack(seqs, channel.bit)
            if delete_now:
                rows.flush_acks()

        try:
            await self.store.run(write)
        except Exception:
            # Not deleting is safe: the message is sent again later and the platform
            # drops the duplicate by seq.
            log.exception("outbox_ack_write_failed", count=sum(len(s) for _, s in batch))
            return
        stamp = now_ms()
        for channel, seqs in batch:
            channel.counts.acked += len(seqs)
            channel.counts.last_ack_ms = stamp

    async def run_ack_writer(self) -> None:
        """Batch acknowledgement writes: one store call per burst of acks."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(ACK_WRITE_DELAY_S)
            await self.flush_acks()
