"""Why was this customer shown this: the answer to Explain, rebuilt from the decision log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.encoding import encoding_from_json, encoding_summary
from bandit.errors import UnknownDecision
from bandit.exclusions import Exclusions
from bandit.features import FeatureEncoder
from bandit.learner import COLD_START, contributions
from bandit.requests import check_text
from store.ports import DecisionLog, ModelSnapshots
from store.records import DecisionRecord

TOP_CONTRIBUTIONS = 10


@dataclass(frozen=True, slots=True)
class Explanation:
    record: DecisionRecord
    removed: list[tuple[str, str]]
    contributions: list[tuple[str, float]]
    contributions_note: str
    # Namespace -> the decision's numeric field -> its kind and edges as the deciding model encoded it.
    encoding: dict[str, dict[str, dict[str, Any]]]


def explain(
    decision_id: str, decisions: DecisionLog, models: ModelSnapshots, catalog: Catalog, config: BreinConfig
) -> Explanation:
    check_text("decision_id", decision_id, required=True)
    record = decisions.decision(decision_id)
    if record is None:
        raise UnknownDecision(decision_id)
    exclusions = Exclusions.from_json(record.exclusions)
    eligible = set(record.eligible)
    removed = []
    for action in catalog.actions:
        if action.id not in eligible:
            removed.append((action.id, exclusions.reason(action) or "not in the catalog when the decision was made"))
    data_free = encoding_summary(config.features, None, record.features)
    if record.model_version == COLD_START:
        return Explanation(record, removed, [], "cold start: no model yet, every eligible action was equally likely", data_free)
    snapshot = models.get(record.policy_id, record.model_version)
    chosen = catalog.by_id.get(record.action_id)
    if snapshot is None or chosen is None:
        return Explanation(record, removed, [], f"model version {record.model_version} is no longer in the store", data_free)
    learned = encoding_from_json(snapshot.encoding)
    line = record.shared_line or FeatureEncoder(config, learned).shared_line(record.features)
    scores = contributions(snapshot.args, snapshot.data, line, chosen)
    encoding = encoding_summary(config.features, learned, record.features)
    return Explanation(record, removed, scores[:TOP_CONTRIBUTIONS], "", encoding)
