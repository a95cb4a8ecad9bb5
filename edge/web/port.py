"""What the keeper's page needs from the daemon: one small typed port.

Issue #17: the reservoir keeper and the technician read the gateway on a phone over its
Wi-Fi or LAN, with the uplink often down. The page never reaches into the daemon's
internals; it asks a ``KeeperPort`` for frozen snapshots and for the only three actions
it may cause: a history read, a one-click inspection (一键巡库) and the acknowledgement of
an alarm. The daemon implements the port; tests implement it on a real SQLite store.

Rules for an implementation:

* Every method is awaited on the daemon's event loop and must not block it. Reads of the
  store (``history``, ``alarm_history``, ``notifications``, a backlog count) go to the
  store's *reader* connection (``HistoryReader`` or another read-only connection on its
  own thread), never to the writer thread, so a long plot cannot delay a poll's commit.
* ``acknowledge`` takes the same path as the MQTT ``ack_alarm`` command (engine, store,
  uplink notification), so an acknowledgement from the page is stored, published and
  shown exactly like one from the platform.
* Nothing returned may carry a secret: no passwords, keys, tokens, PIN hashes, broker
  credentials or certificate paths. Free-text fields (``reason``, ``detail``,
  ``message``) are shown to whoever can reach the page.

Times are UTC epoch milliseconds; the page shows them in the site's time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from vocab.model import AlarmState, Quality, Reading, Severity

__all__ = [
    "AckOutcome",
    "AckStatus",
    "AlarmEvent",
    "AlarmStatus",
    "BusHealth",
    "ChannelHealth",
    "CharacteristicLevel",
    "DeviceHealth",
    "Inspection",
    "KeeperPort",
    "LimitLine",
    "Notification",
    "PointStatus",
    "RainWindow",
    "RainfallSum",
    "Section",
    "SiteInfo",
]

Section = Literal["level", "rainfall", "seepage", "gradient", "displacement", "other"]
"""Where the overview shows a point: reservoir level, rainfall, piezometers (seepage),
hydraulic gradients, displacement and settlement, everything else."""

RainWindow = Literal["1h", "3h", "6h", "12h", "24h", "day"]
AckStatus = Literal["acknowledged", "not_active", "failed"]


@dataclass(frozen=True, slots=True)
class CharacteristicLevel:
    """One of the site's characteristic levels (domain reference §2.4), in m.

    ``key`` is the name used in ``site.levels``: dead, flood_limit, normal_pool,
    design_flood, check_flood, crest (the page names these; other keys show as given).
    """

    key: str
    value: float


@dataclass(frozen=True, slots=True)
class RainfallSum:
    """Which point carries the rainfall sum of a window (an accumulation rule's output,
    e.g. ``rain/rain_1h``; ``day`` is the rainfall day so far, 08:00–08:00)."""

    window: RainWindow
    point: str


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """The site as configured. ``levels`` in ascending order of value."""

    id: str
    name: str
    gateway: str
    timezone: str  # IANA name, e.g. Asia/Shanghai: every time on the page is shown in it
    levels: tuple[CharacteristicLevel, ...] = ()
    level_point: str | None = None  # the reservoir level point; freeboard = crest − it
    rainfall: tuple[RainfallSum, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitLine:
    """An alarm limit of a point, drawn as a horizontal line on its plot."""

    value: float
    severity: Severity
    side: Literal["high", "low"]
    rule: str


@dataclass(frozen=True, slots=True)
class PointStatus:
    """A point and its latest reading.

    ``quality`` is None when the point was never read (``value`` and ``ts_ms`` are then
    None too). ``stale`` is the daemon's judgement that the latest reading is too old to
    stand for the present (device offline, no reading for its offline_after polls): the
    page then shows it with its age, never as live. ``interval_s`` is the expected
    spacing of readings (the device's poll interval), from which the plot tells a gap;
    None when readings are event-driven.
    """

    point: str  # "device/point"
    name: str  # the configuration's ``name``, or "" (the page then shows ``point``)
    unit: str
    quantity: str  # the configuration's quantity (water_level, piezometric_level, ...)
    section: Section
    value: float | None
    ts_ms: int | None
    quality: Quality | None
    reason: str | None
    stale: bool
    interval_s: float | None = None
    limits: tuple[LimitLine, ...] = ()


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """An active (not cleared) alarm."""

    alarm_id: str
    point: str
    rule: str
    severity: Severity
    state: AlarmState
    since_ms: int  # when it was raised
    updated_ms: int
    value: float | None
    limit: float | None
    message: str
    acknowledged: bool
    acknowledged_by: str | None = None  # "" when acknowledged by someone unnamed
    acknowledged_ms: int | None = None
    acknowledged_via: str | None = None  # how: mqtt (the platform), sms, page, button


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One stored transition of an alarm (the ``alarm_events`` of the store)."""

    alarm_id: str
    point: str
    rule: str
    severity: Severity | None
    state: AlarmState
    ts_ms: int
    value: float | None
    limit: float | None
    message: str
    by: str | None = None  # who acknowledged, for state 'acknowledged'
    via: str | None = None  # how, for state 'acknowledged': mqtt, sms, page, button


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification the gateway sent or tried to send (SMS, siren, ...).

    ``recipient`` is shown with all but the last four digits of a phone number masked.
    """

    ts_ms: int
    channel: str
    recipient: str
    alarm_id: str | None
    status: Literal["sent", "delivered", "failed", "pending"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device: str
    name: str
    online: bool
    last_good_ms: int | None
    polls: int
    failures: int
    consecutive_failures: int
    last_failure: str | None  # the reason of the last failed poll


@dataclass(frozen=True, slots=True)
class BusHealth:
    bus: str
    kind: str  # modbus_rtu, modbus_tcp, serial_line, nmea_gnss
    connected: bool
    devices: tuple[DeviceHealth, ...]


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """An uplink channel: the MQTT platform, an SL 651 centre, SMS, ..."""

    channel: str
    kind: str
    connected: bool
    backlog: int  # messages waiting in its outbox
    oldest_ms: int | None  # creation time of the oldest waiting message
    last_ack_ms: int | None  # the last acknowledgement the peer gave
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Inspection:
    """The result of a one-click inspection: every point after polling every device now.

    ``fresh`` holds the points read after ``requested_ms``; ``complete`` is False when
    some device did not answer before the daemon's deadline.
    """

    requested_ms: int
    finished_ms: int
    points: tuple[PointStatus, ...]
    fresh: frozenset[str]
    complete: bool


@dataclass(frozen=True, slots=True)
class AckOutcome:
    status: AckStatus
    detail: str = ""


class KeeperPort(Protocol):
    """The daemon as the keeper's page sees it."""

    async def site(self) -> SiteInfo:
        """The site, its characteristic levels and its featured points."""
        ...

    async def points(self) -> Sequence[PointStatus]:
        """Every configured and derived point with its latest reading, in config order."""
        ...

    async def active_alarms(self) -> Sequence[AlarmStatus]:
        """Alarms not cleared, most severe first, then oldest first."""
        ...

    async def alarm_history(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[AlarmEvent]:
        """Stored transitions with from_ms <= ts_ms <= to_ms, newest first, at most limit."""
        ...

    async def notifications(self, from_ms: int, to_ms: int,
                            limit: int) -> Sequence[Notification]:
        """Notifications with from_ms <= ts_ms <= to_ms, newest first, at most limit."""
        ...

    async def buses(self) -> Sequence[BusHealth]:
        """Each bus with its devices' health."""
        ...

    async def channels(self) -> Sequence[ChannelHealth]:
        """Each uplink channel with its backlog and last acknowledgement."""
        ...

    async def history(self, point: str, from_ms: int, to_ms: int,
                      limit: int) -> Sequence[Reading]:
        """Stored readings of one point with from_ms <= ts_ms <= to_ms, oldest first, at
        most limit (the page pages on with from_ms = last ts + 1). Read on the store's
        reader, never its writer."""
        ...

    async def inspect(self) -> Inspection:
        """Poll every device now and report every point (the MQTT ``inspect`` command)."""
        ...

    async def acknowledge(self, alarm_id: str, by: str) -> AckOutcome:
        """Acknowledge an active alarm through the path of the MQTT ``ack_alarm``."""
        ...
