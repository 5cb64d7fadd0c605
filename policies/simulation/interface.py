"""What a harness needs of a simulated world: the interface the reference policies, Brein's
eligibility, the full-information yardstick and the drivers use. The hand-built telecom ``World``
and every ``GeneratedWorld`` implement it (both through ``base.BaseWorld``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from policies.simulation.base import Arrival, Consent, Outcome, Schedule
from store.records import CustomerHistory


class SimulatedWorld(Protocol):
    """A population of customers over a horizon that knows the true value of every action."""

    config: BreinConfig
    catalog: Catalog
    actions: tuple[Action, ...]
    start: float
    customers: int

    def arrivals(self, start: float, days: float) -> Schedule:
        """Every visit in ``[start, start + days)``, in time order."""
        ...

    def events(self, start: float, days: float) -> Iterator[Arrival | Outcome]:
        """Arrivals and due outcomes merged in event-time order."""
        ...

    def context(self, customer: int, t: float) -> tuple[dict[str, float], dict[str, str]]:
        """(numeric, categorical) context features as a request would carry them."""
        ...

    def categories(self) -> Mapping[str, tuple[str, ...]]:
        """Every level each categorical context field can take."""
        ...

    def consent(self, customer: int, t: float) -> Consent: ...

    def history(self, customer: int, t: float, lookback_days: float = ...) -> CustomerHistory:
        """What Brein's log would know of the customer at ``t``."""
        ...

    def expected_values(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> npt.NDArray[np.float64]: ...

    def expected_gains(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> npt.NDArray[np.float64]: ...

    def oracle(self, customer: int, t: float, eligible: Sequence[Action]) -> Action: ...

    def act(self, customer: int, t: float, action: Action, rng: np.random.Generator, decision: str = "") -> list[Outcome]:
        """Carry out an action decided at ``t``; returns the outcomes it caused."""
        ...

    def traits(self, customer: int) -> dict[str, float]:
        """The customer's hidden traits as numbers: diagnostics, never for Brein."""
        ...
