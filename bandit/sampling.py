"""Seeded sampling: every decision's draw is reproducible from the server seed and its decision id."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence

PMF_TOLERANCE = 1e-6


def new_request_id() -> str:
    return f"auto-{uuid.uuid4().hex}"


def uniform_draw(seed: int, decision_id: str) -> float:
    """A number in [0, 1) fixed by (seed, decision id)."""
    digest = hashlib.blake2b(decision_id.encode("utf-8"), digest_size=8, key=seed.to_bytes(16, "big", signed=True)).digest()
    return int.from_bytes(digest, "big") / 2**64


def floored(pmf: Sequence[float], floor: float) -> list[float]:
    """``pmf`` mixed with uniform so that every action has at least ``floor`` (capped at 1/K, where
    the mixture is uniform): p' = floor + (1 - K * floor) * p. The learner's ranking is kept, and
    every eligible action keeps the support that off-policy evaluation and tuning need."""
    size = len(pmf)
    floor = min(floor, 1.0 / size) if size else 0.0
    if floor <= 0.0 or min(pmf) >= floor:
        return list(pmf)
    rest = 1.0 - size * floor
    return [floor + rest * p for p in pmf]


def sample_index(pmf: Sequence[float], draw: float) -> int:
    cumulative = 0.0
    for index, probability in enumerate(pmf):
        cumulative += probability
        if draw < cumulative:
            return index
    return max(i for i, p in enumerate(pmf) if p > 0)  # the sum rounded below the draw


def finite_pmf(pmf: Sequence[float]) -> bool:
    """A distribution one can sample from: finite, non-negative probabilities that sum to 1. The sum
    is NaN or infinite when a probability is (or when finite ones overflow it, which is not 1 either):
    one sum and one min, not a test per probability."""
    if not pmf:
        return False
    total = sum(pmf)
    return math.isfinite(total) and min(pmf) >= 0.0 and math.isclose(total, 1.0, abs_tol=PMF_TOLERANCE)
