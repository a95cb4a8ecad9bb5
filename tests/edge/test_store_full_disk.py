"""A full disk, on a real small tmpfs: logged once each way, counted, alarms kept in
memory until they can be stored, recovery on its own when space returns; and the quota
counts what is really on disk."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.store import Store, StoreWorker
from rules.engine import RuleEngine
from tests.rules.sample_site import settings
from vocab.model import PollResult, Reading

T0 = 1_700_000_000_000
RULES = [{"id": "head-high", "type": "threshold", "point": "piezo-1/head",
          "high": [{"severity": "warning", "value": 104.0}]}]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of its own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill the file system to the last block; returns the filler to delete later."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\xff" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def poll(device: str, point: str, i: int, value: float) -> PollResult:
    return PollResult("lan", device, tuple(
        Reading(device, point, T0 + i * 1000, value + j, "m", "good", None)
        for j in range(50)), 1, True)


def test_a_full_disk_is_logged_once_counted_and_recovered_from(small_disk: Path) -> None:
    async def scenario() -> None:
        worker = StoreWorker(Store(small_disk / "edge.db"))
        assert worker.reserve.path.exists()

        async def make_room(quota_bytes: int) -> None:
            await worker.maintain(quota_bytes, 0)

        gateway = Pipeline(worker, Outbox(worker), make_room, commit_window_ms=0)
        await gateway.rebuild_engine(
            lambda active: RuleEngine(settings(RULES).rule_site(), active))
        filler = fill(small_disk)
        with capture_logs() as full_logs:
            for i in range(400):
                await gateway._gather_window(poll("level-1", "water_level", i, 120.0))
                await gateway._commit_waiting()
            await gateway._gather_window(poll("piezo-1", "head", 401, 104.5))  # an alarm
            await gateway._commit_waiting()
        events = [e["event"] for e in full_logs]
        assert events.count("store_full") == 1, events
        assert "store_commit_failed" not in events
        assert worker.counters.unstored_readings > 0
        assert [t.state for t in gateway._uncommitted] == ["raised"], "held in memory"

        filler.unlink()  # space returns...
        gateway.room_retry_s = 0.0  # ...and the period of the full state has passed
        with capture_logs() as back_logs:
            await gateway._gather_window(poll("level-1", "water_level", 50, 120.0))
            await gateway._commit_waiting()
        assert [e["event"] for e in back_logs].count("store_full_cleared") == 1
        assert gateway._uncommitted == [] and not gateway.disk_full
        alarms = await worker.run(worker.rows.pending, "alarm", 0, 10)
        assert len(alarms) == 1, "the held alarm was stored once space returned"
        assert worker.reserve.path.exists(), "the reserve is made again"
        worker.close()

    asyncio.run(scenario())


def test_the_quota_counts_the_file_and_its_wal_as_the_disk_does(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = Store(path)
    for i in range(3000):
        store.commit_cycle([Reading(f"piezo-{i % 20}", "head", T0 + i * 1000, 100.0 + i % 7,
                                    "m", "good", None)], [])
    quota = 400_000
    store.maintain(quota_bytes=quota, retention_before_ms=0)
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir()
                  if p.name in ("edge.db", "edge.db-wal"))
    assert on_disk <= quota, f"{on_disk} bytes on disk with a quota of {quota}"
    assert store.used_bytes() == on_disk
    store.close()
