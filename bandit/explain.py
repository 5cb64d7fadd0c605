"""Why was this customer shown this: the answer to Explain, rebuilt from the decision log."""

from __future__ import annotations

from dataclasses import dataclass

from bandit.catalog import Catalog
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


def explain(
    decision_id: str, decisions: DecisionLog, models: ModelSnapshots, catalog: Catalog, encoder: FeatureEncoder
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
    if record.model_version == COLD_START:
        return Explanation(record, removed, [], "cold start: no model yet, every eligible action was equally likely")
    snapshot = models.get(record.model_version)
    chosen = catalog.by_id.get(record.action_id)
    if snapshot is None or chosen is None:
        return Explanation(record, removed, [], f"model version {record.model_version} is no longer in the store")
    scores = contributions(snapshot.args, snapshot.data, encoder.shared_line(record.features), chosen)
    return Explanation(record, removed, scores[:TOP_CONTRIBUTIONS], "")
