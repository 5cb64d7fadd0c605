from __future__ import annotations

from typing import Any

import pytest

from bandit.config import parse_config
from bandit.errors import ConfigError
from reward.credit import Credit, CreditRules, DecisionFacts, OutcomeFacts
from reward.provisional import MEMORY, OpenMeans, Stages
from tests.conftest import example_data

DAY = 86_400.0


def rules(**outcome_changes: Any) -> CreditRules:
    data = example_data()
    data["joiner"] = {**data.get("joiner", {}), "credit": "full"}  # the example shares equally; these tests are about full credit
    for path, value in outcome_changes.items():
        name, key = path.split("__")
        data["outcomes"][name][key] = value
    return CreditRules(parse_config(data))


def d(
    decision_id: str, day: float, offer: str = "renewal", channel: str = "email", cost: float = 0.05, delay: float | None = 0.0
) -> DecisionFacts:
    """A decision on ``day``, activated ``delay`` days later (None: never)."""
    return DecisionFacts(decision_id, day * DAY, offer, channel, cost, None if delay is None else (day + delay) * DAY)


def o(outcome_id: str, day: float, kind: str = "contract_renewal", value: float = 240.0, decision_id: str = "") -> OutcomeFacts:
    return OutcomeFacts(outcome_id, kind, value, day * DAY, decision_id)


def total(credits: dict[str, Credit], decision_id: str) -> float:
    """What a decision earned: one that earned nothing has no entry."""
    return credits[decision_id].total if decision_id in credits else 0.0


def test_window_credits_every_decision_in_the_window_before_the_outcome() -> None:
    decisions = [d("a", 0), d("b", 5), d("c", 20)]
    credits = rules().credit(decisions, [o("r", 25)])
    assert {k: c.total for k, c in credits.items()} == {"a": 240.0, "b": 240.0, "c": 240.0}
    late = rules().credit(decisions, [o("r", 31)])  # 31 days after a: outside a's 30-day window
    assert "a" not in late and late["b"].total == 240.0


def test_equal_share_splits_the_value() -> None:
    data = example_data()
    data["joiner"] = {"credit": "equal"}
    credits = CreditRules(parse_config(data)).credit([d("a", 0), d("b", 5)], [o("r", 10)])
    assert credits["a"].total == credits["b"].total == pytest.approx(120.0)


@pytest.mark.parametrize(("credit", "each"), [("full", 240.0), ("equal", 80.0)])
def test_an_outcome_is_credited_to_at_most_the_latest_max_credited_decisions(credit: str, each: float) -> None:
    # A customer decided for over and over: the renewal goes to the latest three shown decisions of
    # its offers in its window. A later sim_only (not a renewal offer here) and an e-mail never
    # activated take none of it and do not use up the three.
    data = example_data()
    data["joiner"] = {"credit": credit, "max_credited_decisions": 3}
    data["outcomes"]["contract_renewal"]["offers"] = ["renewal"]
    decisions = [d(f"d{i}", i * 0.1) for i in range(200)] + [d("s", 25, offer="sim_only"), d("u", 26, delay=None)]
    credits = CreditRules(parse_config(data)).credit(decisions, [o("r", 27)])
    assert {k: c.total for k, c in credits.items()} == pytest.approx({"d197": each, "d198": each, "d199": each})
    assert [c.outcomes for c in credits.values()] == [["r"]] * 3
    with pytest.raises(ConfigError, match="max_credited_decisions"):
        data["joiner"]["max_credited_decisions"] = 0
        parse_config(data)


def test_last_touch_and_direct() -> None:
    decisions = [d("a", 0), d("b", 5)]
    last = rules(contract_renewal__attribution="last_touch").credit(decisions, [o("r", 10)])
    assert total(last, "a") == 0.0 and total(last, "b") == 240.0
    direct = rules(contract_renewal__attribution="direct").credit(decisions, [o("r", 10, decision_id="a")])
    assert total(direct, "a") == 240.0 and total(direct, "b") == 0.0


