"""Waiting with a limit never loses a stop (vocab/waits.py)."""

from __future__ import annotations

import ast
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vocab.waits import stop_tasks, wait_set

ROOT = Path(__file__).resolve().parents[1]
DAEMON_PACKAGES = ("vocab", "drivers", "rules", "edge")


async def stop_lost(wait: Callable[[asyncio.Event], Awaitable[object]], turns: int) -> bool:
    """Set the event, let the loop turn ``turns`` times, then cancel the waiting task.
    True if the task went on past its wait after the cancel was sent: a lost stop."""
    event = asyncio.Event()
    cancel_sent = False
    went_on_after_cancel = False

    async def waiter() -> None:
        nonlocal went_on_after_cancel
        await wait(event)
        went_on_after_cancel = cancel_sent

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is now inside its wait
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    cancel_sent = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return went_on_after_cancel


def lost_at_some_turn(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    return any(asyncio.run(stop_lost(wait, turns)) for turns in range(4))


def test_a_stop_arriving_with_the_event_is_honoured() -> None:
    assert not lost_at_some_turn(lambda e: wait_set(e, 10))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was fixed in 3.12")
def test_wait_for_of_this_python_loses_that_stop() -> None:
    """Why the daemon does not use it: the same race with asyncio.wait_for."""
    assert lost_at_some_turn(lambda e: asyncio.wait_for(e.wait(), 10))


def test_wait_set_times_out_and_reports_a_set_event() -> None:
    async def scenario() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        event.set()
        return timed_out, await wait_set(event, None)
    assert asyncio.run(scenario()) == (False, True)


def test_the_daemon_never_calls_asyncio_wait_for() -> None:
    calls = []
    for package in DAEMON_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Attribute) and node.attr == "wait_for"
                        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"):
                    calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == [], f"use asyncio.timeout or vocab.waits.wait_set: {calls}"


def test_stop_tasks_ends_a_task_that_swallows_its_first_cancel() -> None:
    async def stubborn() -> None:
        for _ in range(2):  # what a library's wait_for may do once
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue
        await asyncio.sleep(3600)

    async def scenario() -> bool:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_tasks(task, patience_s=0.01), 5)
        return task.cancelled()
    assert asyncio.run(scenario())


def test_stop_tasks_lets_its_own_caller_be_stopped() -> None:
    async def scenario() -> tuple[bool, bool]:
        deaf_until = asyncio.Event()

        async def deaf() -> None:  # ignores every cancel until told
            while not deaf_until.is_set():
                try:
                    await asyncio.sleep(0.005)
                except asyncio.CancelledError:
                    continue
        victim = asyncio.create_task(deaf())
        stopper = asyncio.create_task(stop_tasks(victim, patience_s=0.01))
        await asyncio.sleep(0.05)
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)
        running = not victim.done()
        deaf_until.set()
        await asyncio.gather(victim, return_exceptions=True)
        return stopper.cancelled(), running
    assert asyncio.run(scenario()) == (True, True)
