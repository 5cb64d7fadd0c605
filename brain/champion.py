"""The registry's champion, bootstrapped on a new store from the config's VW policy."""

from __future__ import annotations

from pathlib import Path

from bandit.config import BreinConfig
from bandit.errors import ConfigError
from bandit.learner import vw_arguments, vw_refusal
from policies.registry import InvalidTransition, Registry
from store.records import PolicyEntry


def config_model(config: BreinConfig) -> tuple[list[str], bytes | None]:
    """The config's VW arguments and its model file (None: a cold start), loaded into VW once so
    that arguments VW refuses, or a file that is not a model for them, are the config's error."""
    args = vw_arguments(config.learner)
    path = config.learner.model
    data = Path(path).read_bytes() if path is not None and Path(path).exists() else None
    refusal = vw_refusal(args, data)
    if refusal is not None:
        what = f"learner.model: {path} is not a VW model for" if data is not None else "learner: VW does not take"
        raise ConfigError(f"{what} {' '.join(args)}: {refusal}")
    return args, data


def bootstrap_champion(config: BreinConfig, registry: Registry) -> PolicyEntry:
    """The registry's champion; on a new store, the config's VW policy (its model file, or cold),
    registered as every policy is (``Registry.register``): a model snapshot or evaluation stored under
    its id with no entry (a killed registration's) is removed in the write that registers it, never
    served as the new champion's model nor taken as its evidence."""
    champion = registry.champion()
    if champion is not None:
        return champion
    args, data = config_model(config)
    path = config.learner.model
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