def test_offer_restriction_and_do_nothing_credit() -> None:
    decisions = [d("n", 0, offer="do_nothing", channel="", cost=0.0), d("s", 1, offer="sim_only")]
    restricted = rules(contract_renewal__offers=["renewal", "renewal_discount"]).credit(decisions, [o("r", 3)])
    assert restricted == {}
    anyone = rules().credit(decisions, [o("r", 3)])
    assert anyone["n"].total == 240.0  # a renewal after do-nothing credits do-nothing: restraint can pay
    assert anyone["n"].outcomes == ["r"]


def test_unactivated_deferred_decision_takes_no_credit() -> None:
    credits = rules().credit([d("a", 0), d("b", 1, delay=None)], [o("r", 3)])
    assert total(credits, "a") == 240.0 and total(credits, "b") == 0.0
    activated_after = rules().credit([d("b", 1, delay=3)], [o("r", 3)])
    assert total(activated_after, "b") == 0.0  # delivered after the renewal: cannot have caused it


def test_negative_outcomes_and_types_add_up_per_type() -> None:
    credits = rules().credit([d("a", 0)], [o("r", 2), o("c", 3, "complaint", -50.0), o("c2", 4, "complaint", -50.0)])
    assert credits["a"].by_type == {"contract_renewal": 240.0, "complaint": -100.0}
    assert credits["a"].total == 140.0


def test_joiner_last_touch_credits_the_latest_decision_of_window_types_only() -> None:
    data = example_data()
    data["joiner"] = {"credit": "last_touch"}
    data["outcomes"]["sim_activation"]["attribution"] = "direct"
    latest = CreditRules(parse_config(data))
    renewal = latest.credit([d("a", 0), d("b", 5), d("c", 8, offer="sim_only")], [o("r", 10)])
    # sim_only may not take a renewal's credit in the example: b is the latest decision that may.
    assert total(renewal, "a") == total(renewal, "c") == 0.0 and total(renewal, "b") == 240.0
    named = latest.credit([d("a", 0, offer="sim_only"), d("b", 5, offer="sim_only")], [o("s", 10, "sim_activation", 80.0, "a")])
    assert total(named, "a") == 80.0 and total(named, "b") == 0.0  # direct stays direct


def test_a_horizon_cuts_every_longer_window_and_keeps_the_shorter_ones() -> None:
    data = example_data()
    data["joiner"] = {**data.get("joiner", {}), "credit": "full", "horizon_days": 10}
    config = parse_config(data)
    windows = config.credit_windows_days()
    assert windows["contract_renewal"] == 10.0 and windows["complaint"] == data["outcomes"]["complaint"]["window_days"] < 10
    cut = CreditRules(config)
    assert cut.close_after == (10.0 + config.joiner.allowed_lateness_days) * DAY
    credits = cut.credit([d("a", 0), d("b", 5)], [o("r", 12)])  # 12 days after a, 7 after b
    assert "a" not in credits and credits["b"].total == 240.0
    with pytest.raises(ConfigError, match="horizon_days"):
        data["joiner"]["horizon_days"] = 0
        parse_config(data)


def test_stages_split_credit_at_each_shorter_window() -> None:
    stages = Stages({"complaint": 7 * DAY, "unsubscribe": 7 * DAY, "sim_activation": 14 * DAY, "contract_renewal": 30 * DAY})
    assert stages.ages == [7 * DAY, 14 * DAY]
    credit = {"complaint": -50.0, "sim_activation": 80.0, "contract_renewal": 240.0}
    assert [stages.closed_value(credit, stage) for stage in (0, 1)] == [-50.0, 30.0]
    # A type the config no longer has, in an example joined before it changed, counts as closed.
    assert stages.open_values({**credit, "gone": 7.0}) == [320.0, 240.0]
    assert Stages({"complaint": 7 * DAY}).ages == [] and Stages({}).ages == []


def test_open_means_are_per_action_and_follow_the_newest_after_memory() -> None:
    means = OpenMeans(2)
    for value in (10.0, 20.0):
        means.add("a", [value, value / 10])
    assert (means.mean("a", 0), means.mean("a", 1), means.mean("b", 0)) == (15.0, 1.5, 0.0)
    for _ in range(MEMORY):
        means.add("b", [0.0, 0.0])
    means.add("b", [MEMORY * 1.0, 0.0])
    assert means.mean("b", 0) == pytest.approx(1.0)  # one new value weighs 1/MEMORY, however many came before

