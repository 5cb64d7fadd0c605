"""A model lineage serves with the quantile edges it was born with (stored with each snapshot), a
shadow of another lineage scores with its own encoding, and Explain (over real gRPC on 127.0.0.1)
and the DSJSON export show the encoding of the model that decided."""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bandit.config import parse_config
from bandit.encoding import LearnedEncoding
from bandit.features import FeatureEncoder
from bandit.requests import DecisionRequest
from bandit.sampling import floored
from brain.core import Brain
from policies.operations import train_candidate
from policies.registry import Registry
from serving.cli import main
from serving.converters import decision_request
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from tests.conftest import EXAMPLE, T0, LiveServer, example_data
from tests.test_online import DAY, join_and_learn, simulate
from tests.test_server import decide_request


def new_user_data() -> dict[str, Any]:
    """The example config without its hand-written bins: numeric fields take the default encoding."""
    data = example_data()
    data["features"]["numeric"] = {}
    data["learner"]["snapshot_every"] = 50
    return data


def new_user_toml(path: Path) -> Path:
    text = re.sub(r"\[features\.numeric\.\w+\]\nencoding = \"bins\"\nedges = \[[^\]]*\]\n", "", EXAMPLE.read_text())
    assert "[features.numeric." not in text
    path.write_text(text)
    return path


