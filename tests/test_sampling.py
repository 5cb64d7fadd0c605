"""The probability floor mixed into a learner's pmf (``learner.min_probability``)."""

from __future__ import annotations

import pytest

from bandit.sampling import floored


@pytest.mark.parametrize(
    ("pmf", "floor", "expected"),
    [
        ([0.97, 0.01, 0.02, 0.0], 0.05, [0.05 + 0.8 * 0.97, 0.05 + 0.8 * 0.01, 0.05 + 0.8 * 0.02, 0.05]),
        ([0.97, 0.01, 0.02, 0.0], 0.0, [0.97, 0.01, 0.02, 0.0]),  # off
        ([0.4, 0.3, 0.3], 0.1, [0.4, 0.3, 0.3]),  # already above the floor: as the learner gave it
        ([1.0, 0.0], 0.9, [0.5, 0.5]),  # a floor above 1/K is uniform
        ([1.0], 0.2, [1.0]),
    ],
)
def test_floored(pmf: list[float], floor: float, expected: list[float]) -> None:
    result = floored(pmf, floor)
    assert result == pytest.approx(expected) and sum(result) == pytest.approx(1.0)
    pairs = [(i, j) for i in range(len(pmf)) for j in range(len(pmf)) if pmf[i] > pmf[j]]
    assert all(result[i] >= result[j] for i, j in pairs)  # the learner's ranking is kept
