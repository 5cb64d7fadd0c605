"""Numeric context fields without a configured encoding (``auto``): categories on a signed log scale
at several resolutions; configured encodings and history counts as before; distinct fields stay
distinct features whatever their names hold."""

from __future__ import annotations

from typing import Any

import pytest
from vowpal_wabbit_next import TextFormatParser, Workspace

from bandit.config import parse_config
from bandit.features import LOG_RESOLUTIONS, FeatureEncoder
from tests.conftest import example_data


def encoder(**features: Any) -> FeatureEncoder:
    data = example_data()
    data["features"] = {**data["features"], **features}
    return FeatureEncoder(parse_config(data))


def test_an_unconfigured_numeric_field_becomes_categories_at_each_resolution() -> None:
    enc = encoder()
    names = [name for name, _ in enc.encode({"u": {"lifetime_spend": 130.0}})["u"]]
    assert len(names) == len(LOG_RESOLUTIONS) and all("=" in n for n in names)
    assert all(value == 1.0 for _, value in enc.encode({"u": {"lifetime_spend": 130.0}})["u"])
    # Months before a term ends: 0, 1, 2 and 3 apart at the finest resolution, 3 and 3.2 together.
    finest = {m: enc.encode({"u": {"months_left": m}})["u"][-1][0] for m in (0.0, 1.0, 2.0, 3.0, 3.2)}
    assert len({finest[m] for m in (0.0, 1.0, 2.0, 3.0)}) == 4 and finest[3.0] == finest[3.2]
    assert enc.encode({"u": {"x": -5.0}})["u"] != enc.encode({"u": {"x": 5.0}})["u"]
    line = enc.shared_line({"u": {"lifetime_spend": 130.0, "plan": "basic"}})
    assert line.count("lifetime_spend~") == len(LOG_RESOLUTIONS) and "plan=basic" in line


@pytest.mark.parametrize(("default", "expected"), [("raw", [("spend", 130.0)]), ("log1p", [("spend", pytest.approx(4.8752))])])
def test_the_default_encoding_can_be_raw_or_log1p(default: str, expected: list[tuple[str, float]]) -> None:
    assert encoder(numeric_default=default).encode({"u": {"spend": 130.0}})["u"] == expected


def test_configured_encodings_and_history_counts_are_kept() -> None:
    enc = encoder(numeric={"spend": {"encoding": "bins", "edges": [10.0, 100.0]}})
    assert enc.encode({"u": {"spend": 130.0}})["u"] == [("spend=b2", 1.0)]
    history = enc.encode({"h": {"contacts_7d": 2.0, "days_since_contact": 3.0}})["h"]
    assert history == [("contacts_7d", 2.0), ("days_since_contact=b1", 1.0)]


@pytest.mark.parametrize(
    "fields",
    [
        {"a b": "x", "a_b": "x", "a|b": "x", "a:b": "x", "a\tb": "x", "a%20b": "x"},
        {"k=v": "w", "k": "v=w"},
        {"a": "x", "\x01a": "x"},  # VW's hash drops what is at or below space at a name's ends
        {"x": 3.0, "x~1": "2", "x~4": "8"},  # x = 3.0 is encoded x~1=2 and x~4=8
    ],
    ids=["separators", "equals", "hash-trim", "encoding-suffix"],
)
def test_distinct_fields_are_distinct_features_to_vw(fields: dict[str, float | str]) -> None:
    """They were one: "a b", "a_b", "a|b" and "a:b" all became a_b=x."""
    enc = encoder()
    workspace = Workspace(["--quiet"], record_feature_names=True)
    workspace.learn_one(TextFormatParser(workspace).parse_line("1 " + enc.shared_line({"u": fields}).removeprefix("shared ")))
    model = workspace.readable_model(include_feature_names=True).split("\n")
    hashes = {line.split(":")[1] for line in model if line.startswith("u^")}
    assert len(hashes) == len(enc.encode({"u": fields})["u"])  # one VW feature per encoded pair
