"""A registry entry made into a policy that can serve, shadow or be evaluated."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from bandit.catalog import DO_NOTHING, Catalog
from bandit.encoding import encoding_from_json
from bandit.errors import BreinError, ConfigError
from bandit.learner import VWPolicy
from bandit.policies import DoNothingPolicy, Policy, RulePolicy, RuleSpec, UniformPolicy
from store.ports import ModelSnapshots
from store.records import START, Cursor, PolicyEntry

log = logging.getLogger("brein.policies")


LEARNED_KEY = "learned_encoding"
"""Where a registry entry's ``features`` keep the encoding learned for its model (as JSON)."""


class PolicyLoadError(BreinError):
    """A policy's artifact cannot be loaded; whatever serves keeps serving."""


MAX_RULES = 1000
"""The most rules a rule policy may have: far past a hand-written list. Its rules run in turn on every
decision it makes, as the champion or as a shadow beside it: 1,000 rules that do not hold, 0.3 ms a
decision; a 100,000-rule shadow made every Decide 127 ms instead of 1.3."""


def parse_rules(text: str | bytes) -> list[RuleSpec]:
    """A rule policy's artifact: a JSON list of at most MAX_RULES {"action": id, "when": CEL condition}."""
    try:
        items = json.loads(text)
        rules = [RuleSpec(action=str(item["action"]), when=str(item.get("when", ""))) for item in items]
    except (ValueError, TypeError, KeyError, RecursionError) as error:  # RecursionError: JSON nested past Python's stack
        raise PolicyLoadError(f"rules: expected a JSON list of {{\"action\": ..., \"when\": ...}}, got an error: {error}") \
            from None
    if len(rules) > MAX_RULES:
        raise PolicyLoadError(f"rules: {len(rules):,} rules, more than the {MAX_RULES:,} a rule policy may have")
    return rules


class NotInCatalog(BreinError, ValueError):
    """A rules policy names an action today's catalog does not have: registered, evaluated or promoted,
    it would be credited for (or serve the fallback instead of) an action that cannot be served."""


def check_servable(policy_id: str, policy: Policy, catalog: Catalog) -> None:
    """NotInCatalog when ``policy`` is a rules policy with an action ``catalog`` does not have; the one check
    registration, evaluation and promotion make (an action may leave the config after registration)."""
    if not isinstance(policy, RulePolicy):
        return
    for i, rule in enumerate(policy.rules):
        if rule.action != DO_NOTHING and rule.action not in catalog.by_id:
            raise NotInCatalog(f"{policy_id}: rules[{i}].action: expected an action of the catalog like 'offer/channel/slot', "
                               f"got {rule.action!r}")  # fmt: skip


def load_policy(
    entry: PolicyEntry, models: ModelSnapshots, *, accept: Callable[[VWPolicy], str | None] | None = None
) -> tuple[Policy, Cursor]:
    """The policy and, for a VW policy, how far into the joined examples its model has learned. A VW
    policy is its newest stored snapshot that loads and that ``accept`` finds nothing against (one
    that does not is logged and passed over, so a broken snapshot does not keep a restarted server
    from serving), else its registered model."""
    if entry.kind == "uniform":
        return UniformPolicy(), START
    if entry.kind == "do_nothing":
        return DoNothingPolicy(), START
    if entry.kind == "rules":
        try:
            return RulePolicy(parse_rules(entry.artifact or b"[]"), version=entry.artifact_hash[:12]), START
        except ConfigError as error:  # a condition that does not compile
            raise PolicyLoadError(f"policy {entry.id}: {error}") from None
    for snapshot in models.newest_first(entry.id):
        try:
            policy = VWPolicy(entry.args, snapshot.data, encoding_from_json(snapshot.encoding))
        except Exception as error:
            log.error("snapshot %s of policy %s does not load (%s); trying the one before it", snapshot.version, entry.id, error)
            continue
        problem = accept(policy) if accept else None
        if problem is not None:
            log.error("snapshot %s of policy %s is refused (%s); trying the one before it", snapshot.version, entry.id, problem)
            continue
        return policy, snapshot.learned or START
    try:
        return VWPolicy(entry.args, entry.artifact, encoding_from_json(entry.features.get(LEARNED_KEY))), START
    except Exception as error:
        raise PolicyLoadError(f"policy {entry.id}: its VW model does not load with {' '.join(entry.args)}: {error}") from None
