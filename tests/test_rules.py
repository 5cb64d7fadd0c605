"""Eligibility rules: what a rule reads, and remembered verdicts equal to evaluating every time."""

from __future__ import annotations

import itertools
from typing import Any

import cel
import pytest

from bandit.config import parse_config
from bandit.rules import EligibilityRules, Rule, RuleVerdict, reads_of, unbounded_part
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
