"""Modbus bus poller: one task per bus (RS-485 line or TCP endpoint), polling its devices.

Models a Modbus master on a multi-drop RS-485 line or a Modbus TCP gateway: requests on
one bus go strictly one at a time, devices are served in order of their due time so each
keeps its interval, and buses never wait for each other because each has its own task.

Faults are contained per device: a timeout or lost connection skips that device's
remaining requests this cycle (so a dead slave delays the others by at most one timeout),
an exception response marks only the points of that request bad, and after
``offline_after`` failed cycles the device is offline and re-tried with exponential
backoff. Only state changes are logged; counts go to the health figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from drivers.decode import DeviceConversions, decode_point, failed_points
from drivers.readplan import ReadBlock, plan_reads
from edge.config import DeviceConfig, ModbusRtuBus, ModbusTcpBus
from edge.model import PollResult, Reading, now_ms

log = structlog.get_logger("drivers.modbus")

PollSink = Callable[[PollResult], Awaitable[None]]

MAX_BACKOFF_S = 300.0


@dataclass
class DeviceHealth:
    """What the health topic reports about one device."""

    online: bool = True
    consecutive_failures: int = 0
    last_good_ms: int | None = None
    polls: int = 0
    errors: int = 0
    requests_last_cycle: int = 0
    last_error: str | None = None


@dataclass
class BusHealth:
    connected: bool = False
    cycles: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    last_cycle_monotonic: float = field(default_factory=time.monotonic)


class _RequestFailed(Exception):
    """A request got no usable answer; ``device_dead`` says whether to skip the rest."""

    def __init__(self, reason: str, device_dead: bool):
        super().__init__(reason)
        self.reason = reason
        self.device_dead = device_dead


def make_client(bus: ModbusTcpBus | ModbusRtuBus) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    # reconnect_delay=0: the poller owns reconnection and its backoff, so a dead link
    # is retried on the device schedule instead of by a hidden background loop.
    if isinstance(bus, ModbusTcpBus):
        return AsyncModbusTcpClient(bus.host, port=bus.port, timeout=bus.timeout_s,
                                    retries=bus.retries, reconnect_delay=0, name=bus.id)
    return AsyncModbusSerialClient(
        bus.port, framer=FramerType.RTU, baudrate=bus.baudrate, bytesize=bus.bytesize,
        parity=bus.parity, stopbits=bus.stopbits, timeout=bus.timeout_s,
        retries=bus.retries, reconnect_delay=0, name=bus.id,
    )


class BusPoller:
    def __init__(self, bus: ModbusTcpBus | ModbusRtuBus, devices: list[DeviceConfig],
                 sink: PollSink) -> None:
        self.bus = bus
        self.devices = {d.id: d for d in devices}
        self.plans = {d.id: plan_reads(d.points, d.coalesce, d.max_gap) for d in devices}
        self.conversions = {d.id: DeviceConversions(d) for d in devices}
        self.sink = sink
        self.health = BusHealth(devices={d.id: DeviceHealth() for d in devices})
        self._client = make_client(bus)
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def poll_now(self) -> None:
        """Make every device due immediately (the ``inspect`` command)."""
        now = time.monotonic()
        for device_id in self._due:
            self._due[device_id] = now
        self._wake.set()

    def stop(self) -> None:
        """Finish the current device poll, then return from ``run``."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        start = time.monotonic()
        self._due = {device_id: start for device_id in self.devices}
        try:
            while not self._stopping:
                self.health.last_cycle_monotonic = time.monotonic()
                device_id = min(self._due, key=lambda d: self._due[d], default=None)
                if device_id is None:
                    await self._sleep(3600)
                    continue
                delay = self._due[device_id] - time.monotonic()
                if delay > 0:
                    await self._sleep(delay)
                    continue
                device = self.devices[device_id]
                try:
                    result = await self.poll_device(device)
                except Exception as exc:  # the bus task must never die
                    log.exception("poll_unexpected_error", bus=self.bus.id, device=device_id)
                    result = PollResult(self.bus.id, device_id, tuple(failed_points(
                        device_id, device.points, now_ms(), f"internal_error: {exc}")), 0,
                        False, str(exc))
                self._reschedule(device)
                await self.sink(result)
                self.health.cycles += 1
        finally:
            self._client.close()

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _reschedule(self, device: DeviceConfig) -> None:
        state = self.health.devices[device.id]
        interval = device.poll_interval_s
        if not state.online:
            excess = state.consecutive_failures - device.offline_after
            interval = min(interval * (2 ** max(0, excess)), max(MAX_BACKOFF_S, interval))
        # Keep the phase of the schedule but never queue up missed polls: after a stall
        # the device is polled once, not in a burst.
        due = self._due[device.id] + interval
        self._due[device.id] = max(due, time.monotonic())

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        try:
            ok = await asyncio.wait_for(self._client.connect(), self.bus.timeout_s + 1)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            reason = f"connect_failed: {exc or type(exc).__name__}"
        else:
            reason = "connect_failed"
        if not ok:
            self._set_bus_connected(False)
            raise _RequestFailed(reason, device_dead=True)
        self._set_bus_connected(True)

    def _set_bus_connected(self, connected: bool) -> None:
        if connected != self.health.connected:
            self.health.connected = connected
            log.info("bus_connected" if connected else "bus_disconnected", bus=self.bus.id)

    async def _read(self, device: DeviceConfig, block: ReadBlock) -> list[int] | list[bool]:
        call = {
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
        }[block.table]
        budget = self.bus.timeout_s * (self.bus.retries + 1) + 0.5
        try:
            response = await asyncio.wait_for(
                call(block.address, count=block.count, device_id=device.unit), budget
            )
        except TimeoutError:
            raise _RequestFailed("timeout", device_dead=True) from None
        except ModbusException as exc:
            # pymodbus raises ModbusIOException for no answer and ConnectionException
            # when the link dropped: either way the device did not talk this cycle.
            self._client.close()
            self._set_bus_connected(False)
            raise _RequestFailed(f"no_response: {type(exc).__name__}", device_dead=True) \
                from None
        except OSError as exc:
            self._client.close()
            self._set_bus_connected(False)
            raise _RequestFailed(f"io_error: {exc.strerror or exc}", device_dead=True) from None
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise _RequestFailed(f"exception_response: code {code}", device_dead=False)
        values = response.bits if block.table in ("coil", "discrete") else response.registers
        if len(values) < block.count:
            raise _RequestFailed(f"short_response: {len(values)} of {block.count}",
                                 device_dead=False)
        return list(values)

    async def poll_device(self, device: DeviceConfig) -> PollResult:
        readings: list[Reading] = []
        requests = 0
        failure: str | None = None
        dead = False
        try:
            await self._ensure_connected()
        except _RequestFailed as exc:
            failure, dead = exc.reason, True
        for block in self.plans[device.id]:
            ts = now_ms()
            if dead:
                readings.extend(failed_points(device.id, block.points, ts, failure or "skipped"))
                continue
            requests += 1
            try:
                values = await self._read(device, block)
            except _RequestFailed as exc:
                failure = exc.reason
                dead = exc.device_dead
                readings.extend(failed_points(device.id, block.points, ts, exc.reason))
                continue
            readings.extend(decode_point(device.id, p, block, values, ts) for p in block.points)
            if self.bus.type == "modbus_rtu" and self.bus.inter_request_delay_s:
                await asyncio.sleep(self.bus.inter_request_delay_s)
        readings = self.conversions[device.id].apply(readings)
        ok = failure is None
        self._update_health(device, ok, failure, requests, readings)
        return PollResult(self.bus.id, device.id, tuple(readings), requests, ok, failure)

    def _update_health(self, device: DeviceConfig, ok: bool, failure: str | None,
                       requests: int, readings: list[Reading]) -> None:
        state = self.health.devices[device.id]
        state.polls += 1
        state.requests_last_cycle = requests
        if ok:
            state.consecutive_failures = 0
            state.last_good_ms = readings[-1].ts_ms if readings else now_ms()
            state.last_error = None
            if not state.online:
                state.online = True
                log.info("device_online", bus=self.bus.id, device=device.id)
            return
        state.errors += 1
        state.consecutive_failures += 1
        state.last_error = failure
        if state.online and state.consecutive_failures >= device.offline_after:
            state.online = False
            log.warning("device_offline", bus=self.bus.id, device=device.id, reason=failure,
                        failures=state.consecutive_failures)
