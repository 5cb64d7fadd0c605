"""Numeric encodings learned from the log (bandit/encoding.py): quantile edges at several resolutions,
fixed per model lineage; ``auto`` before a lineage has data; a configured field never seen is
encoded as absent and logged once."""

from __future__ import annotations

import logging
import math
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from bandit.config import parse_config
from bandit.encoding import (
    FIELDS,
    MIN_SHARE,
    LearnedEncoding,
    encoding_from_json,
    encoding_summary,
    learn_encoding,
    quantile_edges,
)
from bandit.errors import ConfigError
from bandit.features import LOG_RESOLUTIONS, FeatureEncoder
from store import open_store
from store.records import ModelSnapshot, SharedFeatures
from tests.conftest import T0, example_data


def config(**features: Any) -> Any:
    data = example_data()
    data["features"] = {**data["features"], **features}
    return parse_config(data)


def logged(values: list[float], name: str = "tenure", namespace: str = "u") -> list[tuple[str, SharedFeatures]]:
    return customers([{namespace: {name: v, "plan": "basic"}} for v in values])


def customers(rows: list[SharedFeatures]) -> list[tuple[str, SharedFeatures]]:
    """Each decision's features as logged by a customer of its own."""
    return [(f"c{i}", shared) for i, shared in enumerate(rows)]


