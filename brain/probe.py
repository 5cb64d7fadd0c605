"""A model that cannot take the service down: before a model serves (and before the worker's learner
goes on from it) its weights must all be finite, and it must score a finite distribution for a
context with every feature missing. Learning from an infinite cost leaves NaN weights, which show
only in the predictions that use them: the weights are checked themselves, not a sample of logged
contexts (which took a read of the store and 65 predictions, under the GIL beside the server's
Decides). A request that a serving model still scores non-finite is answered uniform
(bandit/decider.py)."""

from __future__ import annotations

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import VWPolicy
from bandit.policies import Policy
from bandit.sampling import finite_pmf


class Prober:
    """Checks models for a config's catalog and features."""

    def __init__(self, config: BreinConfig) -> None:
        self._actions = tuple(Catalog(config).actions)
        self._encoder = FeatureEncoder(config)
        self._nothing = self._encoder.shared_features(
            touchpoint=config.touchpoints[0], event_time=0.0, numeric={}, categorical={}, history={}, personalised=False
        )

    def check(self, model: Policy) -> str | None:
        """None when ``model`` may serve; else what is wrong with it."""
        if isinstance(model, VWPolicy):
            broken = model.non_finite_weights()
            if broken:
                return f"{broken:,} of its weights are not finite"
        line = self._encoder.with_encoding(model.encoding).shared_line(self._nothing)
        pmf = model.pmf(line, self._actions, self._nothing)
        if not finite_pmf(pmf):
            return f"it scores {list(pmf)[:4]} for the context {line[:120]!r}"
        return None
