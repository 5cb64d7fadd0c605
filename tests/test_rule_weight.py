"""What rules may add to a Decide is bounded where they are accepted: a rules policy's conditions, and a
config's ``eligible_if`` conditions, weigh at most MAX_CONDITIONS_WEIGHT together (each its length squared),
and at most MAX_SHADOWS shadows score every decision. A policy written to the registry behind those checks
(by an older version, or another process at the same time) is left out of serving, logged once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner, Result

from bandit.config import BreinConfig
from bandit.rules import MAX_CONDITIONS_WEIGHT
from brain.core import Brain
from policies.registry import MAX_SHADOWS, InvalidTransition, Registry
from serving.cli import main
from store import Store, open_store
from store.records import PolicyEvent
from tests.conftest import EXAMPLE, example_data

COPIES = "size([1]" + "+[1]" * 250 + ") < 0"
"""A condition of 1,013 characters that copies the list it builds on each +: 1.5 ms a Decide, whatever the request."""
HEAVY = json.dumps([{"action": "sim_only/sms/morning", "when": COPIES}] * 2).encode()
HEAVY_WEIGHT = 2 * len(COPIES) ** 2
REFUSED = (f"rules: 2 conditions of {2 * len(COPIES):,} characters weigh {HEAVY_WEIGHT:,} (each its length squared), "
           f"more than the {MAX_CONDITIONS_WEIGHT:,} allowed")  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "refused"),
    [
        ([1024], None),
        ([32] * 1000, None),
        ([724, 724], None),
        ([0] * 1000, None),
        ([724, 725], f"rules: 2 conditions of 1,449 characters weigh 1,049,801 (each its length squared), more than the "
                     f"{MAX_CONDITIONS_WEIGHT:,} allowed"),
        ([1025], "rules[0].when: a CEL rule of 1,025 characters, more than the 1,024 allowed"),
    ],
    ids=["one-longest", "a-thousand-short", "two", "no-conditions", "two-past", "one-past"],
)  # fmt: skip
def test_a_rules_policy_is_admitted_up_to_its_weight(conditions: list[int], refused: str | None, tmp_path: Path) -> None:
    """Registered with `brein policy register`, refused past the weight with it and the most allowed."""
    rules = [{"action": "sim_only/sms/morning", "when": _condition(n)} for n in conditions]
    file = tmp_path / "rules.json"
    file.write_text(json.dumps(rules))
    store_path = tmp_path / "brein.db"
    open_store(str(store_path)).close()
    registered = CliRunner().invoke(main, ["policy", "register", "--config", str(EXAMPLE), "--store", str(store_path),
                                           "--id", "weighed", "--kind", "rules", "--file", str(file)])  # fmt: skip
    if refused is None:
        assert registered.exit_code == 0, registered.output
        return
    assert registered.exit_code == 1 and " ".join(registered.output.split()) == f"Error: weighed: {refused}"
    store = open_store(str(store_path), create=False)
    try:
        assert not Registry(store.registry).has("weighed")
    finally:
        store.close()


def _condition(length: int) -> str:
    """A condition of ``length`` characters (0: none, always true) whose work grows as the square of it."""
    if length == 0:
        return ""
    copies = (length - 13) // 4
    return ("size([1]" + "+[1]" * copies + ") < 0").ljust(length)


def test_a_config_whose_conditions_weigh_too_much_is_refused_by_the_check(tmp_path: Path) -> None:
    data = example_data()
    data["offers"]["sim_only"]["eligible_if"] = data["offers"]["new_handset"]["eligible_if"] = COPIES
    rules = [s["eligible_if"] for section in ("offers", "channels") for s in data[section].values() if "eligible_if" in s]
    heavy = tmp_path / "heavy.toml"
    heavy.write_text(tomli_w.dumps(data))
    refused = CliRunner().invoke(main, ["check", "--config", str(heavy)])
    assert refused.exit_code == 1
    weight = sum(len(rule) ** 2 for rule in rules)
    said = (f"offers.*.eligible_if and channels.*.eligible_if: {len(rules)} conditions of {sum(map(len, rules)):,} characters "
            f"weigh {weight:,} (each its length squared), more than the {MAX_CONDITIONS_WEIGHT:,} allowed")  # fmt: skip
    assert " ".join(refused.output.split()) == f"Error: {said}"


def test_a_rules_policy_that_no_longer_passes_is_left_out_of_serving_logged_once(
    brain: Brain, caplog: pytest.LogCaptureFixture
) -> None:
    """Registered behind the CLI's checks (by a version that admitted it): as a shadow it is left out,
    as the champion it is refused and the champion before it keeps serving."""
    registry = Registry(brain.store.registry)
    registry.register("heavy", "rules", artifact=HEAVY, actor="test", state="shadow")
    serving = brain.decider.policy.policy_id
    with caplog.at_level(logging.ERROR, logger="brein"):
        brain.follow()
        brain.follow()
        assert brain.decider.shadows == ()
        registry.set_state("heavy", "candidate", actor="test", reason="x")
        registry.make_champion("heavy", replacing=serving, actor="test", reason="x")
        assert not brain.follow() and not brain.follow()
    assert brain.decider.policy.policy_id == serving
    lines = [(r.getMessage(), str(r.exc_info[1]) if r.exc_info else None) for r in caplog.records]
    assert lines == [
        ("shadow policy heavy does not load; it is left out", f"policy heavy: {REFUSED}"),
        (f"refused to switch to champion heavy: it does not load; {serving} keeps serving", f"policy heavy: {REFUSED}"),
    ]


def test_the_registry_refuses_a_shadow_past_the_most(store: Store) -> None:
    registry = Registry(store.registry)
    for i in range(MAX_SHADOWS):
        registry.register(f"s{i}", "uniform", actor="test", state="shadow")
    registry.register("more", "uniform", actor="test")
    shadows = ", ".join(f"s{i}" for i in range(MAX_SHADOWS))
    said = (rf"^more cannot shadow: {shadows} shadow already, the most \({MAX_SHADOWS}\) that score every decision; "
            r"retire one first$")  # fmt: skip
    with pytest.raises(InvalidTransition, match=said):
        registry.set_state("more", "shadow", actor="test", reason="x")
    with pytest.raises(InvalidTransition, match=said.replace("more", "another")):
        registry.register("another", "uniform", actor="test", state="shadow")
    registry.set_state("s0", "retired", actor="test", reason="x")
    registry.set_state("more", "shadow", actor="test", reason="x")
    assert [e.id for e in registry.in_state("shadow")] == [*(f"s{i}" for i in range(1, MAX_SHADOWS)), "more"]


def test_policy_shadow_refuses_a_shadow_past_the_most(tmp_path: Path) -> None:
    store_path = tmp_path / "brein.db"
    open_store(str(store_path)).close()

    def policy(*args: str) -> Result:
        return CliRunner().invoke(main, ["policy", *args, "--config", str(EXAMPLE), "--store", str(store_path)])

    ids = [f"s{i}" for i in range(MAX_SHADOWS + 1)]
    assert all(policy("register", "--id", policy_id, "--kind", "uniform").exit_code == 0 for policy_id in ids)
    assert all(policy("shadow", policy_id).exit_code == 0 for policy_id in ids[:-1])
    refused = policy("shadow", ids[-1])
    assert refused.exit_code == 1
    assert " ".join(refused.output.split()) == (f"Error: {ids[-1]} cannot shadow: {', '.join(ids[:-1])} shadow already, the most "
                                                f"({MAX_SHADOWS}) that score every decision; retire one first")  # fmt: skip


def test_shadows_past_the_most_are_left_out_of_serving_logged_once(
    make_brain: Callable[..., Brain], config: BreinConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Shadows another process set meanwhile, past the registry's check: the first MAX_SHADOWS score."""
    brain = make_brain(config)
    registry = Registry(brain.store.registry)
    ids = [f"s{i}" for i in range(MAX_SHADOWS + 1)]
    for at, policy_id in enumerate(ids):
        registry.register(policy_id, "uniform", actor="test", now=time.time() + at)
    events = [PolicyEvent(policy_id, time.time(), "other", "candidate", "shadow", "x") for policy_id in ids]
    brain.store.registry.transition(events, []).result()
    with caplog.at_level(logging.ERROR, logger="brein"):
        brain.refresh_shadows()
        brain.refresh_shadows()
        assert [s.policy_id for s in brain.decider.shadows] == ids[:MAX_SHADOWS]
        registry.set_state("s0", "retired", actor="test", reason="x")
        brain.refresh_shadows()
    assert [s.policy_id for s in brain.decider.shadows] == ids[1:]
    assert [r.getMessage() for r in caplog.records] == [
        f"shadow policy {ids[-1]} is left out: {MAX_SHADOWS} shadows score every decision already, the most allowed"
    ]
