from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Broker


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
