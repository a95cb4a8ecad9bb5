"""Sirens and beacons for the people downstream, switched by a relay module on a Modbus bus.

Small reservoirs carry a siren or loudspeaker on a relay (the common RS-485 relay boards,
one coil per relay). A siren sounds while an alarm at or above its ``min_severity`` is
active and unacknowledged, in its pattern (continuous, or ``on_s`` on and ``off_s`` off),
for at most ``max_s`` per alarm; an acknowledgement, the alarm clearing or the maximum
switch it off. Each write goes between the bus's device polls and is read back
(drivers/bustask.py); while nothing changes the relay is asked to hold its state every
``check_interval_s``, so a dead board is found before it is needed. A relay that does
not answer, or reads back otherwise than written, is an alarm of its own, raised through
the pipeline (``Pipeline.commit_equipment_alarm``) and cleared when it answers again.

The sounding state is derived from the stored escalations (when each alarm first reached
each severity), so after a restart a siren resumes where it was, or stays off when its
maximum passed meanwhile; at every start each siren is written once, which also switches
off one a crash left on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from drivers.bus import CoilWrite
from edge.channels.escalation import ACKED, Escalation, is_equipment_alarm
from edge.channels.notify_config import SirenConfig
from edge.channels.notify_texts import Texts
from vocab.model import ActiveAlarm, AlarmTransition, Severity, now_ms
from vocab.waits import wait_set

log = structlog.get_logger("edge.channels.sirens")

# A write waits for the device poll under way on its bus, at most this long.
WRITE_WAIT_S = 30.0
# While a relay fails, it is tried again this often.
FAILING_RETRY_S = 5.0
# Ended alarms are kept this long to tell why a siren stopped.
ENDED_KEEP_MS = 3_600_000
STOP_WAIT_S = 5.0


class CoilBuses(Protocol):
    async def write_coils(self, bus_id: str, unit: int, address: int,
                          values: Sequence[bool]) -> CoilWrite: ...


class AlarmPipeline(Protocol):
    async def commit_equipment_alarm(self, transition: AlarmTransition) -> bool: ...

    def active_alarms(self) -> list[ActiveAlarm]: ...


Publish = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class SirenState:
    config: SirenConfig
    written: bool | None = None  # the state the last read-back confirmed
    relay_ok: bool | None = None
    last_error: str | None = None
    writes: int = 0
    failures: int = 0
    sounding: tuple[str, ...] = ()  # the alarms it sounds for
    next_check: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def health(self) -> dict[str, Any]:
        return {"on": self.written, "sounding_for": list(self.sounding),
                "relay_ok": self.relay_ok, "writes": self.writes, "failures": self.failures,
                "last_error": self.last_error}


def desired(siren: SirenConfig, alarms: Iterable[Escalation],
            now: int) -> tuple[bool, tuple[str, ...], int | None]:
    """(on?, the alarms it sounds for, epoch ms of its next change) at ``now``."""
    max_ms = round(siren.max_s * 1000)
    qualifying = []
    for alarm in alarms:
        if not alarm.pending or is_equipment_alarm(alarm.rule):
            continue
        since = alarm.qualified_ms(siren.min_severity)
        if since is not None and now < since + max_ms:
            qualifying.append((since, alarm.alarm_id))
    if not qualifying:
        return False, (), None
    start = min(since for since, _ in qualifying)
    ids = tuple(alarm_id for _, alarm_id in sorted(qualifying))
    expiry = min(since + max_ms for since, _ in qualifying)
    if siren.off_s == 0:
        return True, ids, expiry
    on_ms, period = round(siren.on_s * 1000), round((siren.on_s + siren.off_s) * 1000)
    phase = (now - start) % period
    on = phase < on_ms
    toggle = now + (on_ms - phase if on else period - phase)
    return on, ids, min(toggle, expiry)


class Sirens:
    """Every configured siren, each served by a task of its own."""

    def __init__(self, configs: Sequence[SirenConfig], buses: CoilBuses,
                 pipeline: AlarmPipeline, texts: Texts, severity: Severity,
                 publish: Publish) -> None:
        self.states = {s.id: SirenState(s) for s in configs}
        self.buses = buses
        self.pipeline = pipeline
        self.texts = texts
        self.severity = severity
        self.publish = publish
        self.alarms: dict[str, Escalation] = {}
        self._stopping = False

    def update(self, escalations: Iterable[Escalation]) -> None:
        """Alarms changed (taken in, acknowledged, cleared): every siren looks again."""
        for escalation in escalations:
            self.alarms[escalation.alarm_id] = escalation
        cutoff = now_ms() - ENDED_KEEP_MS
        for alarm_id in [a for a, e in self.alarms.items()
                         if not e.pending and (e.ended_ms or 0) < cutoff]:
            del self.alarms[alarm_id]
        for state in self.states.values():
            state.wake.set()

    def health(self) -> dict[str, Any]:
        return {siren_id: state.health() for siren_id, state in self.states.items()}

    async def run(self) -> None:
        if self.states:
            await asyncio.gather(*(self._serve(s) for s in self.states.values()))

    async def stop(self) -> None:
        """Switch every siren off (bounded): a stopped gateway must not leave one on.
        Called once the sirens' task is cancelled."""
        self._stopping = True
        writes = [self.buses.write_coils(s.config.bus, s.config.unit, s.config.coil, [False])
                  for s in self.states.values() if s.written is not False]
        if writes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_WAIT_S):  # not wait_for: vocab/waits.py
                    await asyncio.gather(*writes, return_exceptions=True)

    # -- one siren ----------------------------------------------------------------------------

    async def _serve(self, state: SirenState) -> None:
        siren = state.config
        while not self._stopping:
            state.wake.clear()
            now = now_ms()
            want, sounding, change = desired(siren, self.alarms.values(), now)
            if sounding != state.sounding:
                await self._sounding_changed(state, sounding)
            due = time.monotonic() >= state.next_check
            if want != state.written or not state.relay_ok or due:
                await self._write(state, want)
            wait = state.next_check - time.monotonic()
            if change is not None:
                wait = min(wait, (change - now_ms()) / 1000)
            if not state.relay_ok:
                wait = min(wait, FAILING_RETRY_S)
            await wait_set(state.wake, max(0.0, wait))

    async def _write(self, state: SirenState, on: bool) -> None:
        siren = state.config
        try:
            async with asyncio.timeout(WRITE_WAIT_S):
                result = await self.buses.write_coils(siren.bus, siren.unit, siren.coil, [on])
        except TimeoutError:
            result = CoilWrite(siren.bus, siren.unit, siren.coil, (on,), False, None,
                               f"no turn on bus {siren.bus} within {WRITE_WAIT_S:g} s", 0.0)
        state.writes += 1
        state.next_check = time.monotonic() + siren.check_interval_s
        if result.ok:
            state.written = on
            if state.relay_ok is not True:
                if state.relay_ok is False:
                    log.info("siren_relay_answers", siren=siren.id)
                state.relay_ok = True
                state.last_error = None
            await self._relay_alarm(state, None)
            return
        state.failures += 1
        state.last_error = result.error
        if state.relay_ok is not False:
            log.error("siren_relay_failed", siren=siren.id, bus=siren.bus, unit=siren.unit,
                      coil=siren.coil, error=result.error)
            state.relay_ok = False
        await self._relay_alarm(state, result.error or "no answer")

    async def _relay_alarm(self, state: SirenState, error: str | None) -> None:
        """Raise the relay's own alarm when it fails, clear it when it answers again."""
        siren = state.config
        rule = f"siren:{siren.id}"
        active = next((a for a in self.pipeline.active_alarms() if a.rule == rule), None)
        if (error is None) == (active is None):
            return
        stamp = now_ms()
        if error is not None:
            transition = AlarmTransition(f"{rule}@{stamp}", rule, siren.id, "relay",
                                         self.severity, "raised", None, None, stamp,
                                         self.texts.relay_failed(siren.id, error))
        else:
            assert active is not None
            transition = AlarmTransition(active.alarm_id, rule, siren.id, "relay",
                                         active.severity, "cleared", None, None, stamp,
                                         self.texts.relay_back(siren.id))
        try:
            await self.pipeline.commit_equipment_alarm(transition)
        except Exception:
            log.exception("siren_relay_alarm_failed", siren=siren.id)

    async def _sounding_changed(self, state: SirenState, sounding: tuple[str, ...]) -> None:
        siren = state.config
        before, state.sounding = state.sounding, sounding
        if sounding and before:
            return  # still sounding, for another set of alarms: not news
        if sounding:
            reason = "alarm"
            log.warning("siren_sounding", siren=siren.id, alarms=list(sounding))
        else:
            ended = [self.alarms.get(a) for a in before]
            if any(e is not None and e.state == ACKED for e in ended):
                reason = "acknowledged"
            elif all(e is None or not e.pending for e in ended):
                reason = "cleared"
            else:
                reason = "max_duration"
            log.info("siren_silent", siren=siren.id, reason=reason)
        await self.publish({"type": "siren", "siren": siren.id,
                            "state": "sounding" if sounding else "silent",
                            "alarm_ids": list(sounding or before), "reason": reason})
