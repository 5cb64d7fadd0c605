"""LimitedLog: lines a caller can cause at will, at most N per key a period, with what was held back."""

from __future__ import annotations

import logging

import pytest

from brain.logs import LimitedLog
from tests.conftest import Clock


def test_at_most_limit_lines_per_key_a_period_then_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(0.0)
    limited = LimitedLog(logging.getLogger("brein.test-limited"), limit=2, period=60.0, clock=clock)
    with caplog.at_level(logging.INFO):
        logged = [limited.warning("a", "line %d about a", i) for i in range(5)]
        assert limited.warning("b", "line about b")  # another key has its own limit
        clock.now = 59.9
        assert not limited.warning("a", "still held back")
        clock.now = 60.0
        assert limited.warning("a", "a new minute")
        assert limited.warning("a", "and one more")
    assert logged == [True, True, False, False, False]
    lines = [(r.levelname, r.getMessage(), getattr(r, "suppressed", None)) for r in caplog.records]
    assert lines == [
        ("WARNING", "line 0 about a", None),
        ("WARNING", "line 1 about a", None),
        ("WARNING", "line about b", None),
        ("WARNING", "a new minute; 4 more like it not logged before this one", 4),
        ("WARNING", "and one more", None),
    ]
