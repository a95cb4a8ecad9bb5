"""Remote commands on ``{root}/cmd/<name>``, answered on ``{root}/cmd/<name>/reply``.

Every request is ``{"id": "...", "args": {...}}``; every reply is
``{"id", "ok", "result" | "error"}`` and carries the request's id, so correlation works on
brokers without MQTT 5. A bad request (not JSON, too large, unknown command, missing or
wrongly typed args) gets an error reply naming the field, and changes nothing.

An MQTT 5 request may name a ``ResponseTopic``. The gateway publishes there under its own
identity, so a topic is answered on only inside the reply space: ``{root}/reply/...``,
``{root}/cmd/<name>/reply`` or below the site's ``commands.reply_prefix``. Anything else
(another gateway's root, the gateway's own alarms or telemetry, wildcards, an empty or
overlong topic) is refused: the command is not carried out, the requester gets an error
on the plain reply topic, and the refusal is logged and counted in
``health.commands.reply_topics_refused``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from vocab.configbase import StrictModel

log = structlog.get_logger("edge.commands")

MAX_REQUEST_BYTES = 16 * 1024
# What a reply adds around its result: {"id": ..., "ok": true, "result": ...} with an id of
# up to about 1,000 characters. A result sized to mqtt.max_message_bytes less this fits.
REPLY_ENVELOPE_BYTES = 1024
MAX_READINGS = 5000

CommandName = Literal["inspect", "ack_alarm", "get_status", "reload_config", "get_readings",
                      "resend", "notify_test", "sl651_test"]
MAX_RESEND = 10_000
# A list of seqs and ranges: a platform asks for exactly its gaps, within one request.
MAX_RESEND_ITEMS = 500
# MQTT allows 65,535 bytes; no reply topic of a platform needs more than this.
MAX_REPLY_TOPIC_BYTES = 256
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


SeqRange = tuple[int, int]


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT64


def _seq_item(index: int, item: object) -> SeqRange:
    """One item of ``resend``'s ``seqs``: a seq, or a ``[low, high]`` range."""
    if isinstance(item, int) and _is_seq(item):
        return item, item
    if isinstance(item, list) and len(item) == 2 and all(_is_seq(v) for v in item):
        low, high = int(item[0]), int(item[1])
        if high < low:
            raise PydanticCustomError("resend_seqs", "item {index}: range [{low}, {high}] is "
                                      "reversed", {"index": index, "low": low, "high": high})
        return low, high
    raise PydanticCustomError("resend_seqs", "item {index}: must be a seq or a [low, high] "
                              "range of seqs (integers from 1 to {max})",
                              {"index": index, "max": MAX_INT64})