def test_a_trained_lineage_serves_with_its_stored_edges_and_explain_shows_them(
    make_brain: Callable[..., Brain], metrics: Metrics, tmp_path: Path
) -> None:
    config = parse_config(new_user_data())
    assert config.features.numeric_default == "quantile"
    brain = make_brain(config)
    simulate(brain, days=60)
    assert brain.decider.policy.model.encoding is None  # a cold start: auto
    _, learned = join_and_learn(brain)
    assert learned > 50
    snapshots = list(brain.store.models.newest_first(config.learner.policy_id))
    encoding = LearnedEncoding.from_json(snapshots[0].encoding or {})
    assert {"months_to_contract_end", "tenure_months"} <= set(encoding.edges["u"])
    assert encoding.edges["u"]["months_to_contract_end"][0] == (1.0, 3.0, 4.0)  # months 0-5: quartiles of the log
    served = brain.decider.policy.model
    assert served.version == snapshots[0].version and served.encoding == encoding

    # The lineage keeps its edges: more data, more snapshots, the same encoding.
    simulate(brain, days=90)  # the same first 60 days (replayed), then 30 more
    join_and_learn(brain)
    newer = list(brain.store.models.newest_first(config.learner.policy_id))
    assert len(newer) > len(snapshots) and {json.dumps(s.encoding, sort_keys=True) for s in newer} == {
        json.dumps(snapshots[0].encoding, sort_keys=True)}  # fmt: skip
    later = decide_request("c902", "r-later")  # event time moves on: the lineage's own decisions are joined
    later.event_time.FromSeconds(int(T0 + 140 * DAY))
    brain.decider.decide_and_wait(decision_request(later))
    join_and_learn(brain)
    newest = next(brain.store.models.newest_first(config.learner.policy_id))
    assert newest.encoding == snapshots[0].encoding

    live = LiveServer(brain, metrics)
    try:
        request = decide_request("c900", "r-quantile")
        request.event_time.FromSeconds(int(T0 + 141 * DAY))
        decision = live.stub.Decide(request)
        record = brain.store.decisions.decision(decision.decision_id)
        assert record is not None and record.model_version == newest.version
        bucket = bisect_right(encoding.edges["u"]["months_to_contract_end"][0], 2.0)
        assert f"months_to_contract_end~q4=b{bucket}" in record.shared_line
        assert "months_to_contract_end~1=" not in record.shared_line  # not the auto encoding
        explanation = live.stub.Explain(pb.ExplainRequest(decision_id=decision.decision_id))
        shown = {(e.namespace, e.field): e for e in explanation.encoding}
        numeric = {(f.namespace, f.name) for f in explanation.features if not f.category}
        assert set(shown) == numeric  # the decision's own numeric fields, each as the model encodes it
        months = shown["u", "months_to_contract_end"]
        assert months.kind == "quantile"
        assert [tuple(e.edges) for e in months.edges] == [tuple(e) for e in encoding.edges["u"]["months_to_contract_end"]]
        assert explanation.contributions and not explanation.contributions_note
    finally:
        live.stop()

    export = tmp_path / "log.dsjson"
    toml = new_user_toml(tmp_path / "brein.toml")
    result = CliRunner().invoke(main, ["log", "export", "--config", str(toml), "--store", brain.store.url, "-o", str(export)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    kinds = {line["_encoding"]["u"]["months_to_contract_end"]["kind"] for line in lines}
    assert kinds == {"auto", "quantile"}  # decided at the cold start, then by the lineage
    by_lineage = next(
        line["_encoding"]["u"] for line in lines if line["_encoding"]["u"]["months_to_contract_end"]["kind"] == "quantile"
    )
    assert by_lineage["months_to_contract_end"]["edges"] == [list(e) for e in encoding.edges["u"]["months_to_contract_end"]]
    for line in lines:  # each line shows its own numeric fields
        numeric = {ns: {n for n, v in f.items() if not isinstance(v, str)} for ns, f in line["_features"].items()}
        assert {ns: set(f) for ns, f in line["_encoding"].items()} == {ns: names for ns, names in numeric.items() if names}


def test_a_shadow_of_another_encoding_scores_with_its_own(make_brain: Callable[..., Brain]) -> None:
    """A candidate trained with ``auto`` shadows a quantile champion: each is fed its own encoding."""
    config = parse_config(new_user_data())
    brain = make_brain(config)
    simulate(brain, days=60)
    join_and_learn(brain)
    champion = brain.decider.policy.model
    assert champion.encoding is not None
    data = new_user_data()
    data["features"]["numeric_default"] = "auto"
    auto = parse_config(data)
    entry, _ = train_candidate(auto, brain.store, policy_id="auto-shadow", since=None, until=None, actor="test")
    assert "learned_encoding" not in entry.features
    Registry(brain.store.registry).set_state("auto-shadow", "shadow", actor="test", reason="compare encodings")
    brain.refresh_shadows()
    (shadow,) = brain.decider.shadows
    assert shadow.model.encoding is None
    request = decide_request("c901", "r-shadow")
    request.event_time.FromSeconds(int(T0 + 40 * DAY))
    record = brain.decider.decide_and_wait(decision_request(request)).record
    actions = [brain.catalog.by_id[a] for a in record.eligible]
    auto_line = FeatureEncoder(config).shared_line(record.features)
    assert auto_line != record.shared_line
    expected = floored(shadow.model.pmf(auto_line, actions), config.learner.min_probability)
    assert record.shadow["auto-shadow"] == tuple(expected)


def test_a_context_field_named_like_a_history_count_leaves_every_customer_s_history_raw(make_brain: Callable[..., Brain]) -> None:
    """Two customers send ``contacts_30d`` (Brein's own history count's name) in the millions: the
    lineage learns edges for their context field, and every customer's history count stays raw."""
    config = parse_config(new_user_data())
    brain = make_brain(config)
    simulate(brain, days=50)
    for i in range(40):
        numeric = {"contacts_30d": 1e6 * (i + 1)}
        at = T0 + 2 * DAY + i
        brain.decider.decide_and_wait(
            DecisionRequest(f"odd{i % 2}", "app", f"h{i}", event_time=at, personalisation="granted", numeric=numeric)
        )
    join_and_learn(brain)
    encoding = brain.decider.policy.model.encoding
    assert (
        encoding is not None and encoding.field_edges("u", "contacts_30d") and encoding.field_edges("h", "contacts_30d") is None
    )
    record = brain.decider.decide_and_wait(
        DecisionRequest("c1", "app", "c1-after", event_time=T0 + 50 * DAY, personalisation="granted")
    ).record
    contacts = record.features["h"]["contacts_30d"]
    assert isinstance(contacts, float) and contacts > 0
    assert f"contacts_30d:{contacts:g}" in record.shared_line.split()  # raw, as Brein's counts are


def test_one_caller_s_made_up_names_stay_out_of_the_lineage_s_encoding(
    make_brain: Callable[..., Brain], metrics: Metrics
) -> None:
    """A customer sending hundreds of made-up numeric names in 8 requests (1.6% of the decisions, but
    one customer's): the lineage learns edges for the common fields only, its snapshots stay small,
    and Explain of another customer's decision shows that decision's fields."""
    config = parse_config(new_user_data())
    brain = make_brain(config)
    simulate(brain, days=60)
    for i in range(8):
        numeric = {f"made-up-{j}".ljust(200, "x"): float(i) for j in range(300)}
        at = T0 + 5 * DAY + i
        brain.decider.decide_and_wait(
            DecisionRequest("caller", "app", f"odd-{i}", event_time=at, personalisation="granted", numeric=numeric)
        )
    join_and_learn(brain)
    snapshot = next(brain.store.models.newest_first(config.learner.policy_id))
    encoding = LearnedEncoding.from_json(snapshot.encoding or {})
    assert set(encoding.edges) == {"u"} and set(encoding.edges["u"]) == {"months_to_contract_end", "tenure_months"}
    assert len(json.dumps(snapshot.encoding)) < 1000

    live = LiveServer(brain, metrics)
    try:
        request = decide_request("c1", "r-after")
        request.event_time.FromSeconds(int(T0 + 61 * DAY))
        decision = live.stub.Decide(request)
        explanation = live.stub.Explain(pb.ExplainRequest(decision_id=decision.decision_id))
        shown = {(e.namespace, e.field): e.kind for e in explanation.encoding}
        assert shown["u", "months_to_contract_end"] == "quantile" and shown["h", "contacts_30d"] == "raw"
        assert not any(name.startswith("made-up") for _, name in shown)
    finally:
        live.stop()
