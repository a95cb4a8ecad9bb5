"""Waiting with a limit never loses a stop (vocab/waits.py)."""

from __future__ import annotations

import ast
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from vocab.waits import Wake, stop_tasks, wait_set

ROOT = Path(__file__).resolve().parents[1]
DAEMON_PACKAGES = ("vocab", "drivers", "rules", "edge")


# What a waiter waits on: how to set it, and the wait itself.
Waiting = tuple[Callable[[], object], Callable[[], Awaitable[object]]]


async def stop_lost(make: Callable[[], Waiting], turns: int) -> bool:
    """Set what the task waits on, let the loop turn ``turns`` times, then cancel the
    waiting task. True if the task went on past its wait after the cancel was sent: a
    lost stop."""
    signal, wait = make()
    cancel_sent = False
    went_on_after_cancel = False

    async def waiter() -> None:
        nonlocal went_on_after_cancel
        await wait()
        went_on_after_cancel = cancel_sent

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is now inside its wait
    signal()
    for _ in range(turns):
        await asyncio.sleep(0)
    cancel_sent = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return went_on_after_cancel


def lost_at_some_turn(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    def on_an_event() -> Waiting:
        event = asyncio.Event()
        return event.set, lambda: wait(event)
    return any(asyncio.run(stop_lost(on_an_event, turns)) for turns in range(4))


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


def test_a_stop_arriving_with_the_wake_is_honoured() -> None:
    def on_a_wake() -> Waiting:
        wake = Wake()
        return wake.set, lambda: wake.sleep_until(asyncio.get_running_loop().time() + 10)
    assert not any(asyncio.run(stop_lost(on_a_wake, turns)) for turns in range(4))


def test_a_wake_sleeps_until_its_moment_or_until_set() -> None:
    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        started = loop.time()
        timed_out = await wake.sleep_until(started + 0.02)
        slept = loop.time() - started
        # Two sleepers at once (a bus task and a listening driver's line wait): set
        # wakes both, long before their moment.
        both = asyncio.gather(wake.sleep_until(loop.time() + 10),
                              wake.sleep_until(loop.time() + 10))
        await asyncio.sleep(0)
        wake.set()
        woken = await both
        # Set before the sleep: no sleep at all; cleared: it sleeps again.
        at_once = await wake.sleep_until(loop.time() + 10)
        wake.clear()
        again = await wake.sleep_until(loop.time() + 0.01)
        return [timed_out, slept >= 0.02, woken, at_once, again, wake._sleepers]
    assert asyncio.run(scenario()) == [False, True, [True, True], True, False, []]


def test_a_cancelled_sleep_leaves_no_sleeper_and_no_timer() -> None:
    async def scenario() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        timers = len(loop._scheduled)  # type: ignore[attr-defined]  # the loop's timer heap
        task = asyncio.create_task(wake.sleep_until(loop.time() + 60))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        live = sum(1 for t in loop._scheduled if not t.cancelled())  # type: ignore[attr-defined]
        return wake._sleepers, live - timers
    assert asyncio.run(scenario()) == ([], 0)


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
