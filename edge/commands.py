"""Remote commands on ``{root}/cmd/<name>``, answered on ``{root}/cmd/<name>/reply``.

Every request is ``{"id": "...", "args": {...}}``; every reply is
``{"id", "ok", "result" | "error"}`` and carries the request's id, so correlation works on
brokers without MQTT 5. A bad request (not JSON, too large, unknown command, missing or
wrongly typed args) gets an error reply naming the field, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import Field, ValidationError

from vocab.configbase import StrictModel

log = structlog.get_logger("edge.commands")

MAX_REQUEST_BYTES = 16 * 1024
MAX_READINGS = 5000

CommandName = Literal["inspect", "ack_alarm", "get_status", "reload_config", "get_readings",
                      "resend", "notify_test", "sl651_test"]
MAX_RESEND = 10_000
MAX_INT64 = 2**63 - 1  # SQLite's integers
# notify_test changes nothing in the gateway, but it acts on the world: a text reaches a
# person's phone and costs the site money. A site where only the keeper on site may cause
# that can disable it like any command that changes state.
STATE_CHANGING: frozenset[str] = frozenset({"ack_alarm", "reload_config", "resend",
                                            "notify_test", "sl651_test"})


class NoArgs(StrictModel):
    """Commands without arguments still refuse unknown ones."""


class AckAlarmArgs(StrictModel):
    alarm_id: str = Field(min_length=1, max_length=200)
    by: str = Field(default="", max_length=100)


class GetReadingsArgs(StrictModel):
    point: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}$")
    from_ms: int = Field(alias="from", ge=0, le=MAX_INT64)
    to_ms: int = Field(alias="to", ge=0, le=MAX_INT64)
    limit: int = Field(default=1000, ge=1, le=MAX_READINGS)


class ResendArgs(StrictModel):
    from_seq: int = Field(ge=1, le=MAX_INT64)
    to_seq: int = Field(ge=1, le=MAX_INT64)


class NotifyTestArgs(StrictModel):
    to: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a contact id")
    note: str = Field(default="", max_length=40, description="added to the test text")


ARGS: dict[str, type[StrictModel]] = {
    "inspect": NoArgs,
    "ack_alarm": AckAlarmArgs,
    "get_status": NoArgs,
    "reload_config": NoArgs,
    "get_readings": GetReadingsArgs,
    "resend": ResendArgs,
    "notify_test": NotifyTestArgs,
    "sl651_test": NoArgs,
}


class CommandFailed(Exception):
    """The command was understood but could not be carried out; the message says why."""


# A handler takes the validated args of its command (the model ARGS names for it).
Handler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: str


def _reply(topic: str, request_id: Any, ok: bool, body: Any) -> Reply:
    message = {"id": request_id, "ok": ok, ("result" if ok else "error"): body}
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from the request ("\\ud83d" is legal JSON) cannot travel as
        # UTF-8: escaped, the requester still gets its reply.
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=True, default=str)
    return Reply(topic, text)


def _args_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in ("args", *error["loc"]))
        message = "unknown argument" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class CommandRouter:
    def __init__(self, root: str, handlers: dict[str, Handler], disabled: frozenset[str]):
        self.root = root
        self.handlers = handlers
        self.disabled = disabled

    @property
    def subscription(self) -> str:
        return f"{self.root}/cmd/+"

    async def handle(self, topic: str, payload: bytes) -> Reply | None:
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix) or topic.endswith("/reply"):
            return None
        name = topic[len(prefix):]
        reply_topic = f"{topic}/reply"
        if len(payload) > MAX_REQUEST_BYTES:
            return _reply(reply_topic, None, False,
                          f"request of {len(payload)} bytes is over the {MAX_REQUEST_BYTES} "
                          "byte limit")
        try:
            request = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return _reply(reply_topic, None, False, f"request is not valid JSON: {exc}")
        except RecursionError:
            return _reply(reply_topic, None, False, "request is not valid JSON: nested too "
                          "deeply")
        if not isinstance(request, dict):
            return _reply(reply_topic, None, False, "request must be a JSON object "
                          '{"id": ..., "args": {...}}')
        request_id = request.get("id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return _reply(reply_topic, None, False, "id: a string or integer is required")
        unknown = set(request) - {"id", "args"}
        if unknown:
            return _reply(reply_topic, request_id, False,
                          f"unknown request field(s): {', '.join(sorted(unknown))}")
        if name not in ARGS:
            return _reply(reply_topic, request_id, False,
                          f"unknown command {name!r}; known: {', '.join(ARGS)}")
        if name in self.disabled:
            return _reply(reply_topic, request_id, False,
                          f"command {name!r} is disabled in this gateway's configuration")
        raw_args = request.get("args", {})
        if not isinstance(raw_args, dict):
            return _reply(reply_topic, request_id, False, "args: must be a JSON object")
        try:
            args = ARGS[name].model_validate(raw_args)
        except ValidationError as exc:
            return _reply(reply_topic, request_id, False, _args_error(exc))
        try:
            result = await self.handlers[name](args)
        except CommandFailed as exc:
            return _reply(reply_topic, request_id, False, str(exc))
        except Exception as exc:
            # The requester always gets an answer; the daemon carries on.
            log.exception("command_failed", command=name)
            return _reply(reply_topic, request_id, False,
                          f"internal error: {type(exc).__name__}: {exc}")
        return _reply(reply_topic, request_id, True, result)
