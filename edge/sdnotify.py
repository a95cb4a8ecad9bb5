"""systemd's readiness/watchdog protocol (sd_notify(3)) and a liveness gate for its watchdog.

What this models:

* ``SystemdNotifier`` is the client side of sd_notify: newline-separated ``NAME=value`` fields
  sent as one datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an
  abstract-namespace name written with a leading ``@``). Outside systemd the variable is unset
  and every call is a silent no-op, so ``edge run`` behaves the same from a shell. Sending never
  raises: a gateway must keep polling and raising alarms even if PID 1 stops listening, so a
  failure is logged once and the daemon carries on.
* ``watchdog_interval_s`` turns ``$WATCHDOG_USEC`` (set by ``WatchdogSec=``) into the ping
  period: half the timeout, as sd_watchdog_enabled(3) recommends.
* ``WatchdogGate`` decides whether a ping is deserved. A watchdog fed from a timer only proves
  that the timer runs; here the event loop and every bus task ``beat()`` and the daemon sends
  ``WATCHDOG=1`` only while ``all_alive()``. A bus task stuck on a serial read therefore stops
  the pings and systemd restarts the service instead of it silently missing readings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["SystemdNotifier", "WatchdogGate", "watchdog_interval_s"]

log = logging.getLogger(__name__)


def _notify_address(value: str) -> bytes | None:
    """Map ``$NOTIFY_SOCKET`` to an AF_UNIX address; None when unset or not a unix socket.

    ``@name`` is Linux's abstract namespace, whose kernel address starts with a NUL byte.
    Other forms systemd may use (``vsock:...`` since v254) are not for a local daemon.
    """
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


class SystemdNotifier:
    """Send sd_notify messages to systemd; a no-op when not started by systemd.

    One unconnected, non-blocking datagram socket is reused for every message: ``sendto``
    re-resolves the path each time, so messages reach a re-executed PID 1, and a full receive
    queue cannot stall the event loop.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _notify_address(raw)
        self._sock: socket.socket | None = None
        self._failing = False
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket; systemd notifications are off", raw)

    @property
    def enabled(self) -> bool:
        """True when a notification socket was given, i.e. when running under Type=notify."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``NAME=value`` each) as one message; True if the kernel accepted it.

        Newlines inside a field are replaced by spaces: systemd splits the datagram on them, so
        a status text containing ``"\\nREADY=1"`` would otherwise smuggle in a second field.
        """
        if self._address is None or not fields:
            return False
        payload = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                # Once per outage: the watchdog ping alone would log every 15 s otherwise.
                log.warning(
                    "sd_notify to %r failed, carrying on without it: %s", self._address, exc
                )
                self._failing = True
            return False
        if self._failing:
            log.info("sd_notify delivered again")
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up (or a reload) is complete: ``READY=1`` [+ ``STATUS=``]."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Feed the watchdog (``WATCHDOG=1``); call only when ``WatchdogGate.all_alive``."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Announce a config reload: ``RELOADING=1`` with ``MONOTONIC_USEC``.

        systemd >= 253 needs the CLOCK_MONOTONIC timestamp to tell this reload apart from an
        earlier one (Type=notify-reload); older versions ignore it. Send ``ready()`` when done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Announce an orderly shutdown (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Release the socket; a later message opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog applies to this process.

    Half of ``$WATCHDOG_USEC`` leaves a full period of slack for a late ping. When systemd sets
    ``$WATCHDOG_PID`` the watchdog belongs to that process only; a child that inherited the
    environment must not feed it.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class WatchdogGate:
    """Liveness of named sources (the event loop, each bus task), judged on time.monotonic.

    A source is registered when it starts, calls ``beat(name)`` at least every ``max_age_s``
    (also while idle between slow polls), and is unregistered when it is removed on purpose,
    e.g. a bus dropped by a config reload. Beats for unknown names are ignored, so a stopping
    task that beats once more cannot resurrect itself as a source that then looks hung.
    Thread-safe: bus tasks may run in executor threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def register(self, name: str, now: float | None = None) -> None:
        """Start tracking ``name``; registering counts as a beat, giving a full grace period."""
        with self._lock:
            self._last[name] = self._clock() if now is None else now

    def unregister(self, name: str) -> None:
        """Stop tracking ``name``; unknown names are ignored so teardown can be unconditional."""
        with self._lock:
            self._last.pop(name, None)

    def beat(self, name: str, now: float | None = None) -> bool:
        """Record that ``name`` made progress; False (and nothing recorded) if not registered."""
        with self._lock:
            if name not in self._last:
                return False
            self._last[name] = self._clock() if now is None else now
            return True

    def sources(self) -> list[str]:
        """Registered source names, sorted."""
        with self._lock:
            return sorted(self._last)

    def stale(self, now: float, max_age_s: float) -> dict[str, float]:
        """Sources whose last beat is older than ``max_age_s``, mapped to that age in seconds.

        This is what the daemon logs when it withholds a ping, so the journal names the
        culprit before systemd's restart.
        """
        with self._lock:
            return {n: now - t for n, t in sorted(self._last.items()) if now - t > max_age_s}

    def all_alive(self, now: float, max_age_s: float) -> bool:
        """True when every registered source beat within ``max_age_s`` of ``now``.

        With nothing registered this is True; the daemon registers its event loop first, so
        the gate is never empty while it runs.
        """
        return not self.stale(now, max_age_s)
