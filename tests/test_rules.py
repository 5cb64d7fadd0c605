"""Eligibility rules: what a rule reads, and remembered verdicts equal to evaluating every time."""

from __future__ import annotations

import itertools
from typing import Any

import cel
import pytest

from bandit.catalog import DO_NOTHING, Action
from bandit.config import parse_config
from bandit.policies import RulePolicy, RuleSpec, rule_variables
from bandit.rules import EligibilityRules, Rule, RuleVerdict, reads_of, unbounded_part
from store.records import SharedFeatures
from tests.conftest import example_data

READS = [
    ("has(numeric.months_to_contract_end) && numeric.months_to_contract_end <= 4.0", (("numeric", "months_to_contract_end"),)),
    ('!has(categorical.plan) || categorical.plan != "unlimited"', (("categorical", "plan"),)),
    ('touchpoint != "web" && hour >= 9', (("hour", None), ("touchpoint", None))),
    ("numeric . x > 1.0 && history.contacts_7d < 2.0", (("history", "contacts_7d"), ("numeric", "x"))),
    ('"numeric.y" == categorical.plan', (("categorical", "plan"),)),  # a string that looks like a read adds nothing wrong
    ('numeric.x.startsWith("a")', (("numeric", "x"),)),
    ("size(numeric) > 2", None),
    ('numeric["x"] > 1.0', None),
    ('categorical.exists(k, k == "plan")', None),
    ('categorical.all(numeric, numeric != "x")', None),
    ('"plan" in categorical', None),
]


@pytest.mark.parametrize(("source", "reads"), READS, ids=[s for s, _ in READS])
def test_what_a_rule_reads_is_found_conservatively(source: str, reads: Any) -> None:
    assert reads_of(source, cel.compile(source).variables()) == reads


def _whole(name: str) -> str:
    return f"the whole map {name}, not by a key ({name}.key, {name}[key], key in {name} or size({name}))"


UNBOUNDED = [
    ('categorical.exists(k, k == "plan")', "the comprehension macro exists()"),
    ("[1, 2].all(x, x > 0)", "the comprehension macro all()"),
    ("[1, 2].exists_one(x, x > 0)", "the comprehension macro exists_one()"),
    ("size(numeric . map (k, k)) > 0", "the comprehension macro map()"),
    ('size([1].filter(x, x > 0)) > 0 && "//" == ""', "the comprehension macro filter()"),
    ('categorical.plan.matches("^b")', "the function matches()"),
    ('has(numeric.exists) && categorical.plan == ".exists(x, x)"', None),  # a field and a string named like a macro
    (r"""r'\' == '.map(' || '''.all(''' == "it\".filter(" """, None),  # a raw string ends at its first quote
    ("hour > 1 // [1].exists(x, x > 0)\n", None),
    ("numeric == numeric", _whole("numeric")),
    ("size([categorical] + [1]) > 0", _whole("categorical")),
    ('"plan" in history + history', _whole("history")),
    ("hour > 1 ? numeric.x > 1.0 : numeric.size() > 0", _whole("numeric")),
    ('has(numeric.x) && numeric ["my-key"] > 1.0 && "plan" in categorical == true && size(history) > 0', None),
    ('categorical.plan == "numeric == numeric" // [numeric]\n', None),  # maps named in a string and a comment
]


@pytest.mark.parametrize(("source", "part"), UNBOUNDED, ids=[s for s, _ in UNBOUNDED])
def test_what_makes_a_conditions_work_unbounded_is_found_outside_strings_and_comments(source: str, part: str | None) -> None:
    """A macro runs its body once per element (five nested over 16 elements: 1.2 s), matches() compiles
    its pattern on every call (0.36 s for one), and a map used but by a key is copied or compared entry
    by entry (130 ms in 1,600 characters on a request of 1,000 features): none is bounded by a condition's
    length."""
    assert unbounded_part(source, cel.compile(source)) == part


