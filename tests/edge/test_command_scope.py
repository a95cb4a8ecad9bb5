"""What a request may ask for: resend's seq lists, and where an MQTT 5 reply may go."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edge.commands import (
    MAX_RESEND,
    MAX_RESEND_ITEMS,
    CommandFigures,
    CommandRouter,
    ResendArgs,
    check_resend,
    reply_topic_problem,
)
from edge.config import load_config

ROOT = "reservoir/site/gw"


def resend_router(prefix: str | None = None) -> tuple[CommandRouter, list[Any]]:
    asked: list[Any] = []

    async def resend(args: ResendArgs) -> Any:
        ranges = check_resend(args)
        asked.append(ranges)
        return {"ranges": ranges}

    async def status(_: Any) -> Any:
        asked.append("status")
        return {}

    return CommandRouter(ROOT, {"resend": resend, "get_status": status}, frozenset(),
                         prefix, CommandFigures()), asked


def ask(r: CommandRouter, name: str, body: Any, response_topic: str | None = None
        ) -> tuple[dict[str, Any], str | None]:
    reply = asyncio.run(r.handle(f"{ROOT}/cmd/{name}", json.dumps(body).encode(),
                                 response_topic))
    assert reply is not None and reply.topic == f"{ROOT}/cmd/{name}/reply"
    return json.loads(reply.payload), reply.response_topic


def test_resend_takes_a_list_of_seqs_and_ranges_merged() -> None:
    r, asked = resend_router()
    reply, _ = ask(r, "resend", {"id": 1, "args": {"seqs": [9, 5, [20, 31], [25, 40], 10]}})
    assert reply["ok"] is True, reply
    assert asked == [[(5, 5), (9, 10), (20, 40)]]


def test_resend_still_takes_a_range() -> None:
    r, asked = resend_router()
    reply, _ = ask(r, "resend", {"id": 1, "args": {"from_seq": 3, "to_seq": 7}})
    assert reply["ok"] is True and asked == [[(3, 7)]]


@pytest.mark.parametrize(("args", "error"), [
    ({"seqs": [5, [31, 20]]}, "args.seqs: item 1: range [31, 20] is reversed"),
    ({"seqs": [5, "7"]}, "args.seqs: item 1: must be a seq or a [low, high] range"),
    ({"seqs": [[1, 2, 3]]}, "args.seqs: item 0: must be a seq or a [low, high] range"),
    ({"seqs": [True]}, "args.seqs: item 0: must be a seq"),
    ({"seqs": [0]}, "args.seqs: item 0: must be a seq"),
    ({"seqs": [[1, 2**70]]}, "args.seqs: item 0: must be a seq"),
    ({"seqs": 5}, "args.seqs: must be a list of seqs and [low, high] ranges"),
    ({"seqs": []}, "args.seqs: "),
    ({"seqs": list(range(1, MAX_RESEND_ITEMS + 2))}, f"at most {MAX_RESEND_ITEMS} items"),
    ({"seqs": [[1, MAX_RESEND], 10_001 + MAX_RESEND]},
     f"args.seqs: at most {MAX_RESEND} seqs per request, asked for {MAX_RESEND + 1}"),
    ({"seqs": [1], "from_seq": 1}, "args: give either seqs or from_seq and to_seq"),
    ({"from_seq": 1}, "args.to_seq: required"),
    ({"from_seq": 5, "to_seq": 2}, "args.to_seq: must not be below args.from_seq"),
    ({"seqs": [1], "other": 2}, "args.other: unknown argument"),
])
def test_bad_resend_shapes_name_the_field(args: dict[str, Any], error: str) -> None:
    r, asked = resend_router()
    reply, _ = ask(r, "resend", {"id": "bad", "args": args})
    assert reply["ok"] is False and error in reply["error"], reply
    assert asked == []


@pytest.mark.parametrize("topic", [
    f"{ROOT}/reply/platform-1", f"{ROOT}/cmd/get_status/reply", "platform/replies/gw",
])
def test_reply_space_is_answered(topic: str) -> None:
    assert reply_topic_problem(topic, ROOT, "platform/replies") is None


@pytest.mark.parametrize(("topic", "reason"), [
    ("", "empty"),
    (f"{ROOT}/alarms", "one of the gateway's own topics"),
    (f"{ROOT}/telemetry", "one of the gateway's own topics"),
    (f"{ROOT}/status", "one of the gateway's own topics"),
    (f"{ROOT}/cmd/reload_config", "one of the gateway's own topics"),
    (f"{ROOT}/reply/", "one of the gateway's own topics"),
    ("reservoir/site/other-gw/alarms", "outside the reply space"),
    (f"{ROOT}-evil/reply/x", "outside the reply space"),
    ("platform/replies", "outside the reply space"),
    ("platform/repliesX/a", "outside the reply space"),
    (f"{ROOT}/reply/+", "wildcard"),
    ("platform/replies/#", "wildcard"),
    (f"{ROOT}/reply/" + "x" * 300, "longer than"),
    (f"{ROOT}/reply/a\x00b", "NUL"),
])
def test_reply_topics_outside_the_reply_space_are_refused(topic: str, reason: str) -> None:
    problem = reply_topic_problem(topic, ROOT, "platform/replies")
    assert problem is not None and reason in problem


def test_a_refused_response_topic_is_counted_and_the_command_not_run() -> None:
    r, asked = resend_router()
    reply, response_topic = ask(r, "get_status", {"id": "s"}, f"{ROOT}/alarms")
    assert reply["ok"] is False and "ResponseTopic refused" in reply["error"]
    assert response_topic is None and asked == []
    ask(r, "get_status", b"not json".decode(), "#")
    assert r.figures.reply_topics_refused == 2
    reply, response_topic = ask(r, "get_status", {"id": "ok"}, f"{ROOT}/reply/me")
    assert reply["ok"] is True and response_topic == f"{ROOT}/reply/me"
    assert r.figures.reply_topics_refused == 2


@pytest.mark.parametrize(("prefix", "error"), [
    ("platform/+/replies", "no wildcards"),
    ("platform/replies/", "end with /"),
    ("$SYS/x", "start with / or $"),
])
def test_a_reply_prefix_that_is_not_one_subtree_is_a_config_error(
        tmp_path: Path, prefix: str, error: str) -> None:
    from tests.edge.test_config import GOOD, errors, write

    path = write(tmp_path, GOOD + f"commands: {{reply_prefix: {json.dumps(prefix)}}}\n")
    problems = errors(path)
    assert any("commands.reply_prefix" in p and error in p for p in problems), problems
    good = write(tmp_path, GOOD + "commands: {reply_prefix: platform/replies}\n", "ok.yaml")
    assert load_config(good).settings.commands.reply_prefix == "platform/replies"


def test_requeue_of_several_ranges_queues_exactly_those_in_one_step(tmp_path: Path) -> None:
    from edge.store import Store
    from vocab.model import Reading

    store = Store(tmp_path / "edge.db")
    for i in range(12):
        seqs = store.commit_cycle([Reading("level-1", "water_level", 1_700_000_000_000 + i,
                                           120.0 + i, "m", "good")], [])
        store.outbox.ack(seqs)
    store.outbox.flush_acks()
    assert store.outbox.pending("telemetry", 0, 100) == []
    report = store.outbox.requeue_ranges([(2, 2), (5, 7), (11, 14)])
    # 13 and 14 were never recorded (last seq 12): beyond the end, not missing.
    assert (report.requeued, report.already_queued, report.missing) == (6, 0, [])
    assert [e.seq for e in store.outbox.pending("telemetry", 0, 100)] == [2, 5, 6, 7, 11, 12]
    again = store.outbox.requeue_ranges([(1, 2)])
    assert (again.requeued, again.already_queued) == (1, 1)
    store.close()
