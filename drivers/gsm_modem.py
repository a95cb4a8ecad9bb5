"""The gateway's 4G modem as an SMS channel: AT commands of 3GPP TS 27.005 and TS 27.007.

Sites carry a USB modem (Quectel EC20/EC25/EG25, SIMCom SIM7600, Huawei) so that alarms
reach the keepers by SMS when the uplink is down. Only standard commands are used, so any
of them will do: ``AT``, ``ATE0``, ``AT+CMEE=1`` (numeric errors), ``AT+CPIN?``,
``AT+CREG``/``AT+CEREG`` (registration, with unsolicited changes), ``AT+CSQ``,
``AT+CMGF=0`` (PDU mode: the only way to send Chinese), ``AT+CNMI`` (``+CMTI`` when a
text is stored), ``AT+CMGS``, ``AT+CMGL``, ``AT+CMGR``, ``AT+CMGD``. PDUs are built and
read by drivers/smspdu.py, the command/answer framing is drivers/atport.py, and what the
modem's codes mean is drivers/modem_codes.py.

The port is opened non-blocking by pyserial (timeout 0) and the event loop watches its file
descriptor, so a silent or vanished modem costs no thread and never stalls the loop. One
keeper task owns the link: it opens the port by path (use the stable
``/dev/serial/by-id/usb-Quectel_...-if02-port0`` name of the modem's AT interface, not a
``/dev/ttyUSBn`` number that changes on replug), runs the initialisation dialogue, refreshes
registration and signal every ``status_interval_s``, reads incoming texts, and on an I/O
error (modem unplugged or rebooting) closes the port and re-opens it with bounded
exponential backoff, re-running the dialogue: a modem that rebooted has forgotten ATE0,
the PDU mode and the indications. A modem that stops answering is probed the same way
until it answers again; meanwhile sends fail at once with a clear reason rather than each
waiting out a timeout.

Result codes that nobody asked for (``+CMTI``, ``+CREG``/``+CEREG`` in their unsolicited
form, ``RING``, ``RDY`` after a reboot, ``+CMT`` with its PDU) are recognised wherever
they arrive, also between a command and its answer. ``+CMS ERROR``/``+CME ERROR`` codes
are translated with the tables of TS 27.005 §3.2.5 and TS 27.007 §9.2, and each failure
says whether retrying may help (``retryable``) or someone has to act (a wrong number, a
missing SIM, an unknown SMSC).

Incoming texts are read at start (``AT+CMGL=4``), on each ``+CMTI`` (``AT+CMGR``), and at
every status refresh (a ``+CMTI`` lost while the port was down is not lost for good); the
parts of a concatenated text are joined. Each text is handed to the ``on_text`` callback
and deleted from the modem's storage only after the callback returned, so a reply is never
lost between modem and store; a callback that raises leaves it stored for the next round
(the callback must therefore accept the same text twice after a crash).

Log events are emitted once per change of state (port lost and back, SIM, registration,
responsive or not, sending failing or recovered); attempts are counted in ``health()``.
On the gateway, ModemManager must leave the AT port alone (udev ``ID_MM_DEVICE_IGNORE``),
or both will talk to the modem at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import structlog

from drivers.atport import CTRL_Z, AtPort, NoAnswer, PortLost, Reply
from drivers.bustask import LinkBackoff
from drivers.modem_codes import (
    REGISTERED,
    REGISTRATION_STAT,
    SIM_BY_CME,
    SIM_BY_CMS,
    Registration,
    SimState,
    best_registration,
    cme_reason,
    cms_reason,
    csq_to_dbm,
)
from drivers.modem_config import ModemConfig
from drivers.smspdu import (
    DeliverPdu,
    PduError,
    SubmitPart,
    decode_deliver,
    encode_submit,
    join_parts,
)
from vocab.model import now_ms

log = structlog.get_logger("drivers.gsm_modem")

REOPEN_MIN_S = 0.5
REOPEN_MAX_S = 30.0
# Parts of a concatenated reply that never complete are handed over as they are after this.
PARTS_WAIT_S = 300.0
_INT = re.compile(r"\d+")
_HEX_LINE = re.compile(r"^[0-9A-Fa-f]+$")
# Texts delivered straight to us (+CMT) that on_text refused wait here for the next round.
MAX_UNHANDED = 64


class ModemState(StrEnum):
    CLOSED = "closed"  # the port is not open (not there, or lost)
    INITIALISING = "initialising"
    READY = "ready"
    UNRESPONSIVE = "unresponsive"  # open, but the modem does not answer (or refuses to set up)
    SIM_NOT_READY = "sim_not_ready"
    STOPPED = "stopped"


# -- what the caller gets ----------------------------------------------------------------------


class SendErrorKind(StrEnum):
    CMS_ERROR = "cms_error"  # the modem or network refused: +CMS ERROR: <code>
    CME_ERROR = "cme_error"
    MODEM_ERROR = "modem_error"  # a plain ERROR, or an answer that makes no sense
    TIMEOUT = "timeout"
    PORT_UNAVAILABLE = "port_unavailable"
    UNRESPONSIVE = "modem_unresponsive"
    SIM_NOT_READY = "sim_not_ready"
    NOT_REGISTERED = "not_registered"
    INVALID_NUMBER = "invalid_number"
    INVALID_TEXT = "invalid_text"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SendError:
    """Why a text was not (completely) sent.

    ``retryable``: the same text to the same number may succeed later without anyone
    acting (congestion, no coverage for now, a modem replugged); False when it will keep
    failing until someone fixes something (the number, the SIM, the SMSC, the text).
    """

    kind: SendErrorKind
    reason: str
    retryable: bool
    code: int | None = None
    part: int | None = None  # the part (from 1) that failed, when the text had several

    def __str__(self) -> str:
        code = f" {self.code}" if self.code is not None else ""
        where = f" (part {self.part})" if self.part is not None else ""
        return f"{self.kind.value}{code}: {self.reason}{where}"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What became of one ``send``: the modem's message reference (TP-MR) of every part it
    accepted, in order, and the error if not all were."""

    phone: str
    parts: int  # how many PDUs the text needed (0 when it could not be encoded)
    encoding: str | None  # "gsm7" or "ucs2"
    references: tuple[int, ...]
    error: SendError | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class IncomingText:
    """A text that reached the gateway's number (a keeper's reply)."""

    sender: str  # as the network gave it, e.g. +8613800138000
    text: str
    sent_at: datetime  # the service centre's time stamp, with its UTC offset
    received_ms: int  # when the gateway read it from the modem (UTC epoch ms)
    parts: int = 1
    complete: bool = True  # False: some parts of a concatenated text never arrived

    @property
    def sent_at_ms(self) -> int:
        return int(self.sent_at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ModemHealth:
    port: str
    port_open: bool
    state: str  # ModemState
    sim: str  # SimState
    registration: str  # Registration (the better of CREG and CEREG)
    registered: bool
    signal_dbm: int | None
    signal_ms: int | None  # when the signal was last measured
    sent: int  # texts sent completely
    failed: int  # texts that failed (some parts may have gone)
    queued: int  # sends waiting for the modem right now
    parts_sent: int
    received: int  # incoming texts handed to on_text
    reopens: int  # times the port came back after being lost
    last_error: str | None
    last_error_ms: int | None
    counters: dict[str, int] = field(default_factory=dict)


OnText = Callable[[IncomingText], Awaitable[None]]


# -- the keeper's helpers -----------------------------------------------------------------------


class _Refused(Exception):
    """A command of the set-up dialogue answered with an error."""


def _fields(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    match = _INT.search(value)
    return int(match.group()) if match else None


class GsmModem:
    """One USB modem sending and receiving SMS; see the module docstring.

    ``await start()`` makes the first attempt to open and set up the modem (it returns
    whether or not that worked; the keeper task keeps trying), ``await send(phone, text)``
    sends one text, ``health()`` tells how the modem is, ``await stop()`` closes it.
    """

    def __init__(self, config: ModemConfig, on_text: OnText | None = None) -> None:
        self.config = config
        self.on_text = on_text
        self._counters: dict[str, int] = {}
        self._port = AtPort(
            config.port, config.baudrate, config.command_timeout_s,
            self._on_unsolicited, self._lost, self._counters,
        )
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._state = ModemState.CLOSED
        self._settled = ModemState.CLOSED  # the last state logged
        self._open_backoff = LinkBackoff(REOPEN_MIN_S, REOPEN_MAX_S)
        self._setup_backoff = LinkBackoff(REOPEN_MIN_S, REOPEN_MAX_S)
        self._port_reason: str | None = None  # why the port is closed
        self._setup_reason: str | None = None  # why the modem is not ready while open
        self._sim = SimState.UNKNOWN
        self._creg = Registration.UNKNOWN
        self._cereg = Registration.UNKNOWN
        self._registration = Registration.UNKNOWN
        self._signal_dbm: int | None = None
        self._signal_ms: int | None = None
        self._reference = random.randrange(256)
        self._status_due = 0.0
        self._listing_due = True
        self._reinit = False
        self._new_indexes: list[int] = []
        self._direct: list[str] = []  # PDUs of +CMT (texts not stored by the modem)
        self._undecodable: list[int] = []  # storage indexes of texts that do not decode
        self._unhanded: list[IncomingText] = []
        self._partials: dict[tuple[str, int, int], dict[int, tuple[int | None, DeliverPdu]]] = {}
        self._partials_since: dict[tuple[str, int, int], float] = {}
        self._handler_failing = False
        self._send_failing: str | None = None
        self._sent = 0
        self._failed = 0
        self._parts_sent = 0
        self._queued = 0
        self._received = 0
        self._reopens = 0
        self._was_open = False
        self._last_error: str | None = None
        self._last_error_ms: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._keeper is not None:
            return
        if self._state is ModemState.STOPPED:
            raise RuntimeError("a stopped GsmModem cannot be started again")
        await self._attempt()
        self._keeper = asyncio.create_task(self._keep(), name=f"modem:{self.config.port}")

    async def stop(self) -> None:
        self._stopping = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        self._port.close("driver stopped")
        self._set_state(ModemState.STOPPED)

    async def __aenter__(self) -> GsmModem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what callers use --------------------------------------------------------------------

    @property
    def state(self) -> ModemState:
        return self._state

    def health(self) -> ModemHealth:
        return ModemHealth(
            port=self.config.port,
            port_open=self._port.is_open,
            state=self._state.value,
            sim=self._sim.value,
            registration=self._registration.value,
            registered=self._registration in REGISTERED,
            signal_dbm=self._signal_dbm,
            signal_ms=self._signal_ms,
            sent=self._sent,
            failed=self._failed,
            queued=self._queued,
            parts_sent=self._parts_sent,
            received=self._received,
            reopens=self._reopens,
            last_error=self._last_error,
            last_error_ms=self._last_error_ms,
            counters=dict(self._counters),
        )

    async def send(self, phone: str, text: str) -> SendOutcome:
        """Send ``text`` to ``phone`` as one or more parts; never raises for a failure."""
        started = time.monotonic()
        try:
            plan = encode_submit(
                phone, text, self._next_reference(), self.config.smsc, self.config.max_parts
            )
        except PduError as exc:
            bad_number = "phone number" in str(exc)
            kind = SendErrorKind.INVALID_NUMBER if bad_number else SendErrorKind.INVALID_TEXT
            return self._finish(phone, 0, None, [], SendError(kind, str(exc), False), started)
        references: list[int] = []
        error: SendError | None = None
        self._queued += 1
        queued = True
        try:
            error = await self._wait_ready()
            if error is None:
                async with self._lock:
                    self._queued -= 1
                    queued = False
                    error = self._not_ready_error() or await self._check_registered()
                    for number, part in enumerate(plan.parts, 1):
                        if error is not None:
                            break
                        mr, error = await self._send_part(part)
                        if error is None and mr is not None:
                            references.append(mr)
                            self._parts_sent += 1
                        elif error is not None and len(plan.parts) > 1:
                            error = _with_part(error, number)
        finally:
            if queued:
                self._queued -= 1
        return self._finish(phone, len(plan.parts), plan.encoding, references, error, started)

    # -- sending ---------------------------------------------------------------------------

    def _next_reference(self) -> int:
        self._reference = (self._reference + 1) % 256
        return self._reference

    async def _wait_ready(self) -> SendError | None:
        """Wait out a set-up that is under way (it takes well under a second); anything
        else that is not ready fails the send at once."""
        deadline = time.monotonic() + self.config.command_timeout_s
        while self._state is ModemState.INITIALISING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._state_changed.wait()
        return self._not_ready_error()

    def _not_ready_error(self) -> SendError | None:
        state = self._state
        if state is ModemState.READY:
            return None
        if state is ModemState.STOPPED:
            return SendError(SendErrorKind.STOPPED, "the modem driver is stopped", False)
        if state is ModemState.CLOSED:
            reason = self._port_reason or "port closed"
            return SendError(SendErrorKind.PORT_UNAVAILABLE, reason, True)
        if state is ModemState.SIM_NOT_READY:
            return SendError(
                SendErrorKind.SIM_NOT_READY, self._setup_reason or f"SIM {self._sim}",
                self._sim is SimState.BUSY,
            )
        if state is ModemState.INITIALISING:
            return SendError(SendErrorKind.UNRESPONSIVE, "modem still being set up", True)
        return SendError(
            SendErrorKind.UNRESPONSIVE, self._setup_reason or "modem does not answer", True
        )

    async def _check_registered(self) -> SendError | None:
        """Re-ask registration when the last answer said no: it may have changed since."""
        if self._registration in REGISTERED:
            return None
        try:
            await self._query_registration()
        except NoAnswer as exc:
            return SendError(SendErrorKind.TIMEOUT, str(exc), True)
        except PortLost as exc:
            return SendError(SendErrorKind.PORT_UNAVAILABLE, str(exc), True)
        if self._registration in REGISTERED:
            return None
        return SendError(
            SendErrorKind.NOT_REGISTERED,
            f"modem not registered to a network ({self._registration.value})",
            self._registration is not Registration.DENIED,
        )

    async def _send_part(self, part: SubmitPart) -> tuple[int | None, SendError | None]:
        """AT+CMGS=<length>, the '> ' prompt, the PDU and Ctrl-Z, then +CMGS: <mr> and OK."""
        command = f"AT+CMGS={part.tpdu_length}"
        try:
            reply = await self._port.command(command, self.config.command_timeout_s, prompt=True)
            if reply is None:
                await self._port.write(part.hex.encode("ascii") + CTRL_Z)
                reply = await self._port.final(self.config.send_timeout_s)
        except NoAnswer as exc:
            # Probe and set the modem up again before the next send trusts it.
            self._unresponsive(str(exc))
            return None, SendError(SendErrorKind.TIMEOUT, str(exc), True)
        except PortLost as exc:
            return None, SendError(SendErrorKind.PORT_UNAVAILABLE, str(exc), True)
        if not reply.ok:
            return None, self._reply_error(reply)
        mr = _int(reply.first("+CMGS:"))
        if mr is None:
            self._count("cmgs_without_reference")
        return (mr if mr is not None else -1), None

    def _reply_error(self, reply: Reply) -> SendError:
        kind = SendErrorKind(reply.error or SendErrorKind.MODEM_ERROR.value)
        if reply.code is None:
            return SendError(kind, reply.text or f"{reply.command} answered ERROR", True)
        if kind is SendErrorKind.CME_ERROR:
            reason, retryable = cme_reason(reply.code)
        else:
            reason, retryable = cms_reason(reply.code)
        return SendError(kind, reason, retryable, reply.code)

    def _finish(
        self, phone: str, parts: int, encoding: str | None, references: list[int],
        error: SendError | None, started: float,
    ) -> SendOutcome:
        if error is None:
            self._sent += 1
            if self._send_failing is not None:
                log.info("sms_sending_recovered", port=self.config.port, after=self._send_failing)
                self._send_failing = None
        else:
            self._failed += 1
            self._count(f"send_{error.kind.value}")
            self._note_error(f"send: {error}")
            summary = f"{error.kind.value} {error.code or ''}".rstrip()
            if summary != self._send_failing:
                log.warning("sms_sending_failed", port=self.config.port, error=str(error),
                            retryable=error.retryable)
                self._send_failing = summary
        return SendOutcome(
            phone, parts, encoding, tuple(references), error, time.monotonic() - started
        )

    # -- the keeper ------------------------------------------------------------------------

    async def _keep(self) -> None:
        # asyncio.timeout rather than wait_for throughout: on Python 3.11 wait_for can
        # swallow a cancellation that coincides with the awaited event, and stop() would
        # then wait for the keeper's next round (up to 30 s).
        while not self._stopping:
            try:
                await self._attempt()
                await self._sleep(self._next_wake())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the keeper must outlive any surprise
                self._count("keeper_errors")
                self._note_error(f"keeper: {type(exc).__name__}: {exc}")
                log.exception("modem_keeper_error", port=self.config.port)
                await asyncio.sleep(1.0)

    async def _attempt(self) -> None:
        """One round of the keeper: open, set up, refresh, read texts, as due."""
        now = time.monotonic()
        if not self._port.is_open:
            if now < self._open_backoff.retry_at or not self._open():
                return
            await self._set_up()
        elif self._state is not ModemState.READY or self._reinit:
            if now < self._setup_backoff.retry_at and not self._reinit:
                return
            await self._set_up()
        if self._state is not ModemState.READY:
            return
        try:
            if time.monotonic() >= self._status_due:
                await self._refresh_status()
            await self._collect_texts()
        except NoAnswer as exc:
            self._unresponsive(str(exc))
        except PortLost:
            pass

    def _next_wake(self) -> float:
        if not self._port.is_open:
            return self._open_backoff.retry_at
        if self._state is not ModemState.READY:
            return self._setup_backoff.retry_at
        due = self._status_due
        if self._partials_since:
            due = min(due, min(self._partials_since.values()) + PARTS_WAIT_S)
        return due

    async def _sleep(self, until: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        timeout = max(0.0, until - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def _set_up(self) -> None:
        """The initialisation dialogue; leaves the state READY, SIM_NOT_READY or
        UNRESPONSIVE (or CLOSED if the port went meanwhile)."""
        self._reinit = False
        self._set_state(ModemState.INITIALISING)
        timeout = self.config.command_timeout_s
        try:
            async with self._lock:
                self._port.discard_input()
                await self._expect_ok("AT", timeout)
                await self._expect_ok("ATE0", timeout)
                await self._expect_ok("AT+CMEE=1", timeout)
                sim, reason = await self._query_sim()
                self._set_sim(sim)
                if sim is not SimState.READY:
                    self._setup_reason = reason
                    self._note_error(f"setup: {reason}")
                    self._setup_backoff.failed("setup_failed")
                    self._set_state(ModemState.SIM_NOT_READY)
                    return
                await self._expect_ok("AT+CMGF=0", timeout)
                # Buffer indications while the link is busy, deliver +CMTI for stored texts.
                if not (await self._port.command("AT+CNMI=2,1,0,0,0", timeout)).ok:
                    reply = await self._port.command("AT+CNMI=1,1,0,0,0", timeout)
                    if not reply.ok:
                        # Stored texts are still found by the listing at each status check.
                        self._count("cnmi_refused")
                # Unsolicited +CREG/+CEREG on changes; a 2G/3G-only modem refuses CEREG.
                for command in ("AT+CREG=1", "AT+CEREG=1"):
                    if not (await self._port.command(command, timeout)).ok:
                        self._count("registration_reports_refused")
                await self._query_registration()
                await self._query_signal()
        except NoAnswer as exc:
            self._unresponsive(str(exc))
            return
        except _Refused as exc:
            self._unresponsive(str(exc))
            return
        except PortLost:
            return
        self._setup_reason = None
        self._setup_backoff.succeeded()
        self._status_due = time.monotonic() + self.config.status_interval_s
        self._listing_due = True
        self._set_state(ModemState.READY)

    def _unresponsive(self, reason: str) -> None:
        if not self._port.is_open:
            return
        self._setup_reason = reason
        self._note_error(reason)
        self._setup_backoff.failed("setup_failed")
        self._set_state(ModemState.UNRESPONSIVE)
        self._wake.set()

    async def _refresh_status(self) -> None:
        async with self._lock:
            await self._query_registration()
            await self._query_signal()
        self._status_due = time.monotonic() + self.config.status_interval_s
        self._listing_due = True

    async def _expect_ok(self, command: str, timeout: float) -> Reply:
        reply = await self._port.command(command, timeout)
        if not reply.ok:
            raise _Refused(f"modem refused set-up: {reply.describe()}")
        return reply

    async def _query_sim(self) -> tuple[SimState, str]:
        reply = await self._port.command("AT+CPIN?", self.config.command_timeout_s)
        if reply.ok:
            value = (reply.first("+CPIN:") or "").upper()
            if value == "READY":
                return SimState.READY, "SIM ready"
            if value == "SIM PIN":
                return SimState.PIN_REQUIRED, "SIM PIN required"
            if value == "SIM PUK":
                return SimState.PUK_REQUIRED, "SIM PUK required"
            return SimState.LOCKED, f"SIM locked: {value or 'no +CPIN answer'}"
        if reply.code is not None:
            table = SIM_BY_CME if reply.error == "cme_error" else SIM_BY_CMS
            state = table.get(reply.code, SimState.UNKNOWN)
            return state, f"{reply.text} ({reply.error} {reply.code})"
        return SimState.UNKNOWN, f"SIM state unknown: {reply.describe()}"

    async def _query_registration(self) -> None:
        timeout = self.config.command_timeout_s
        for command, prefix in (("AT+CREG?", "+CREG:"), ("AT+CEREG?", "+CEREG:")):
            reply = await self._port.command(command, timeout)
            value = reply.first(prefix) if reply.ok else None
            stat = None
            if value is not None:
                parts = _fields(value)
                # The answer to the query is <n>,<stat>[,...]; the unsolicited form (which
                # may also land here) has no <n>: AtPort hands that to _on_unsolicited.
                stat = _int(parts[1]) if len(parts) >= 2 else None
            state = REGISTRATION_STAT.get(stat, Registration.UNKNOWN) if stat is not None \
                else Registration.UNKNOWN
            if prefix == "+CREG:":
                self._creg = state
            else:
                self._cereg = state
        self._update_registration()

    async def _query_signal(self) -> None:
        reply = await self._port.command("AT+CSQ", self.config.command_timeout_s)
        value = reply.first("+CSQ:") if reply.ok else None
        rssi = _int(_fields(value)[0]) if value else None
        self._signal_dbm = csq_to_dbm(rssi) if rssi is not None else None
        self._signal_ms = now_ms()

    # -- incoming texts --------------------------------------------------------------------

    async def _collect_texts(self) -> None:
        if self.on_text is None:
            self._new_indexes.clear()
            return
        stored: list[tuple[int | None, str]] = []
        timeout = self.config.command_timeout_s
        if self._listing_due or self._new_indexes:
            async with self._lock:
                if self._listing_due:
                    self._new_indexes.clear()
                    reply = await self._port.command("AT+CMGL=4", timeout)
                    if reply.ok:
                        stored.extend(_listed_pdus(reply.lines, "+CMGL:"))
                    else:
                        self._count("listing_refused")
                    self._listing_due = False
                while self._new_indexes:
                    index = self._new_indexes.pop(0)
                    reply = await self._port.command(f"AT+CMGR={index}", timeout)
                    pdus = _listed_pdus(reply.lines, "+CMGR:", index) if reply.ok else []
                    stored.extend(pdus)
                    if not pdus:
                        self._count("read_refused")
        stored.extend((None, pdu) for pdu in self._direct)
        self._direct.clear()
        unhanded, self._unhanded = self._unhanded, []
        for text in unhanded:
            await self._hand_over(text, [])
        for index, pdu_hex in stored:
            self._take(index, pdu_hex)
        undecodable, self._undecodable = self._undecodable, []
        await self._delete(undecodable)
        for text, indexes in self._completed():
            await self._hand_over(text, indexes)

    def _take(self, index: int | None, pdu_hex: str) -> None:
        try:
            part = decode_deliver(pdu_hex)
        except PduError as exc:
            # Not a text we can read (a status report, garbage): log it with its PDU so it
            # is not lost silently, and free the storage it takes.
            self._count("undecodable_texts")
            log.warning("sms_incoming_undecodable", port=self.config.port, index=index,
                        pdu=pdu_hex, error=str(exc))
            if index is not None:
                self._undecodable.append(index)
            return
        concat = part.concat
        key = (part.sender, concat.reference, concat.count) if concat else \
            (part.sender, -1 - (index if index is not None else id(part)), 1)
        number = concat.number if concat else 1
        self._partials.setdefault(key, {})[number] = (index, part)
        self._partials_since.setdefault(key, time.monotonic())

    def _completed(self) -> list[tuple[IncomingText, list[int]]]:
        done = []
        now = time.monotonic()
        for key in list(self._partials):
            parts = self._partials[key]
            count = key[2]
            complete = len(parts) >= count
            if not complete and now - self._partials_since[key] < PARTS_WAIT_S:
                continue
            del self._partials[key]
            del self._partials_since[key]
            ordered = [parts[n] for n in sorted(parts)]
            first = ordered[0][1]
            text = IncomingText(
                sender=first.sender,
                text=join_parts([p.text for _, p in ordered]),
                sent_at=first.sent_at,
                received_ms=now_ms(),
                parts=count,
                complete=complete,
            )
            done.append((text, [i for i, _ in ordered if i is not None]))
        return done

    async def _hand_over(self, text: IncomingText, indexes: list[int]) -> None:
        assert self.on_text is not None
        try:
            await self.on_text(text)
        except Exception as exc:
            # Left in the modem's storage: the next listing hands it over again. A text
            # that was never stored waits in memory for the next round instead.
            self._count("incoming_handler_errors")
            if not indexes and len(self._unhanded) < MAX_UNHANDED:
                self._unhanded.append(text)
            self._note_error(f"on_text: {type(exc).__name__}: {exc}")
            if not self._handler_failing:
                log.warning("sms_incoming_handler_failed", port=self.config.port,
                            error=f"{type(exc).__name__}: {exc}")
                self._handler_failing = True
            return
        if self._handler_failing:
            log.info("sms_incoming_handler_recovered", port=self.config.port)
            self._handler_failing = False
        self._received += 1
        await self._delete(indexes)

    async def _delete(self, indexes: list[int]) -> None:
        if not indexes:
            return
        async with self._lock:
            for index in indexes:
                reply = await self._port.command(f"AT+CMGD={index}", self.config.command_timeout_s)
                if not reply.ok:
                    self._count("delete_refused")

    # -- the port ----------------------------------------------------------------------------

    def _open(self) -> bool:
        port = self.config.port
        reason = self._port.open()
        if reason is not None:
            if self._port_reason != reason:
                log.warning("modem_port_unavailable", port=port, reason=reason)
                self._note_error(reason)
            self._port_reason = reason
            self._open_backoff.failed("open_failed")
            self._count("open_failures")
            return False
        if self._was_open:
            self._reopens += 1
        self._was_open = True
        self._port_reason = None
        self._open_backoff.succeeded()
        log.info("modem_port_open", port=port, reopens=self._reopens)
        return True

    def _lost(self, reason: str) -> None:
        """The port failed (AtPort has closed it): the modem was unplugged or rebooted."""
        self._port_reason = reason
        self._note_error(reason)
        self._count("port_lost")
        log.warning("modem_port_lost", port=self.config.port, reason=reason)
        self._open_backoff.lost("io_error")  # try at once, back off from there
        self._set_state(ModemState.CLOSED)
        self._settled = ModemState.CLOSED  # so that coming back is logged
        self._wake.set()

    def _on_unsolicited(self, line: str, next_line: str | None) -> None:
        if line.startswith("+CMTI:"):
            index = _int(line.split(",")[-1])
            if index is not None and index not in self._new_indexes:
                self._new_indexes.append(index)
            self._count("new_text_indications")
            self._wake.set()
        elif line.startswith(("+CREG:", "+CEREG:")):
            prefix, value = line.split(":", 1)
            stat = _int(_fields(value)[0])
            state = REGISTRATION_STAT.get(stat, Registration.UNKNOWN) \
                if stat is not None else Registration.UNKNOWN
            if prefix == "+CREG":
                self._creg = state
            else:
                self._cereg = state
            self._update_registration()
        elif line == "RING" or line.startswith(("+CRING:", "+CLIP:")):
            self._count("rings")  # a call to the gateway's number: not answered
        elif line.startswith("+CMT:") and next_line is not None:
            # A text delivered straight to us instead of stored (a modem that ignored
            # AT+CNMI's <mt>=1): nothing to delete afterwards.
            self._direct.append(next_line)
            self._wake.set()
        elif line == "RDY" or line.startswith("+CPIN:"):
            # The modem restarted behind our back (a Quectel says RDY when it boots): it
            # has forgotten ATE0, PDU mode and the indications.
            if not self._reinit and self._state is ModemState.READY:
                log.warning("modem_restarted", port=self.config.port, said=line)
            self._count("modem_restarts")
            self._reinit = True
            self._wake.set()  # the keeper sets it up again
        else:
            self._count("other_indications")  # status reports, cell broadcast, +CGREG

    # -- state and figures -----------------------------------------------------------------

    def _set_state(self, state: ModemState) -> None:
        if state is self._state:
            return
        self._state = state
        self._state_changed.set()
        # INITIALISING passes between every retry: log only where the modem settles, and
        # only when that differs from where it settled last.
        if state in (ModemState.INITIALISING, ModemState.CLOSED) or state is self._settled:
            return
        self._settled = state
        if state is ModemState.READY:
            log.info("modem_ready", port=self.config.port, sim=self._sim.value,
                     registration=self._registration.value, signal_dbm=self._signal_dbm)
        elif state in (ModemState.UNRESPONSIVE, ModemState.SIM_NOT_READY):
            log.warning(f"modem_{state.value}", port=self.config.port,
                        reason=self._setup_reason)

    def _set_sim(self, sim: SimState) -> None:
        if sim is not self._sim:
            if self._sim is not SimState.UNKNOWN or sim is not SimState.READY:
                log.info("modem_sim", port=self.config.port, sim=sim.value,
                         previous=self._sim.value)
            self._sim = sim

    def _update_registration(self) -> None:
        registration = best_registration(self._creg, self._cereg)
        if registration is not self._registration:
            log.info("modem_registration", port=self.config.port,
                     registration=registration.value, previous=self._registration.value)
            self._registration = registration

    def _count(self, what: str, n: int = 1) -> None:
        self._counters[what] = self._counters.get(what, 0) + n

    def _note_error(self, error: str) -> None:
        self._last_error = error
        self._last_error_ms = now_ms()


def _with_part(error: SendError, part: int) -> SendError:
    return SendError(error.kind, error.reason, error.retryable, error.code, part)


def _listed_pdus(
    lines: list[str], prefix: str, index: int | None = None
) -> list[tuple[int | None, str]]:
    """(storage index, PDU) of every text in an AT+CMGL / AT+CMGR answer: each header line
    is followed by its PDU. A line that is not hex (noise) is skipped rather than taken for
    the PDU, which would get a good text deleted as undecodable."""
    found: list[tuple[int | None, str]] = []
    header: str | None = None
    for line in lines:
        if line.startswith(prefix):
            header = line
            continue
        if header is not None and _HEX_LINE.match(line):
            value = header[len(prefix):]
            found.append((index if index is not None else _int(value.split(",")[0]), line))
            header = None
    return found