def test_remembered_verdicts_are_the_verdicts_of_a_full_evaluation() -> None:
    data = example_data()
    data["offers"]["sim_only"]["eligible_if"] = "size(categorical) < 3 || weekday == 6"  # reads a whole map
    upsell = 'has(history.contacts_7d) ? history.contacts_7d < 1.0 : categorical.plan == "basic"'
    data["offers"]["data_upsell"]["eligible_if"] = upsell
    rules = EligibilityRules(parse_config(data))
    assert any(r.reads is None for r in rules.rules) and any(r.reads for r in rules.rules)
    numerics: list[dict[str, Any]] = [
        {}, {"months_to_contract_end": 2.0}, {"months_to_contract_end": 9.0, "handset_age_months": 30.0},
        {"months_to_contract_end": -0.0}, {"months_to_contract_end": 4},  # an int is not a double to CEL
    ]  # fmt: skip
    categoricals: list[dict[str, str]] = [
        {}, {"plan": "basic", "has_app": "yes"}, {"plan": "unlimited", "has_app": "no", "region": "x"},
    ]  # fmt: skip
    histories: list[dict[str, float]] = [{}, {"contacts_7d": 1.0}]
    for _ in range(2):  # the second round answers from memory
        for numeric, categorical, history, touchpoint in itertools.product(numerics, categoricals, histories, ("web", "app")):
            variables = {"numeric": numeric, "categorical": categorical, "history": history, "touchpoint": touchpoint,
                         "hour": 10, "weekday": 6 if touchpoint == "app" else 2}  # fmt: skip
            assert rules.evaluate(variables) == _evaluated_fully(rules.rules, variables)


def _evaluated_fully(rules: tuple[Rule, ...], variables: dict[str, Any]) -> RuleVerdict:
    """Every rule run on the whole context, as before verdicts were remembered."""
    context = cel.Context(variables)
    verdict = RuleVerdict({}, {})
    for rule in rules:
        reason = rule.reason(context)
        if reason is not None:
            (verdict.offers if rule.subject == "offer" else verdict.channels)[rule.name] = reason
    return verdict


def test_a_rules_policy_reading_named_keys_chooses_as_on_the_whole_request() -> None:
    """A rules policy whose conditions read only named keys hands CEL just those (``RulePolicy._reads``):
    its choices are the choices made on the whole request, keys absent, ints and has() included."""
    upsell = 'has(history.contacts_7d) ? history.contacts_7d < 1.0 : categorical.plan == "basic"'
    keyed = RulePolicy([RuleSpec("renewal_discount", "numeric.months_to_contract_end < 3.0 && hour >= 9"),
                        RuleSpec("data_upsell", upsell), RuleSpec("sim_only", "touchpoint == 'app'")], "keyed")  # fmt: skip
    whole = RulePolicy([RuleSpec("sim_only", "size(categorical) > 2"), *keyed.rules], "whole")
    assert keyed._reads is not None and whole._reads is None
    actions = [Action(offer, offer, "email", "", 1.0) for offer in ("renewal_discount", "data_upsell", "sim_only")]
    for numeric, categorical, history, touchpoint in itertools.product(
        [{}, {"months_to_contract_end": 2.0}, {"months_to_contract_end": 2}, {"months_to_contract_end": 9.0, "other": 1.0}],
        [{}, {"plan": "basic"}, {"plan": "unlimited", "has_app": "no", "region": "x"}],
        [{}, {"contacts_7d": 0.0}, {"contacts_7d": 2.0}],
        ["web", "app"],
    ):
        features: SharedFeatures = {"n": {"touchpoint": touchpoint, "hour": 10, "weekday": 2}, "u": {**numeric, **categorical},
                                    "h": history}  # fmt: skip
        for policy in (keyed, whole):
            assert policy.choose(actions, features) == _chosen_on_the_whole_request(policy, actions, features)


def _chosen_on_the_whole_request(policy: RulePolicy, actions: list[Action], features: SharedFeatures) -> str:
    context, eligible = cel.Context(rule_variables(features)), {a.id for a in actions}
    for rule in policy.rules:
        if rule.action in eligible:
            try:
                if not rule.when or cel.compile(rule.when).execute(context) is True:
                    return rule.action
            except Exception:
                continue
    return DO_NOTHING
