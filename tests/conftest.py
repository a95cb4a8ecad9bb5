from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Broker

# A shell started by systemd (a CI runner under a unit with RuntimeDirectory=) would send
# every test gateway's status file to that folder (edge/statusfile.py); tests read it
# beside their store.
os.environ.pop("RUNTIME_DIRECTORY", None)


def _require_mosquitto() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run scripts/test, which installs it "
                    "(apt-get install -y mosquitto)")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One private broker for the session; tests that stop a broker make their own."""
    _require_mosquitto()
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A persistent broker of this test alone, which it may stop and restart."""
    _require_mosquitto()
    b = Broker(tmp_path, persistent=True)
    b.start()
    yield b
    b.stop()
