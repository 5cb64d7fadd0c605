from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bandit.catalog import DO_NOTHING, Catalog
from bandit.config import load_config, parse_config
from bandit.config_types import MAX_DAYS, MAX_HOURS, MAX_SECONDS
from bandit.errors import ConfigError
from bandit.rules import EligibilityRules
from tests.conftest import EXAMPLE, example_data


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    catalog = Catalog(config)
    assert catalog.actions[0].id == DO_NOTHING
    assert len(catalog) == 1 + 5 * 3 * 3 + 3 * 1 * 2
    assert catalog.by_id["renewal_discount/outbound_call/evening"].cost == pytest.approx(60.0 + 4.0)
    assert len(EligibilityRules(config).rules) == 6


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(example_data())
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with("offers.renewal.cost", "cheap"), "offers.renewal.cost: Input should be a valid number"),
        (_with("offers.renewal.colour", "red"), "offers.renewal.colour: Extra inputs are not permitted"),
        (_with("timezone", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (_with("timezone", "America"), "unknown time zone 'America'"),  # a folder of zones
        (_with("server.address", "127.0.0.1:99999"), "server.address: Value error, expected host:port with a port from 0"),
        (_with("server.metrics_address", "unix:/tmp/m.sock"), "server.metrics_address: Value error, expected host:port"),
        (_with("timezone", "x" * 5000), "unknown time zone 'xxxxxxxx"),  # longer than a file name may be
        (_with("slots.morning", "9 o'clock"), "expected a time of day like '09:00'"),
        (_with("slots.now", "10:00"), "'now' is built in"),
        (_with("combinations", [{"offers": ["gold"], "channels": ["email"], "slots": ["morning"]}]), "combinations[0].offers: unknown gold"),
        (_with("contact_policy.quiet_periods", [{"after": "fire", "days": 3}]), "quiet_periods[0].after: unknown outcome type 'fire'"),
        (_with("contact_policy.caps", [{"max": 1000, "days": 7}]), "caps.0.max: Input should be less than 1000"),
        (_with("outcomes.complaint.window_days", 0), "outcomes.complaint.window_days: Input should be greater than 0"),
        (_with("features.numeric.tenure_months", {"encoding": "bins", "edges": [3.0, 1.0]}), "edges must be strictly increasing"),
        (_with("offers.do_nothing", {"cost": 0}), "do-nothing is built in"),
        (_with("touchpoints", []), "touchpoints: List should have at least 1 item"),
        (_with("outcomes.complaint.max_value", 10.0), "outcomes.complaint: Value error, value -50 is beyond max_value 10"),
        (_with("outcomes.contract_renewal.max_value", 0), "outcomes.contract_renewal.max_value: Input should be greater than 0"),
        (_with("outcomes.complaint.max_value", float("inf")), "outcomes.complaint.max_value: Input should be a finite number"),
        (_with("outcomes.complaint.max_value", 1e300), "max_value: Input should be less than or equal to 1000000000000"),
        (_with("offers.renewal.cost", -1e13), "offers.renewal.cost: Input should be greater than or equal to -1000000000000"),
        (_with("outcomes.contract_renewal.value", -1.0), "Value error, value -1 is negative: set allow_negative = true"),
        (_with("gate", {"max_weight_share": 0}), "gate.max_weight_share: Input should be greater than 0"),
        (_with("gate", {"max_weight_share": 1.5}), "gate.max_weight_share: Input should be less than or equal to 1"),
        (_with("gate", {"min_ess": float("inf")}), "gate.min_ess: Input should be a finite number"),
        # Clipping the weights of negative rewards biased a lift upwards: a worse candidate passed (true -4.0, lower bound +3.3).
        (_with("gate", {"estimator": "clipped_ips"}), "gate.estimator: Value error, clipped_ips cannot judge a promotion: with "
         "rewards that can be negative its lift can be biased upwards"),  # fmt: skip
        # Every float is finite and every span of time bounded: inf stopped the joiner for good or
        # crash-looped the worker (its config crosses as JSON, inf as null), 1e300 overflowed time_t, 1e-300 made the worker spin.
        (_with("joiner.interval_seconds", float("inf")), "joiner.interval_seconds: Input should be a finite number"),
        (_with("joiner.interval_seconds", 1e300), "joiner.interval_seconds: Input should be less than or equal to 604800"),
        (_with("joiner.interval_seconds", 1e-300), "joiner.interval_seconds: Input should be greater than or equal to 0.01"),
        (_with("server.shutdown_grace", float("inf")), "server.shutdown_grace: Input should be a finite number"),
        (_with("server.follow_seconds", 1e300), "server.follow_seconds: Input should be less than or equal to 604800"),
        (_with("gate", {"max_age_hours": float("inf")}), "gate.max_age_hours: Input should be a finite number"),
        (_with("gate", {"min_lift": 1e300}), "gate.min_lift: Input should be less than or equal to 1000000000000"),
        (_with("outcomes.complaint.window_days", 1e308), "window_days: Input should be less than or equal to 36525"),
        (_with("joiner.allowed_lateness_days", 1e300), "allowed_lateness_days: Input should be less than or equal to 36525"),
        (_with("contact_policy.caps", [{"max": 2, "days": 1e300}]), "caps.0.days: Input should be less than or equal to 36525"),
        (_with("privacy", {"retention_days": 1e300}), "privacy.retention_days: Input should be less than or equal to 36525"),
        (_with("limits", {"store_wait_seconds": float("nan")}), "limits.store_wait_seconds: Input should be a finite number"),
        (_with("security", {"callers": {"a": {"roles": ["admin"], "api_key_sha256": "0" * 64}}, "rate_per_second": float("inf")}),
         "security.rate_per_second: Input should be a finite number"),  # fmt: skip
        (_with("features.numeric.tenure_months", {"encoding": "bins", "edges": [1.0, float("inf")]}),
         "features.numeric.tenure_months.edges.1: Input should be a finite number"),  # fmt: skip
    ],
)
def test_bad_config_names_key_and_reason(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("outcome", "bound"),
    [
        ({"value": 240.0}, 24_000.0),  # 100 x the default value
        ({"value": -50.0, "allow_negative": True}, 5_000.0),  # the bound is on |value|
        ({"value": 0.0}, 1_000.0),  # callers send the value: at least 1000
        ({"value": 3.0}, 1_000.0),
        ({"value": 240.0, "max_value": 240.0}, 240.0),  # configured
    ],
)
def test_outcome_value_bound_is_max_value_or_derived_from_the_default(outcome: dict[str, Any], bound: float) -> None:
    assert parse_config(_with("outcomes.sim_activation", outcome)).outcomes["sim_activation"].value_bound == bound


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("numeric.x >", "offers.renewal.eligible_if: invalid CEL rule 'numeric.x >'"),
        ("undefined_thing > 2", "offers.renewal.eligible_if: rule 'undefined_thing > 2' cannot run"),
        ('"yes"', "must give true or false, gives str"),
        ('categorical.exists(k, k == "plan")', "uses the comprehension macro exists(), whose work its length does not bound"),
    ],
)
def test_invalid_rule_fails_at_start_up_with_rule_and_reason(rule: str, message: str) -> None:
    config = parse_config(_with("offers.renewal.eligible_if", rule))
    with pytest.raises(ConfigError) as error:
        EligibilityRules(config)
    assert message in str(error.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("offers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_the_config_the_worker_process_reads_is_the_config_again() -> None:
    """`brein serve` hands its worker process the config as JSON (serving/background.py); every float
    must come back exactly, the extremes the config allows included (inf came back as null)."""
    data = _with("joiner.interval_seconds", MAX_SECONDS)
    data["server"]["shutdown_grace"] = 0.1 + 0.2
    data["outcomes"]["complaint"]["window_days"] = MAX_DAYS
    data["gate"] = {"max_age_hours": MAX_HOURS, "min_lift": -1e12, "min_ess": 5e-324}
    data["features"]["numeric"]["tenure_months"] = {"encoding": "bins", "edges": [-1.7976931348623157e308, 1 / 3]}
    config = parse_config(data)
    assert parse_config(json.loads(config.model_dump_json()), source="the server's config") == config