def merge_ranges(ranges: list[SeqRange]) -> list[SeqRange]:
    """Sorted, overlapping and adjacent ranges joined: each seq is requeued once."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [(low, high) for low, high in merged]


class ResendArgs(StrictModel):
    """A range (``from_seq``, ``to_seq``) or a list (``seqs``: seqs and [low, high])."""

    from_seq: int | None = Field(default=None, ge=1, le=MAX_INT64)
    to_seq: int | None = Field(default=None, ge=1, le=MAX_INT64)
    seqs: list[SeqRange] | None = Field(default=None, min_length=1,
                                        max_length=MAX_RESEND_ITEMS)

    @field_validator("seqs", mode="before")
    @classmethod
    def _seqs(cls, value: object) -> object:
        if not isinstance(value, list):
            raise PydanticCustomError("resend_seqs", "must be a list of seqs and [low, high] "
                                      "ranges")
        if len(value) > MAX_RESEND_ITEMS:
            raise PydanticCustomError("resend_seqs", "at most {max} items per request, got "
                                      "{n}", {"max": MAX_RESEND_ITEMS, "n": len(value)})
        return [_seq_item(i, item) for i, item in enumerate(value)]

    def ranges(self) -> list[SeqRange]:
        """What was asked, as sorted ranges that do not overlap; see ``check_resend``."""
        if self.seqs is not None:
            return merge_ranges(self.seqs)
        assert self.from_seq is not None and self.to_seq is not None
        return [(self.from_seq, self.to_seq)]


def check_resend(args: ResendArgs) -> list[SeqRange]:
    """The ranges a resend asks for, or the error naming the argument that is wrong."""
    if args.seqs is not None:
        if args.from_seq is not None or args.to_seq is not None:
            raise CommandFailed("args: give either seqs or from_seq and to_seq, not both")
    elif args.from_seq is None or args.to_seq is None:
        missing = "args.from_seq" if args.from_seq is None else "args.to_seq"
        raise CommandFailed(f"{missing}: required (or give args.seqs: a list of seqs and "
                            "[low, high] ranges)")
    elif args.to_seq < args.from_seq:
        raise CommandFailed("args.to_seq: must not be below args.from_seq")
    ranges = args.ranges()
    total = sum(high - low + 1 for low, high in ranges)
    if total > MAX_RESEND:
        where = "args.seqs" if args.seqs is not None else "args"
        raise CommandFailed(f"{where}: at most {MAX_RESEND} seqs per request, asked for "
                            f"{total}")
    return ranges


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
    # The requester's MQTT 5 ResponseTopic, once checked: published there too.
    response_topic: str | None = None


@dataclass
class CommandFigures:
    """The commands' counters in health (``health.commands``); kept across reloads."""

    reply_topics_refused: int = 0


def reply_topic_problem(topic: str, root: str, reply_prefix: str | None) -> str | None:
    """Why the gateway must not publish a reply on ``topic``; None if it may."""
    if not topic:
        return "empty"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_REPLY_TOPIC_BYTES:
        return f"longer than {MAX_REPLY_TOPIC_BYTES} bytes"
    if "+" in topic or "#" in topic:
        return "contains a wildcard (+ or #): a reply needs one topic"
    if "\x00" in topic:
        return "contains a NUL character"
    if reply_prefix and topic.startswith(f"{reply_prefix}/") and topic != f"{reply_prefix}/":
        return None
    if re.fullmatch(rf"{re.escape(root)}/(reply/.+|cmd/[^/]+/reply)", topic):
        return None
    if topic == root or topic.startswith(f"{root}/"):
        return (f"one of the gateway's own topics: replies under {root} go to "
                f"{root}/reply/...")
    allowed = f"{root}/reply/..." + (f" or {reply_prefix}/..." if reply_prefix else "")
    return f"outside the reply space ({allowed})"


def _reply(topic: str, request_id: Any, ok: bool, body: Any,
           response_topic: str | None = None) -> Reply:
    message = {"id": request_id, "ok": ok, ("result" if ok else "error"): body}
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from the request ("\\ud83d" is legal JSON) cannot travel as
        # UTF-8: escaped, the requester still gets its reply.
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=True, default=str)
    return Reply(topic, text, response_topic)


def _args_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in ("args", *error["loc"]))
        message = "unknown argument" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


@dataclass
class _Request:
    """A request whose envelope was checked: what the reply needs to be addressed."""

    name: str
    reply_topic: str
    response_topic: str | None  # a checked ResponseTopic, or None
    refused_response: str | None  # why the requested ResponseTopic was refused
    request_id: Any = None


