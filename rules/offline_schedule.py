"""Which quality screens to ask, on this poll, whether their point went offline.

A point that stops reporting altogether is found at the polls of the other devices. Asking
every screen on every poll costs screens × polls: 200 single-point devices polled each
second make 40,000 questions a second whose answer is almost always "no". Each screen
instead tells when it could first answer "yes" (``Screen.offline_due_ms``); the schedule
keeps those times in a heap and hands out only the screens that are due. A screen is
asked on exactly the polls where the full scan would have found something to say, in the
same order (the order of the rule set), so the transitions are the same.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from rules.base import Screen


class OfflineSchedule:
    def __init__(self, screens: Iterable[Screen]) -> None:
        self.screens = list(screens)  # in the rule set's order: the order they are asked
        self.by_point: dict[str, list[int]] = {}
        for index, screen in enumerate(self.screens):
            self.by_point.setdefault(screen.point, []).append(index)
        # (due, index) entries; an entry whose due differs from ``due[index]`` is stale
        # (the screen has seen a reading since) and is dropped when it surfaces.
        self.heap: list[tuple[int, int]] = []
        self.due: dict[int, int | None] = {}
        self.checked = 0  # screens asked on the last poll: the work this saves, shown
        for index in range(len(self.screens)):
            self.refresh(index)

    def refresh(self, index: int) -> None:
        """Re-read a screen's due time after it has screened or checked."""
        due = self.screens[index].offline_due_ms()
        if self.due.get(index) == due:
            return  # its entry in the heap is still the right one
        self.due[index] = due
        if due is not None:
            heapq.heappush(self.heap, (due, index))

    def refresh_point(self, point: str) -> None:
        for index in self.by_point.get(point, ()):
            self.refresh(index)

    def take_due(self, now_ms: int) -> list[tuple[int, Screen]]:
        """The screens (with their index) that may find their point offline at
        ``now_ms``, in rule order; the caller asks each and then calls ``refresh``."""
        taken: list[int] = []
        while self.heap and self.heap[0][0] <= now_ms:
            due, index = heapq.heappop(self.heap)
            if self.due.get(index) == due:
                self.due[index] = None  # out of the heap until refreshed
                taken.append(index)
        taken.sort()
        self.checked = len(taken)
        return [(i, self.screens[i]) for i in taken]
