"""What the keeper's page refuses, and how: request errors, PIN lock-out, time parsing.

Every bad request becomes a ``PageError`` (an HTTP status and a text of edge/web/i18n.py),
shown as a 4xx page in the page's language, never a traceback. Wrong PINs lock a client
out, and many wrong PINs from anywhere lock PIN entry for the whole site.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog
from aiohttp.web import FileField, Request
from multidict import MultiDictProxy

from edge.web.pin import PinHash, verify_pin_async

log = structlog.get_logger("edge.web")

EARLIEST_MS = 946_684_800_000  # 2000-01-01: nothing older is in any gateway's store
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # A value kept by the phone's browser would come back as if live: never cache.
    "Cache-Control": "no-store",
}


def query_params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters: unknown or repeated ones are refused (400)."""
    query = request.query
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise PageError(400, "error.unknown_param",
                        names=", ".join(n[:40] for n in unknown[:5]),
                        known=", ".join(allowed) or "—")
    for name in set(query):
        if len(query.getall(name)) > 1:
            raise PageError(400, "error.repeated_param", name=name)
    return {name: query[name] for name in query}


def form_fields(data: MultiDictProxy[str | FileField],
                allowed: tuple[str, ...]) -> dict[str, str]:
    """A posted form's fields: unknown, repeated or file fields are refused (400)."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PageError(400, "error.unknown_param", names=", ".join(unknown[:5]),
                        known=", ".join(allowed))
    form: dict[str, str] = {}
    for name in set(data):
        values = data.getall(name)
        if len(values) > 1:
            raise PageError(400, "error.repeated_param", name=name)
        if not isinstance(values[0], str):
            raise PageError(400, "error.form", detail=name)
        form[name] = values[0]
    return form


class PageError(Exception):
    """A request the page refuses: HTTP status and a text key of ``i18n``."""

    def __init__(self, status: int, key: str, **values: object) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.values = values


@dataclass
class _ClientFailures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class PinGuard:
    """Lock-out after repeated wrong PINs: per client, and for the whole site.

    A client (remote address) is locked for ``lock_s`` after ``after`` wrong PINs; its
    count is forgotten ``lock_s`` after its last failure or on a right PIN. Addresses on a
    LAN are easy to change, so ``site_after`` wrong PINs from all clients within
    ``lock_s`` stop PIN entry for everyone for ``lock_s``: with the defaults a 6-digit PIN
    then takes months to guess, at the price that a guesser can keep the keeper from
    acknowledging on the page (the platform's ack_alarm still works).
    """

    def __init__(self, after: int, lock_s: float, site_after: int,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 4096) -> None:
        self.after = after
        self.lock_s = lock_s
        self.site_after = site_after
        self._clock = clock
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _ClientFailures] = OrderedDict()
        self._site: deque[float] = deque()
        self._site_locked_until = 0.0
        self.failures_total = 0
        self.lockouts_total = 0

    def locked_for(self, client: str) -> float:
        """Seconds the client must still wait; 0 when it may try."""
        now = self._clock()
        wait = max(0.0, self._site_locked_until - now)
        state = self._clients.get(client)
        if state is not None:
            wait = max(wait, state.locked_until - now)
        return wait

    def failed(self, client: str) -> int:
        """Record a wrong PIN; the attempts left before a lock-out (0: locked now)."""
        now = self._clock()
        self.failures_total += 1
        state = self._clients.get(client)
        if state is None or now - state.last > self.lock_s:
            state = _ClientFailures()
        state.count += 1
        state.last = now
        self._clients[client] = state
        self._clients.move_to_end(client)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        self._site.append(now)
        while self._site and self._site[0] < now - self.lock_s:
            self._site.popleft()
        left = self.after - state.count
        if left <= 0:
            state.locked_until = now + self.lock_s
            state.count = 0
            self.lockouts_total += 1
            log.warning("web_pin_locked", client=client, lock_s=self.lock_s,
                        failures_total=self.failures_total)
        if len(self._site) >= self.site_after:
            self._site_locked_until = now + self.lock_s
            self._site.clear()
            self.lockouts_total += 1
            log.warning("web_pin_site_locked", lock_s=self.lock_s,
                        failures_total=self.failures_total)
            return 0
        return max(left, 0)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    @property
    def tracked_clients(self) -> int:
        return len(self._clients)


class ProtocolErrorCounter(logging.Filter):
    """aiohttp logs a malformed request with its traceback; count it instead."""

    def __init__(self, counters: Counter[str]) -> None:
        super().__init__()
        self.counters = counters

    def filter(self, record: logging.LogRecord) -> bool:
        self.counters["protocol_errors"] += 1
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_time(name: str, value: str, tz: ZoneInfo, now: int) -> int:
    """Epoch ms from ``2026-12-05T08:00`` (site time), ``2026-12-05`` or epoch ms."""
    stamp: int | None = None
    if len(value) <= 32:
        if value.isdigit() and len(value) <= 15:
            stamp = int(value)
        else:
            with contextlib.suppress(ValueError, OverflowError, OSError):
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=tz)
                stamp = int(parsed.timestamp() * 1000)
    if stamp is None or not EARLIEST_MS <= stamp <= now + 86_400_000:
        raise PageError(400, "error.bad_time", name=name, value=value[:40])
    return stamp


class PinCheck:
    """PIN checks of the page: scrypt on a thread of its own, one check at a time (so a
    burst of guesses cannot outrun the lock-out count), counted by the guard."""

    def __init__(self, guard: PinGuard) -> None:
        self.guard = guard
        self._lock = asyncio.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="web-pin")

    async def check(self, client: str, pin: str,
                    stored: PinHash) -> tuple[int, str, dict[str, object]] | None:
        """None for the right PIN; else the status, the keeper's message and its values."""
        async with self._lock:
            wait = self.guard.locked_for(client)
            if wait <= 0:
                if await verify_pin_async(pin, stored, self._executor):
                    self.guard.succeeded(client)
                    return None
                left = self.guard.failed(client)
                if left > 0:
                    return 403, "ack.wrong_pin", {"left": left}
                wait = self.guard.locked_for(client)
        return 429, "ack.locked", {"minutes": math.ceil(wait / 60)}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
