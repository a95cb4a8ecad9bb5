"""A seq is never given to two different messages, even after a power cut.

A power cut loses what the kernel had not written to the card. The test takes the
store's files as they are right after the store made its seqs durable (the copy is what
the card holds), lets the store hand out and "publish" more seqs, then puts the copy back
(the commits after it never reached the card) and reopens it in a new boot.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.store import Store
from vocab.model import Reading

T0 = 1_700_000_000_000


def poll(i: int) -> tuple[list[Reading], list[object]]:
    return [Reading("level-1", "water_level", T0 + i * 1000, 120.0 + i, "m", "good", None)], []


def card_copy(store_path: Path, to: Path) -> None:
    to.mkdir()
    for suffix in ("", "-wal"):
        source = Path(f"{store_path}{suffix}")
        if source.exists():
            shutil.copyfile(source, to / f"edge.db{suffix}")


def test_seqs_published_before_a_power_cut_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "live" / "edge.db"
    store = Store(path, "normal", boot_id="boot-1")
    store.commit_cycles([poll(0)])
    card_copy(path, tmp_path / "card")  # durable: the reservation was fsynced
    published = [seq for i in range(1, 6) for seq in store.commit_cycles([poll(i)])[0]]
    assert published == [2, 3, 4, 5, 6]
    store.connection.close()  # the power goes: nothing more reaches the card

    after = Store(tmp_path / "card" / "edge.db", "normal", boot_id="boot-2")
    [[seq]] = after.commit_cycles([poll(9)])
    assert seq > max(published), f"seq {seq} was already published with other readings"
    assert after.seqs.skipped > 0
    after.close()


def test_a_killed_process_resumes_without_a_gap(tmp_path: Path) -> None:
    """SIGKILL loses nothing the kernel accepted: same boot, no skipped seqs."""
    path = tmp_path / "edge.db"
    store = Store(path, "normal", boot_id="boot-1")
    assert store.commit_cycles([poll(0), poll(1)]) == [[1], [1]]  # one window, one message
    assert store.commit_cycle(*poll(1)) == [2]
    store.connection.close()  # killed: no clean shutdown
    again = Store(path, "normal", boot_id="boot-1")
    assert again.commit_cycles([poll(2)]) == [[3]]
    again.close()


def test_a_clean_shutdown_leaves_no_gap_after_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = Store(path, "normal", boot_id="boot-1")
    store.commit_cycles([poll(0)])
    store.close()
    again = Store(path, "normal", boot_id="boot-2")
    assert again.commit_cycles([poll(1)]) == [[2]]
    again.close()


def test_messages_of_the_channels_take_reserved_seqs_too(tmp_path: Path) -> None:
    path = tmp_path / "live" / "edge.db"
    store = Store(path, "normal", boot_id="boot-1")
    card_copy(path, tmp_path / "card")
    published = store.queue_message("event", lambda seq: f'{{"seq": {seq}}}')
    assert published == 1
    store.connection.close()
    after = Store(tmp_path / "card" / "edge.db", "normal", boot_id="boot-2")
    assert (after.queue_message("event", lambda seq: f'{{"seq": {seq}}}') or 0) > 1
    after.close()