@pytest.mark.parametrize(
    ("values", "bins", "edges"),
    [
        (list(range(100)), 4, (25.0, 50.0, 75.0)),
        (list(range(100)), 16, tuple(float((i * 100) // 16) for i in range(1, 16))),
        ([0.0] * 90 + [1.0] * 10, 4, ()),  # every cut is 0, the smallest value: one bin
        ([0.0] * 50 + [1.0] * 30 + [5.0] * 20, 16, (1.0, 5.0)),  # repeats dropped: three bins
        ([], 4, ()),
    ],
)
def test_quantile_edges_cut_the_values_in_parts_of_about_equal_size(
    values: list[float], bins: int, edges: tuple[float, ...]
) -> None:
    assert quantile_edges([float(v) for v in values], bins) == edges


def test_a_learned_encoding_has_edges_at_each_resolution_and_encodes_with_them() -> None:
    assert config().features.quantile_resolutions == [4]  # the default: quartiles
    cfg = config(quantile_resolutions=[4, 16])
    assert cfg.features.numeric_default == "quantile"
    learned = learn_encoding(cfg.features, logged([float(v) for v in range(1, 121)]))
    coarse, fine = learned.edges["u"]["tenure"]
    assert coarse == (31.0, 61.0, 91.0) and len(fine) == 15
    encoder = FeatureEncoder(cfg, learned)
    assert encoder.encode({"u": {"tenure": 1.0}})["u"] == [("tenure~q4=b0", 1.0), ("tenure~q16=b0", 1.0)]
    assert encoder.encode({"u": {"tenure": 100.0}})["u"][0] == ("tenure~q4=b3", 1.0)
    assert encoder.encode({"u": {"tenure": 1e9}})["u"] == [("tenure~q4=b3", 1.0), ("tenure~q16=b15", 1.0)]
    line = encoder.shared_line({"u": {"tenure": 45.0, "plan": "basic"}})
    assert line == "shared |u tenure~q4=b1 tenure~q16=b5 plan=basic"


def test_the_resolutions_are_configured_and_kept_with_the_lineage_s_encoding() -> None:
    cfg = config(quantile_resolutions=[2, 8])
    learned = learn_encoding(cfg.features, logged([float(v) for v in range(1, 121)]))
    assert learned.resolutions == (2, 8) and [len(e) for e in learned.edges["u"]["tenure"]] == [1, 7]
    assert LearnedEncoding.from_json(learned.to_json()) == learned
    line = FeatureEncoder(cfg, learned).shared_line({"u": {"tenure": 45.0}})
    assert line == "shared |u tenure~q2=b0 tenure~q8=b2"


@pytest.mark.parametrize("resolutions", [[], [16, 4], [4, 4], [1, 4]])
def test_resolutions_that_are_not_increasing_bin_counts_are_refused(resolutions: list[int]) -> None:
    with pytest.raises(ConfigError, match="quantile_resolutions"):
        config(quantile_resolutions=resolutions)


def test_before_a_lineage_has_data_and_for_a_field_newer_than_it_the_auto_encoding_applies() -> None:
    cfg = config()
    cold = FeatureEncoder(cfg)  # no learned encoding: a cold start
    assert [n for n, _ in cold.encode({"u": {"tenure": 45.0}})["u"]] == [f"tenure~{r}={math.floor(r * math.log2(46))}"
                                                                         for r in LOG_RESOLUTIONS]  # fmt: skip
    learned = learn_encoding(cfg.features, logged([1.0, 2.0, 3.0]))
    newer = FeatureEncoder(cfg, learned).encode({"u": {"spend": 45.0}})["u"]
    assert newer == cold.encode({"u": {"spend": 45.0}})["u"]


def test_history_counts_stay_raw_and_values_that_cannot_make_an_edge_are_left_out() -> None:
    cfg = config()
    unusable = (math.inf, -math.inf, 5e12, -7e12)
    rows: list[SharedFeatures] = [{"u": {"tenure": v}, "h": {"contacts_7d": 2.0}} for v in (1.0, 2.0, *unusable)]
    rows.append({"u": {"tenure": math.nan}})
    learned = learn_encoding(cfg.features, customers(rows))
    assert learned.edges == {"u": {"tenure": ((2.0,),)}}
    assert FeatureEncoder(cfg, learned).encode({"h": {"contacts_7d": 2.0}})["h"] == [("contacts_7d", 2.0)]


def test_a_configured_field_never_seen_is_encoded_as_absent_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(numeric={"months_left": {"encoding": "quantile"}, "spend": {"encoding": "bins", "edges": [10.0]}})
    with caplog.at_level(logging.WARNING, logger="brein.encoding"):
        learned = learn_encoding(cfg.features, logged([1.0, 2.0, 3.0]))
    warnings = [r.getMessage() for r in caplog.records if "months_left" in r.getMessage()]
    assert len(warnings) == 1 and "encoded as absent" in warnings[0]
    assert learned.unseen == frozenset({"months_left"})
    encoder = FeatureEncoder(cfg, learned)
    assert encoder.encode({"u": {"months_left": 3.0}})["u"] == []
    assert encoder.shared_line({"u": {"months_left": 3.0, "plan": "basic"}}) == "shared |u plan=basic"
    assert encoder.encode({"u": {"spend": 30.0}})["u"] == [("spend=b1", 1.0)]  # hand-written edges stay
    shared: SharedFeatures = {
        "u": {"months_left": 3.0, "spend": 30.0, "tenure": 2.0, "other": 5.0, "plan": "basic"},
        "h": {"contacts_7d": 1.0, "days_since_last_contact": 3.0},
    }
    assert encoding_summary(cfg.features, learned, shared) == {
        "u": {"months_left": {"kind": "absent", "edges": []},
              "spend": {"kind": "bins", "edges": [[10.0]]},
              "tenure": {"kind": "quantile", "edges": [[2.0, 3.0]]},
              "other": {"kind": "auto", "edges": []}},  # a field the lineage never saw
        "h": {"contacts_7d": {"kind": "raw", "edges": []},
              "days_since_last_contact": {"kind": "bins", "edges": [[1.0, 7.0, 30.0, 90.0]]}},
    }  # fmt: skip


def test_a_learned_encoding_round_trips_through_json_and_is_fixed_whatever_the_config_says_later() -> None:
    learned = learn_encoding(config().features, logged([float(v) for v in range(50)]))
    again = LearnedEncoding.from_json(learned.to_json())
    assert again == learned and again.key == learned.key
    later = config(numeric_default="raw")  # the config changed after the lineage was born
    assert FeatureEncoder(later, again).encode({"u": {"tenure": 30.0}})["u"][0] == ("tenure~q4=b2", 1.0)
    with pytest.raises(ValueError, match="expected a learned encoding of kind 'quantile'"):
        LearnedEncoding.from_json({"kind": "auto"})
    with pytest.raises(ValueError, match="expected edges at 2 resolutions, got 1"):
        LearnedEncoding.from_json({"kind": "quantile", "resolutions": [4, 16], "fields": {"x": [[1.0]]}})


def test_a_context_field_named_like_a_history_count_does_not_re_encode_the_history() -> None:
    """Edges are kept per namespace: a caller's ``contacts_30d`` learns edges of its own, and Brein's
    history count of that name stays raw."""
    cfg = config()
    rows: list[SharedFeatures] = [{"u": {"contacts_30d": 1e6 * v}, "h": {"contacts_30d": 1.0}} for v in range(1, 41)]
    learned = learn_encoding(cfg.features, customers(rows))
    assert learned.edges == {"u": {"contacts_30d": ((1.1e7, 2.1e7, 3.1e7),)}}
    line = FeatureEncoder(cfg, learned).shared_line({"u": {"contacts_30d": 3e6}, "h": {"contacts_30d": 3.0}})
    assert line == "shared |u contacts_30d~q4=b0 |h contacts_30d:3"


def test_an_encoding_stored_before_namespaces_loads_and_encodes_as_it_did(tmp_path: Path) -> None:
    """A snapshot in a SQLite store whose encoding was written as ``fields`` (name -> edges): its
    edges apply in every namespace, as they did."""
    fields = {"tenure": [[3.0, 12.0]], "contacts_7d": [[1.0]]}
    stored = {"kind": "quantile", "resolutions": [4], "fields": fields, "unseen": ["x"]}
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        store.models.save(ModelSnapshot("v1", ["--cb_explore_adf"], b"model", "p", (1, T0, "d1"), stored)).result()
        snapshot = store.models.get("p", "v1")
    finally:
        store.close()
    assert snapshot is not None
    old = encoding_from_json(snapshot.encoding)
    assert old is not None and LearnedEncoding.from_json(old.to_json()) == old
    line = FeatureEncoder(config(), old).shared_line(
        {"u": {"tenure": 5.0, "x": 1.0}, "n": {"tenure": 20.0}, "h": {"contacts_7d": 2.0}}
    )
    assert line == "shared |u tenure~q4=b1 |n tenure~q4=b2 |h contacts_7d~q4=b1"


def test_only_fields_enough_decisions_hold_learn_edges_at_most_fields_of_them() -> None:
    """Made-up names a few requests send stay ``auto``; the common fields' edges are those learned
    without them; when a small log lets many names pass, FIELDS of them (the most common) learn edges."""
    cfg = config(numeric={"months_left": {"encoding": "quantile"}})
    common: list[SharedFeatures] = [{"u": {"tenure": float(v % 50)}, "n": {"months_left": float(v % 7)}} for v in range(1000)]
    rare = [{"u": {f"made-up-{j}": float(i) for j in range(100)}} for i in range(11)]
    alone = learn_encoding(cfg.features, customers(common))
    learned = learn_encoding(cfg.features, customers(common + rare[:9]))  # 9 of 1,009 decisions: under 1%
    assert learned == alone and learned.edges == {
        "u": {"tenure": ((12.0, 25.0, 37.0),)},
        "n": {"months_left": ((1.0, 3.0, 5.0),)},
    }
    assert MIN_SHARE == 0.01
    more = learn_encoding(cfg.features, customers(common + rare))  # 11 of 1,011: over
    assert len(more.edges["u"]) == 1 + 100 and more.edges["u"]["tenure"] == alone.edges["u"]["tenure"]
    # Every name passes the share: a000... are in all 3 decisions, b0-0... in one.
    few: list[SharedFeatures] = [
        {"u": {f"b{i}-{j}": 1.0 for j in range(100)} | {f"a{j:03}": float(i) for j in range(FIELDS + 50)}} for i in range(3)
    ]
    capped = learn_encoding(cfg.features, customers(few))
    assert set(capped.edges["u"]) == {f"a{j:03}" for j in range(FIELDS)}  # the most common first, then by name


def test_a_field_only_one_customer_sends_stays_auto_however_often() -> None:
    """Fields one customer's decisions hold (2% of the log here) learn no edges; the same fields
    from two customers do."""
    cfg = config()
    common = customers([{"u": {"tenure": float(v % 50)}} for v in range(1000)])
    made_up: list[SharedFeatures] = [{"u": {f"made-up-{j}": float(i) for j in range(100)}} for i in range(20)]
    one = learn_encoding(cfg.features, common + [("caller", shared) for shared in made_up])
    assert set(one.edges["u"]) == {"tenure"}
    two = learn_encoding(cfg.features, common + [(f"caller{i % 2}", shared) for i, shared in enumerate(made_up)])
    assert len(two.edges["u"]) == 1 + 100


def test_learning_counts_names_in_bounded_memory_whatever_names_requests_send() -> None:
    """Names are counted COUNTERS at a time before any value is kept: 100 decisions of 1,000 distinct
    names each (100,000 names) take a few MiB, not a list and edges per name."""
    cfg = config()
    common: list[SharedFeatures] = [{"u": {"tenure": float(v)}} for v in range(20_000)]
    distinct = [{"u": {f"field-{d}-{j}": float(j) for j in range(1000)}} for d in range(100)]
    tracemalloc.start()
    try:
        learned = learn_encoding(cfg.features, customers(common + distinct))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert learned.edges == learn_encoding(cfg.features, customers(common)).edges
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_the_summary_lists_a_decision_s_own_fields_whatever_their_names() -> None:
    """A field named ``*`` (once the summary's key for every field not listed) shows its learned
    edges: the summary holds the decision's own fields and no entry of its own."""
    learned = LearnedEncoding({"u": {"*": ((1.0, 2.0, 3.0),), "x": ((5.0,),)}}, frozenset(), (4,))
    summary = encoding_summary(config().features, learned, {"u": {"*": 2.5, "plan": "basic"}, "n": {"touchpoint": "app"}})
    assert summary == {"u": {"*": {"kind": "quantile", "edges": [[1.0, 2.0, 3.0]]}}}
