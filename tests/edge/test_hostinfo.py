"""The clock check of the health topic, as it runs at every health interval."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
from pathlib import Path

import pytest

from edge import hostinfo


def _spawning(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"a child process was started: {args}")


def test_the_clock_check_starts_no_child_process_and_agrees_with_libc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without systemd-timesyncd's flag the kernel is asked. ctypes.util.find_library
    # would run `ldconfig -p` in a child at every health interval.
    monkeypatch.setattr(hostinfo, "TIMESYNC_FLAG", str(tmp_path / "no-flag"))
    found = ctypes.util.find_library("c")
    assert found, "glibc or musl is on every host the gateway runs on"
    buffer = ctypes.create_string_buffer(512)
    state = ctypes.CDLL(found, use_errno=True).adjtimex(buffer)
    expected = None if state < 0 else state != 5  # TIME_ERROR: not synchronised
    monkeypatch.setattr(subprocess, "Popen", _spawning)
    assert hostinfo.clock_synchronized() is expected
    assert hostinfo.clock_synchronized() is expected  # and again, from the cached symbol


def test_the_flag_file_answers_without_asking_the_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    monkeypatch.setattr(hostinfo, "TIMESYNC_FLAG", str(flag))
    monkeypatch.setattr(hostinfo, "_adjtimex", _spawning)
    assert hostinfo.clock_synchronized() is True
