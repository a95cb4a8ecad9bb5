"""Fixtures of the fault suite (the broker fixtures come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Everything a test starts is stopped here, in reverse order, whatever happened."""
    with ExitStack() as s:
        yield s
