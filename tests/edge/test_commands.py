"""Command requests: every malformed kind gets a clear error reply and changes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edge.commands import MAX_REQUEST_BYTES, CommandFailed, CommandRouter
from vocab.configbase import StrictModel

ROOT = "reservoir/site/gw"


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, StrictModel]] = []

    def handler(self, name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        async def handle(args: StrictModel) -> Any:
            self.seen.append((name, args))
            if fail:
                raise CommandFailed("no such alarm")
            return {"done": name}
        return handle


def router(disabled: frozenset[str] = frozenset()) -> tuple[CommandRouter, Calls]:
    calls = Calls()
    names = ["inspect", "ack_alarm", "get_status", "reload_config", "get_readings"]
    handlers = {n: calls.handler(n) for n in names}
    return CommandRouter(ROOT, handlers, disabled), calls


def ask(r: CommandRouter, name: str, payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    reply = asyncio.run(r.handle(f"{ROOT}/cmd/{name}", payload))
    assert reply is not None
    assert reply.topic == f"{ROOT}/cmd/{name}/reply"
    return json.loads(reply.payload)


def test_good_request_reaches_its_handler() -> None:
    r, calls = router()
    reply = ask(r, "get_readings", {"id": "q1", "args": {"point": "level-1/water_level",
                                                         "from": 0, "to": 10}})
    assert reply == {"id": "q1", "ok": True, "result": {"done": "get_readings"}}
    assert calls.seen[0][0] == "get_readings"


@pytest.mark.parametrize(("name", "payload", "error"), [
    ("get_status", b"{not json", "request is not valid JSON"),
    ("get_status", b"\xff\xfe", "request is not valid JSON"),
    ("get_status", "[1, 2]", "request must be a JSON object"),
    ("get_status", {"args": {}}, "id: a string or integer is required"),
    ("get_status", {"id": True}, "id: a string or integer is required"),
    ("get_status", {"id": "a", "argz": {}}, "unknown request field(s): argz"),
    ("reboot", {"id": "a"}, "unknown command 'reboot'"),
    ("ack_alarm", {"id": "a"}, "args.alarm_id: Field required"),
    ("ack_alarm", {"id": "a", "args": {"alarm_id": 5}}, "args.alarm_id: Input should be a "
                                                        "valid string"),
    ("ack_alarm", {"id": "a", "args": "x"}, "args: must be a JSON object"),
    ("get_status", {"id": "a", "args": {"verbose": True}}, "args.verbose: unknown argument"),
    ("get_readings", {"id": "a", "args": {"point": "level-1/water_level", "from": "yesterday",
                                          "to": 5}}, "args.from: Input should be a valid "
                                                     "integer"),
    ("get_readings", {"id": "a", "args": {"point": "nope", "from": 0, "to": 5}},
     "args.point: String should match pattern"),
])
def test_malformed_requests_get_an_error_and_reach_no_handler(name: str, payload: Any,
                                                              error: str) -> None:
    r, calls = router()
    reply = ask(r, name, payload)
    assert reply["ok"] is False
    assert error in reply["error"]
    assert calls.seen == []


def test_oversized_request_is_refused() -> None:
    r, calls = router()
    reply = ask(r, "get_status", b"{" + b" " * MAX_REQUEST_BYTES + b"}")
    assert reply["ok"] is False and "byte limit" in reply["error"]
    assert calls.seen == []


def test_disabled_command_is_refused() -> None:
    r, calls = router(frozenset({"reload_config"}))
    reply = ask(r, "reload_config", {"id": 7})
    assert reply == {"id": 7, "ok": False,
                     "error": "command 'reload_config' is disabled in this gateway's "
                              "configuration"}
    assert calls.seen == []


def test_handler_failure_is_an_error_reply() -> None:
    calls = Calls()
    r = CommandRouter(ROOT, {"ack_alarm": calls.handler("ack_alarm", fail=True)}, frozenset())
    reply = ask(r, "ack_alarm", {"id": "x", "args": {"alarm_id": "nope"}})
    assert reply == {"id": "x", "ok": False, "error": "no such alarm"}


def test_replies_and_foreign_topics_are_ignored() -> None:
    r, _ = router()
    assert asyncio.run(r.handle(f"{ROOT}/cmd/get_status/reply", b"{}")) is None
    assert asyncio.run(r.handle("elsewhere/cmd/get_status", b"{}")) is None


def test_integers_beyond_sqlite_are_argument_errors() -> None:
    r, calls = router()
    reply = ask(r, "get_readings", {"id": "a", "args": {"point": "d/p", "from": 0,
                                                        "to": 2**70}})
    assert reply["ok"] is False and "args.to" in reply["error"]
    assert calls.seen == []


def test_an_unexpected_handler_error_still_gets_a_reply() -> None:
    async def broken(args: StrictModel) -> Any:
        raise OverflowError("int too large")

    r = CommandRouter(ROOT, {"get_status": broken}, frozenset())
    reply = ask(r, "get_status", {"id": "z"})
    assert reply == {"id": "z", "ok": False,
                     "error": "internal error: OverflowError: int too large"}


def test_a_reply_over_the_uplink_s_message_limit_is_an_error_that_says_so() -> None:
    # A broker drops the connection on a packet over its limit: the requester gets an
    # error it can act on instead, and the command's work is not repeated or lost.
    async def readings(args: StrictModel) -> Any:
        return {"readings": [{"ts": n, "value": 1.5} for n in range(400)]}

    limits: dict[str, int] = {}

    def limit(topic: str) -> int:
        limits[topic] = 2048
        return 2048

    r = CommandRouter(ROOT, {"get_readings": readings}, frozenset(), reply_limit=limit)
    reply = ask(r, "get_readings", {"id": "big", "args": {"point": "d/p", "from": 0, "to": 1}})
    assert reply["id"] == "big" and reply["ok"] is False
    assert "over the uplink's message limit (2048 bytes" in reply["error"]
    assert "a smaller limit" in reply["error"]
    assert limits == {f"{ROOT}/cmd/get_readings/reply": 2048}
    small = CommandRouter(ROOT, {"get_status": readings}, frozenset(),
                          reply_limit=lambda topic: 64 * 1024)
    assert ask(small, "get_status", {"id": "ok"})["ok"] is True
