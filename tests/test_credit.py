from __future__ import annotations

from typing import Any

import pytest

from bandit.config import parse_config
from reward.credit import CreditRules, DecisionFacts, OutcomeFacts
from tests.conftest import example_data

DAY = 86_400.0


def rules(**outcome_changes: Any) -> CreditRules:
    data = example_data()
    data["joiner"] = {**data.get("joiner", {}), "credit": "full"}  # the example shares equally; these tests are about full credit
    for path, value in outcome_changes.items():
        name, key = path.split("__")
        data["outcomes"][name][key] = value
    return CreditRules(parse_config(data))


def d(decision_id: str, day: float, offer: str = "renewal", channel: str = "email", cost: float = 0.05) -> DecisionFacts:
    return DecisionFacts(decision_id, day * DAY, offer, channel, cost)


def o(outcome_id: str, day: float, kind: str = "contract_renewal", value: float = 240.0, decision_id: str = "") -> OutcomeFacts:
    return OutcomeFacts(outcome_id, kind, value, day * DAY, decision_id)


ACTIVATED = {"a": 0.0, "b": 5 * DAY, "c": 20 * DAY}


def test_window_credits_every_decision_in_the_window_before_the_outcome() -> None:
    decisions = [d("a", 0), d("b", 5), d("c", 20)]
    credits = rules().credit(decisions, [o("r", 25)], ACTIVATED)
    assert {k: c.total for k, c in credits.items()} == {"a": 240.0, "b": 240.0, "c": 240.0}
    late = rules().credit(decisions, [o("r", 31)], ACTIVATED)  # 31 days after a: outside a's 30-day window
    assert late["a"].total == 0.0 and late["b"].total == 240.0


def test_equal_share_splits_the_value() -> None:
    data = example_data()
    data["joiner"] = {"credit": "equal"}
    credits = CreditRules(parse_config(data)).credit([d("a", 0), d("b", 5)], [o("r", 10)], ACTIVATED)
    assert credits["a"].total == credits["b"].total == pytest.approx(120.0)


def test_last_touch_and_direct() -> None:
    decisions = [d("a", 0), d("b", 5)]
    last = rules(contract_renewal__attribution="last_touch").credit(decisions, [o("r", 10)], ACTIVATED)
    assert last["a"].total == 0.0 and last["b"].total == 240.0
    direct = rules(contract_renewal__attribution="direct").credit(decisions, [o("r", 10, decision_id="a")], ACTIVATED)
    assert direct["a"].total == 240.0 and direct["b"].total == 0.0


def test_offer_restriction_and_do_nothing_credit() -> None:
    decisions = [d("n", 0, offer="do_nothing", channel="", cost=0.0), d("s", 1, offer="sim_only")]
    restricted = rules(contract_renewal__offers=["renewal", "renewal_discount"]).credit(decisions, [o("r", 3)], {"s": DAY})
    assert restricted["n"].total == 0.0 and restricted["s"].total == 0.0
    anyone = rules().credit(decisions, [o("r", 3)], {"s": DAY})
    assert anyone["n"].total == 240.0  # a renewal after do-nothing credits do-nothing: restraint can pay
    assert anyone["n"].outcomes == ["r"]


def test_unactivated_deferred_decision_takes_no_credit() -> None:
    credits = rules().credit([d("a", 0), d("b", 1)], [o("r", 3)], {"a": 0.0})
    assert credits["a"].total == 240.0 and credits["b"].total == 0.0
    activated_after = rules().credit([d("b", 1)], [o("r", 3)], {"b": 4 * DAY})
    assert activated_after["b"].total == 0.0  # delivered after the renewal: cannot have caused it


def test_negative_outcomes_and_types_add_up_per_type() -> None:
    credits = rules().credit([d("a", 0)], [o("r", 2), o("c", 3, "complaint", -50.0), o("c2", 4, "complaint", -50.0)], ACTIVATED)
    assert credits["a"].by_type == {"contract_renewal": 240.0, "complaint": -100.0}
    assert credits["a"].total == 140.0
