"""The registry's champion, bootstrapped on a new store from the config's VW policy."""

from __future__ import annotations

from pathlib import Path

from bandit.config import BreinConfig
from bandit.errors import ConfigError
from bandit.learner import VWPolicy, vw_arguments
from policies.registry import InvalidTransition, Registry
from store.records import PolicyEntry


def bootstrap_champion(config: BreinConfig, registry: Registry) -> PolicyEntry:
    """The registry's champion; on a new store, the config's VW policy (its model file, or cold)."""
    champion = registry.champion()
    if champion is not None:
        return champion
    args = vw_arguments(config.learner)
    path = config.learner.model
    data = Path(path).read_bytes() if path is not None and Path(path).exists() else None
    if data is not None:
        try:
            VWPolicy(args, data)
        except Exception as error:
            raise ConfigError(f"learner.model: {path} is not a VW model for {' '.join(args)}: {error}") from None
    try:
        return registry.register(
            config.learner.policy_id, "vw", artifact=data, args=args, features=config.features.model_dump(), actor="brein",
            state="champion", note=f"bootstrapped from the config ({'model ' + str(path) if data else 'cold start'})",
        )  # fmt: skip
    except InvalidTransition:
        champion = registry.champion()  # another process on this store bootstrapped one first: serve that
        if champion is None:
            raise
        return champion
