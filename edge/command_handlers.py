"""What each remote command does, given only the parts of the gateway it needs.

The router (edge/commands.py) parses and checks a request; these carry it out. Each
handler is built with its own ports, so ``get_readings`` can read history and nothing
else, and ``ack_alarm`` can reach the alarm book and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from drivers.devices import DeviceConfig, PointConfig
from edge.buses import BusSupervisor
from edge.commands import (
    AckAlarmArgs,
    CommandFailed,
    GetReadingsArgs,
    Handler,
    NoArgs,
    NotifyTestArgs,
    ResendArgs,
    check_resend,
)
from edge.outbox import ChannelOutbox
from edge.pipeline import AckNotStored, Pipeline
from edge.store import StoreWorker
from vocab.model import now_ms
from vocab.waits import wait_set

INSPECT_TIMEOUT_S = 30.0

Points = Callable[[], Iterable[tuple[DeviceConfig, PointConfig]]]


class Inspection:
    """One-click inspection (一键巡库): poll every device now, report every point."""

    def __init__(self, points: Points, buses: BusSupervisor, pipeline: Pipeline) -> None:
        self.points = points
        self.buses = buses
        self.pipeline = pipeline

    async def __call__(self, _: NoArgs) -> dict[str, Any]:
        requested = now_ms()
        self.buses.poll_all_now()
        devices = {d.id for d, _ in self.points()}
        deadline = time.monotonic() + INSPECT_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(self.pipeline.last_poll.get(d, 0) >= requested for d in devices):
                break
            self.pipeline.polled.clear()
            await wait_set(self.pipeline.polled, 0.5)
        return self.report(requested)

    def report(self, requested_ms: int) -> dict[str, Any]:
        now = now_ms()
        alarms_by_point: dict[str, list[dict[str, Any]]] = {}
        for alarm in self.pipeline.active_alarms():
            alarms_by_point.setdefault(alarm.key, []).append(
                {"id": alarm.alarm_id, "rule": alarm.rule, "severity": alarm.severity,
                 "acked": alarm.acked})
        points = []
        for device, point in self.points():
            key = f"{device.id}/{point.id}"
            reading = self.pipeline.latest.get(key)
            points.append({
                "point": key, "unit": point.unit,
                "value": reading.value if reading else None,
                "quality": reading.quality if reading else "bad",
                "reason": (reading.reason if reading else "never_read"),
                "age_s": round((now - reading.ts_ms) / 1000, 1) if reading else None,
                "fresh": bool(reading and reading.ts_ms >= requested_ms),
                "alarms": alarms_by_point.get(key, []),
            })
        return {"ts": now, "devices": self.buses.device_states(), "points": points}


def acknowledge_alarm(pipeline: Pipeline) -> Handler:
    async def ack_alarm(args: AckAlarmArgs) -> dict[str, Any]:
        try:
            transition = await pipeline.acknowledge(args.alarm_id, args.by, "mqtt")
        except AckNotStored:
            raise CommandFailed("the acknowledgement could not be stored; try again") from None
        if transition is None:
            active = [a.alarm_id for a in pipeline.active_alarms()]
            raise CommandFailed(f"no unacknowledged active alarm {args.alarm_id!r} "
                                f"(active: {', '.join(active) or 'none'}; an alarm the "
                                "storm limiter still holds cannot be acknowledged yet)")
        return {"alarm_id": args.alarm_id, "acknowledged": True}

    return ack_alarm


def get_readings(store: StoreWorker, points: Points, pipeline: Pipeline) -> Handler:
    async def readings(args: GetReadingsArgs) -> dict[str, Any]:
        if args.to_ms < args.from_ms:
            raise CommandFailed("args.to: must not be before args.from")
        device, point = args.point.split("/", 1)
        known = {f"{d.id}/{p.id}" for d, p in points()}
        if args.point not in known and args.point not in pipeline.latest:
            raise CommandFailed(f"args.point: unknown point {args.point!r}")
        rows = await store.readings(device, point, args.from_ms, args.to_ms, args.limit + 1)
        return {
            "point": args.point,
            "readings": [{"ts": r.ts_ms, "value": r.value, "raw": r.raw,
                          "quality": r.quality, "reason": r.reason}
                         for r in rows[: args.limit]],
            "truncated": len(rows) > args.limit,
        }

    return readings


def resend(channel: ChannelOutbox) -> Handler:
    async def resend_seqs(args: ResendArgs) -> dict[str, Any]:
        report = await channel.requeue_ranges(check_resend(args))
        return {"requeued": report.requeued, "already_queued": report.already_queued,
                "missing": report.missing[:1000]}

    return resend_seqs


def get_status(snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> Handler:
    async def status(_: NoArgs) -> dict[str, Any]:
        return await snapshot()

    return status


def reload_config(reload: Callable[[], Awaitable[list[str]]],
                  state: Callable[[], dict[str, Any]]) -> Handler:
    async def reload_now(_: NoArgs) -> dict[str, Any]:
        problems = await reload()
        if problems:
            raise CommandFailed("configuration refused, the running one stays: "
                                + " | ".join(problems))
        return state()

    return reload_now


class TestTexts(Protocol):
    async def send_test(self, contact_id: str, note: str = "") -> dict[str, Any]: ...


def notify_test(service: Callable[[], TestTexts | None]) -> Handler:
    """Send a test text to a contact through the notify service (and its modem)."""

    async def test_text(args: NotifyTestArgs) -> dict[str, Any]:
        notify = service()
        if notify is None:
            raise CommandFailed("this gateway has no notify section: there is no modem to "
                                "send a test text with")
        try:
            return await notify.send_test(args.to, args.note)
        except LookupError as exc:
            raise CommandFailed(f"args.to: {exc.args[0]}") from None

    return test_text


class TestReports(Protocol):
    async def send_test(self) -> dict[str, Any]: ...


def sl651_test(service: Callable[[], TestReports | None]) -> Handler:
    """Queue an SL 651 test report (30H) for every centre (edge/channels/sl651_service.py)."""

    async def test_report(_: NoArgs) -> dict[str, Any]:
        sl651 = service()
        if sl651 is None:
            raise CommandFailed("this gateway has no sl651 section: there is no centre to "
                                "send a test report to")
        return await sl651.send_test()

    return test_report
