"""The keeper's page as an aiohttp application on the daemon's own event loop.

aiohttp was chosen because its server is made to be embedded: an ``AppRunner`` and a
site on the loop that is already running, no signal handlers of its own (the daemon keeps
SIGTERM for its orderly stop), a body-size limit and request-line limits in its C
parser, and a graceful shutdown with a deadline. Measured alternatives are in
docs/web.md (uvicorn replaces the process's SIGINT/SIGTERM handlers while it serves;
microdot bounds neither headers nor time). It costs about 11 MiB of RSS and 0.12 s of
import in the daemon, so it is imported only when ``web:`` is configured.

The page must never slow polling or the uplink:

* reads go through ``KeeperPort``, whose store reads run on the store's reader thread;
* at most ``PAGE_SLOTS`` pages are worked on at once, each within ``PAGE_TIMEOUT_S``;
  a plot reads its history page by page (``HISTORY_PAGE`` readings, at most
  ``MAX_PLOT_READINGS``) and decimates as it goes, so no step holds the loop for long;
* the PIN's scrypt runs on a thread of the page's own, one check at a time;
* an inspection runs once however many phones press the button.

Security (docs/web.md): everything is read-only but two POSTs, acknowledging an alarm
(PIN, CSRF token, lock-out) and the one-click inspection (CSRF token). The CSRF token is
an HMAC of a random per-session cookie with a per-process secret (SameSite=Strict,
HttpOnly). Every response forbids scripts, framing, caching and outside resources.
Every bad request gets a 4xx page in the page's language; nothing shows a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from edge.web import pages, status_pages
from edge.web.config import WebConfig
from edge.web.guard import (
    SECURITY_HEADERS,
    PageError,
    PinCheck,
    PinGuard,
    ProtocolErrorCounter,
    bind,
    form_fields,
    query_params,
)
from edge.web.i18n import Language, text
from edge.web.pin import MAX_PIN_LENGTH, PinHash
from edge.web.plotpage import draw_plot, plot_range
from edge.web.port import Inspection, KeeperPort, SiteInfo
from vocab.model import now_ms
from vocab.waits import stop_tasks

__all__ = ["KeeperWeb", "PinGuard", "start", "stop"]

log = structlog.get_logger("edge.web")

MAX_QUERY = 1024  # characters of query string; the page's own links use < 100
MAX_BODY = 8 * 1024  # a form post is a few hundred bytes
MAX_LINE = 16 * 1024  # request line: longer ones are refused by aiohttp's parser (400)
PAGE_SLOTS = 4
SLOT_WAIT_S = 5.0
PAGE_TIMEOUT_S = 20.0
INSPECT_TIMEOUT_S = 120.0
KEEPALIVE_S = 15.0
SHUTDOWN_S = 3.0
ALARM_HISTORY_MS = 30 * 86_400_000
ALARM_HISTORY_LIMIT = 500
NOTIFICATION_LIMIT = 200
SESSION_COOKIE = "keeper_session"
SESSION: web.RequestKey[str] = web.RequestKey("keeper_session", str)
_SESSION = re.compile(r"^[A-Za-z0-9_-]{32}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
class KeeperWeb:
    """The keeper's page of one gateway: start it on the daemon's loop, stop it at exit."""

    def __init__(self, port: KeeperPort, config: WebConfig, *, retry_s: float = 10.0,
                 page_timeout_s: float = PAGE_TIMEOUT_S, slot_wait_s: float = SLOT_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.config = config
        self.lang: Language = config.language
        self.retry_s = retry_s
        self.page_timeout_s = page_timeout_s
        self.slot_wait_s = slot_wait_s
        self.counters: Counter[str] = Counter()
        self.guard = PinGuard(config.lockout_after, config.lockout_for,
                              config.lockout_site_after, clock)
        self._pin: PinHash | None = config.pin
        self._secret = secrets.token_bytes(32)
        self._slots = asyncio.Semaphore(PAGE_SLOTS)
        self._pins = PinCheck(self.guard)
        self._inspection: asyncio.Task[Inspection] | None = None
        self._runner: web.AppRunner | None = None
        self._retry: asyncio.Task[None] | None = None
        self.listening = False
        # A logger of this server alone, outside the logging tree: nothing it gets reaches
        # the journal, each record only counts.
        http_logger = logging.Logger("edge.web.http")
        http_logger.addFilter(ProtocolErrorCounter(self.counters))
        self._http_logger = http_logger
        self.app = self._make_app()

    # --- lifecycle -----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard_middleware])
        app.router.add_get("/", self._overview)
        app.router.add_get("/alarms", self._alarms)
        app.router.add_post("/alarms/ack", self._ack)
        app.router.add_get("/plot/{device}/{point}", self._plot)
        app.router.add_get("/devices", self._devices)
        app.router.add_post("/inspect", self._inspect)
        return app

    async def start(self) -> None:
        """Listen on the configured address; if it cannot be bound yet (the LAN address
        not up at boot, the port taken), keep trying every ``retry_s`` in the background:
        the daemon goes on either way."""
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, keepalive_timeout=KEEPALIVE_S,
            max_line_size=MAX_LINE, max_field_size=8190, logger=self._http_logger,
            shutdown_timeout=SHUTDOWN_S)
        await self._runner.setup()
        try:
            await self._listen()
        except OSError as exc:
            log.warning("web_listen_failed", listen=self.config.listen, error=str(exc),
                        retry_s=self.retry_s)
            self._retry = asyncio.create_task(self._keep_trying(), name="web-listen")

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = bind(self.config.host, self.config.port)
        site = web.SockSite(self._runner, sock)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        self.listening = True
        log.info("web_listening", listen=self.config.listen, language=self.lang,
                 acknowledging=self._pin is not None)

    async def _keep_trying(self) -> None:
        while not self.listening:
            await asyncio.sleep(self.retry_s)
            try:
                await self._listen()
            except OSError:
                self.counters["listen_retries"] += 1

    async def stop(self) -> None:
        if self._retry is not None:
            await stop_tasks(self._retry)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._inspection is not None and not self._inspection.done():
            self._inspection.cancel()
        self._pins.close()
        if self.listening:
            log.info("web_stopped", listen=self.config.listen)
        self.listening = False

    # --- request plumbing ----------------------------------------------------------------

    def t(self, key: str, **values: object) -> str:
        return text(self.lang, key, **values)

    def _html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8")

    def _error(self, status: int, key: str, **values: object) -> web.Response:
        self.counters[f"http_{status}"] += 1
        return self._html(pages.error_page(self.lang, status, self.t(key, **values)), status)

    @web.middleware
    async def _guard_middleware(self, request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
        session = request.cookies.get(SESSION_COOKIE, "")
        new_session = not _SESSION.match(session)
        if new_session:
            session = secrets.token_urlsafe(24)
        request[SESSION] = session
        self.counters["requests"] += 1
        response: web.StreamResponse
        query = request.rel_url.raw_query_string
        if len(query) > MAX_QUERY:
            response = self._error(414, "error.query_too_long", length=len(query),
                                   limit=MAX_QUERY)
        else:
            try:
                response = await handler(request)
            except PageError as exc:
                response = self._error(exc.status, exc.key, **exc.values)
            except web.HTTPRequestEntityTooLarge:
                response = self._error(413, "error.body_too_large", limit=MAX_BODY)
            except web.HTTPMethodNotAllowed:
                response = self._error(405, "error.method", method=request.method[:20])
            except web.HTTPNotFound:
                response = self._error(404, "error.not_found", path=request.path[:200])
            except web.HTTPException as exc:
                response = self._error(exc.status if 400 <= exc.status < 600 else 400,
                                       "error.title")
            except TimeoutError:
                response = self._error(503, "error.timeout")
            except Exception:
                # A bug or a daemon fault: logged with its traceback, never shown.
                log.exception("web_page_failed", path=request.path[:200])
                response = self._error(500, "error.internal")
        response.headers.update(SECURITY_HEADERS)
        if new_session:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict",
                                path="/")
        return response

    @contextlib.asynccontextmanager
    async def _work(self) -> AsyncIterator[None]:
        """One of PAGE_SLOTS page slots, for at most page_timeout_s."""
        try:
            async with asyncio.timeout(self.slot_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise PageError(503, "error.busy") from None
        try:
            async with asyncio.timeout(self.page_timeout_s):
                yield
        finally:
            self._slots.release()

    def csrf_token(self, session: str) -> str:
        digest = hmac.new(self._secret, b"csrf:" + session.encode(), hashlib.sha256)
        return digest.hexdigest()[:40]

    async def _form(self, request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
        """The posted form, its CSRF token checked; 403 when the token is missing/wrong."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and origin != f"{request.scheme}://" \
                f"{request.host}":
            raise PageError(403, "error.csrf")
        form = form_fields(await request.post(), allowed)
        expected = self.csrf_token(request[SESSION])
        given = form.get("csrf", "")
        if not (request.cookies.get(SESSION_COOKIE) == request[SESSION]
                and hmac.compare_digest(given.encode(), expected.encode())):
            self.counters["csrf_refused"] += 1
            raise PageError(403, "error.csrf")
        return form

    async def _context(self, request: web.Request) -> tuple[pages.PageContext, SiteInfo]:
        site = await self.port.site()
        active = await self.port.active_alarms()
        ctx = pages.PageContext(self.lang, site, now_ms(), self.csrf_token(request[SESSION]),
                                len(active))
        return ctx, site

    # --- pages ---------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        query_params(request, ())
        async with self._work():
            ctx, _ = await self._context(request)
            points = await self.port.points()
        return self._html(pages.overview_page(ctx, points))

    async def _render_alarms(self, request: web.Request, notice_id: str | None = None,
                             error: str = "", status: int = 200) -> web.Response:
        async with self._work():
            ctx, _ = await self._context(request)
            now = ctx.now_ms
            active = await self.port.active_alarms()
            history = await self.port.alarm_history(now - ALARM_HISTORY_MS, now,
                                                    ALARM_HISTORY_LIMIT)
            notifications = await self.port.notifications(now - ALARM_HISTORY_MS, now,
                                                          NOTIFICATION_LIMIT)
            points = await self.port.points()
        notice = ""
        if notice_id is not None:
            acked = any(a.alarm_id == notice_id and a.acknowledged for a in active) or any(
                e.alarm_id == notice_id and e.state == "acknowledged" for e in history)
            if acked:
                notice = self.t("ack.done", alarm=notice_id)
        if status >= 400:
            self.counters[f"http_{status}"] += 1
        return self._html(status_pages.alarms_page(ctx, active, history, ALARM_HISTORY_LIMIT,
                                            notifications, points, self._pin is not None,
                                            notice, error), status)

    async def _alarms(self, request: web.Request) -> web.StreamResponse:
        params = query_params(request, ("acked",))
        acked = params.get("acked")
        if acked is not None and not 1 <= len(acked) <= 200:
            raise PageError(400, "ack.bad_alarm")
        return await self._render_alarms(request, acked)

    async def _ack(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request, ("csrf", "alarm_id", "name", "pin"))
        if self._pin is None:
            raise PageError(403, "ack.disabled")
        alarm_id = form.get("alarm_id", "")
        name = form.get("name", "").strip()
        pin = form.get("pin", "")
        if not 1 <= len(alarm_id) <= 200 or not alarm_id.isprintable():
            raise PageError(400, "ack.bad_alarm")
        if not 1 <= len(name) <= 40 or not name.isprintable():
            return await self._render_alarms(request, error=self.t("ack.bad_name"), status=400)
        if not 1 <= len(pin) <= MAX_PIN_LENGTH:
            return await self._render_alarms(request, error=self.t("ack.bad_pin"), status=400)
        client = request.remote or "unknown"
        refusal = await self._pins.check(client, pin, self._pin)
        if refusal is not None:
            status, key, values = refusal
            return await self._render_alarms(request, error=self.t(key, **values),
                                             status=status)
        # Who, as given; how (the page) travels as the event's ``via``.
        by = name
        outcome = await self.port.acknowledge(alarm_id, by)
        if outcome.status == "acknowledged":
            log.info("web_alarm_acknowledged", alarm_id=alarm_id, by=by, client=client)
            return web.Response(status=303,
                                headers={"Location": f"/alarms?acked={quote(alarm_id, safe='')}"})
        if outcome.status == "not_active":
            return await self._render_alarms(
                request, error=self.t("ack.not_active", alarm=alarm_id), status=409)
        return await self._render_alarms(
            request, error=self.t("ack.failed", detail=outcome.detail), status=503)

    async def _plot(self, request: web.Request) -> web.StreamResponse:
        params = query_params(request, ("period", "end", "from", "to"))
        device = request.match_info["device"]
        point_id = request.match_info["point"]
        ref = f"{device}/{point_id}"
        if not (_ID.match(device) and _ID.match(point_id)):
            raise PageError(404, "error.unknown_point", point=ref[:130])
        async with self._work():
            ctx, site = await self._context(request)
            point = next((p for p in await self.port.points() if p.point == ref), None)
            if point is None:
                raise PageError(404, "error.unknown_point", point=ref)
            period, start, end = plot_range(params, ctx.tz, ctx.now_ms)
            plot = await draw_plot(self.port, ctx, site, point, start, end, self.t)
        return self._html(pages.plot_page(ctx, point, period, plot.svg, plot.series, start,
                                          end, plot.truncated_at))

    async def _devices(self, request: web.Request) -> web.StreamResponse:
        query_params(request, ())
        async with self._work():
            ctx, _ = await self._context(request)
            buses = await self.port.buses()
            channels = await self.port.channels()
        return self._html(status_pages.devices_page(ctx, buses, channels))

    async def _inspect(self, request: web.Request) -> web.StreamResponse:
        await self._form(request, ("csrf",))
        if self._inspection is None or self._inspection.done():
            self._inspection = asyncio.create_task(self.port.inspect(), name="web-inspect")
            self._inspection.add_done_callback(_inspection_done)
            log.info("web_inspection_started", client=request.remote)
        async with asyncio.timeout(INSPECT_TIMEOUT_S):
            # Shielded: a phone that gives up does not cancel the others' inspection.
            result = await asyncio.shield(self._inspection)
        async with self._work():
            ctx, _ = await self._context(request)
        return self._html(status_pages.inspection_page(ctx, result))


def _inspection_done(task: asyncio.Task[Inspection]) -> None:
    """Collect the outcome even when every phone gave up waiting for it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("web_inspection_failed", error=f"{type(exc).__name__}: {exc}")


async def start(port: KeeperPort, config: WebConfig, **options: Any) -> KeeperWeb:
    """Serve the keeper's page on the running loop; returns the server to ``stop``."""
    server = KeeperWeb(port, config, **options)
    await server.start()
    return server


async def stop(server: KeeperWeb) -> None:
    await server.stop()
