"""Fixtures several unit test modules use (pytest finds them here; imported from a test module,
a fixture reads as an unused import)."""

from __future__ import annotations

import pytest


@pytest.fixture
def clock():
    """A clock the test moves by hand: ``clock.now += 2``."""
    class Clock:
        now = 100.0

        def __call__(self):
            return self.now
    return Clock()