class CommandRouter:
    def __init__(self, root: str, handlers: dict[str, Handler], disabled: frozenset[str],
                 reply_prefix: str | None = None,
                 figures: CommandFigures | None = None,
                 reply_limit: Callable[[str], int] | None = None) -> None:
        self.root = root
        # The most payload a reply on a topic may carry (the MQTT channel's message_limit):
        # a broker drops the connection on a larger packet.
        self.reply_limit = reply_limit
        self.handlers = handlers
        self.disabled = disabled
        self.reply_prefix = reply_prefix
        self.figures = figures if figures is not None else CommandFigures()

    @property
    def subscription(self) -> str:
        return f"{self.root}/cmd/+"

    def _route(self, topic: str, response_topic: str | None) -> _Request:
        name = topic[len(f"{self.root}/cmd/"):]
        request = _Request(name, f"{topic}/reply", None, None)
        if response_topic is None:
            return request
        problem = reply_topic_problem(response_topic, self.root, self.reply_prefix)
        if problem is None:
            request.response_topic = response_topic
            return request
        request.refused_response = problem
        self.figures.reply_topics_refused += 1
        log.warning("command_reply_topic_refused", command=name, reason=problem,
                    response_topic=response_topic[:MAX_REPLY_TOPIC_BYTES],
                    refused_total=self.figures.reply_topics_refused)
        return request

    def _answer(self, request: _Request, ok: bool, body: Any) -> Reply:
        reply = _reply(request.reply_topic, request.request_id, ok, body,
                       request.response_topic)
        if self.reply_limit is None:
            return reply
        size = len(reply.payload.encode("utf-8"))
        limit = min(self.reply_limit(topic) for topic in (reply.topic, reply.response_topic)
                    if topic is not None)
        if size <= limit:
            return reply
        log.warning("command_reply_over_limit", command=request.name, bytes=size,
                    limit=limit)
        return _reply(request.reply_topic, request.request_id, False,
                      f"the reply of {size} bytes is over the uplink's message limit "
                      f"({limit} bytes: mqtt.max_message_bytes, or the broker's packet "
                      "limit if smaller), on which a broker would drop the connection: "
                      "ask for less (get_readings: a smaller limit)", request.response_topic)

    async def handle(self, topic: str, payload: bytes,
                     response_topic: str | None = None) -> Reply | None:
        """Check and carry out one request; ``response_topic`` is its MQTT 5 one."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix) or topic.endswith("/reply"):
            return None
        request = self._route(topic, response_topic)
        if len(payload) > MAX_REQUEST_BYTES:
            return self._answer(request, False, f"request of {len(payload)} bytes is over "
                                f"the {MAX_REQUEST_BYTES} byte limit")
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._answer(request, False, f"request is not valid JSON: {exc}")
        except RecursionError:
            return self._answer(request, False, "request is not valid JSON: nested too deeply")
        if not isinstance(body, dict):
            return self._answer(request, False, "request must be a JSON object "
                                '{"id": ..., "args": {...}}')
        request_id = body.get("id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return self._answer(request, False, "id: a string or integer is required")
        request.request_id = request_id
        if request.refused_response is not None:
            return self._answer(request, False, "ResponseTopic refused, the command was not "
                                f"carried out: {request.refused_response}")
        return await self._dispatch(request, body)

    async def _dispatch(self, request: _Request, body: dict[str, Any]) -> Reply:
        name = request.name
        unknown = set(body) - {"id", "args"}
        if unknown:
            return self._answer(request, False,
                                f"unknown request field(s): {', '.join(sorted(unknown))}")
        if name not in ARGS:
            return self._answer(request, False,
                                f"unknown command {name!r}; known: {', '.join(ARGS)}")
        if name in self.disabled:
            return self._answer(request, False,
                                f"command {name!r} is disabled in this gateway's configuration")
        raw_args = body.get("args", {})
        if not isinstance(raw_args, dict):
            return self._answer(request, False, "args: must be a JSON object")
        try:
            args = ARGS[name].model_validate(raw_args)
        except ValidationError as exc:
            return self._answer(request, False, _args_error(exc))
        try:
            result = await self.handlers[name](args)
        except CommandFailed as exc:
            return self._answer(request, False, str(exc))
        except Exception as exc:
            # The requester always gets an answer; the daemon carries on.
            log.exception("command_failed", command=name)
            return self._answer(request, False,
                                f"internal error: {type(exc).__name__}: {exc}")
        return self._answer(request, True, result)
