from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, cast

import pytest
from vowpal_wabbit_next import TextFormatParser, Workspace

from bandit.catalog import DO_NOTHING, Catalog
from bandit.config import BreinConfig, parse_config
from bandit.decider import MAX_TRIES, Decider, PendingDecision, ServingPolicy
from bandit.errors import InvalidRequest
from bandit.features import FeatureEncoder, action_line
from bandit.learner import COLD_START, LabelledExample, VWPolicy, contributions, train, vw_arguments
from bandit.requests import DecisionRequest
from brain.core import Brain
from reward.ingest import OutcomeReport
from store.errors import Conflict, StaleHistory
from store.ports import DecisionLog
from store.records import CustomerLog, DecisionRecord, Head, ModelSnapshot, decision_id_for
from tests.conftest import T0, Clock, example_data

DAY = 86_400.0
CONTEXT: dict[str, Any] = {
    "numeric": {"months_to_contract_end": 2.0, "tenure_months": 30.0, "handset_age_months": 24.0},
    "categorical": {"plan": "basic", "has_app": "yes", "region": "north"},
}


def request(customer: str = "c1", request_id: str = "r1", at: float = T0, **overrides: Any) -> DecisionRequest:
    fields: dict[str, Any] = {
        "customer_id": customer,
        "touchpoint": "app",
        "request_id": request_id,
        "event_time": at,
        "personalisation": "granted",
        **CONTEXT,
    }
    fields.update(overrides)
    return DecisionRequest(**fields)


def test_cold_start_is_uniform_over_the_eligible_actions(brain: Brain) -> None:
    record = brain.decider.decide_and_wait(request()).record
    assert record.model_version == COLD_START
    assert record.exploratory
    assert len(record.eligible) == len(brain.catalog)  # every rule passes for this context
    assert record.pmf == pytest.approx([1 / len(record.eligible)] * len(record.eligible))
    assert record.probability == pytest.approx(1 / len(record.eligible))
    assert record.action_id in record.eligible


def test_same_request_id_returns_the_same_decision_and_logs_nothing_new(brain: Brain) -> None:
    first = brain.decider.decide_and_wait(request())
    again = brain.decider.decide_and_wait(request())
    untimed = brain.decider.decide_and_wait(request(at=None))  # the event time is not what the server filled in
    assert again.replayed and untimed.replayed and not first.replayed
    assert again.record == untimed.record == first.record
    assert brain.store.decisions.decision_count() == 1
    with pytest.raises(Conflict, match="request_id 'r1' was already used for a decision with another customer_id"):
        brain.decider.decide(request(customer="c2"))
    with pytest.raises(Conflict, match="another event_time"):
        brain.decider.decide(request(at=T0 + 60))


def test_in_flight_duplicate_is_the_same_decision(brain: Brain) -> None:
    first = brain.decider.decide(request())
    second = brain.decider.decide(request())
    assert second.record is first.record
    second.committed.result()
    assert brain.store.decisions.decision_count() == 1


def test_sampling_is_reproducible_from_seed_and_decision_id(make_brain: Callable[..., Brain], config_data: dict[str, Any]) -> None:
    def choices(seed: int) -> list[str]:
        config_data["server"]["seed"] = seed
        brain = make_brain(parse_config(config_data))
        return [brain.decider.decide_and_wait(request(f"c{i}", f"r{i}")).record.action_id for i in range(40)]

    assert choices(7) == choices(7)
    assert choices(7) != choices(8)


def test_candidate_actions_restrict_and_do_nothing_stays(brain: Brain) -> None:
    record = brain.decider.decide_and_wait(request(candidate_actions=("renewal/email/morning",))).record
    assert set(record.eligible) == {DO_NOTHING, "renewal/email/morning"}


def test_rules_remove_offers_and_channels(brain: Brain) -> None:
    context = {"numeric": {"months_to_contract_end": 9.0}, "categorical": {"plan": "unlimited"}}
    record = brain.decider.decide_and_wait(request(touchpoint="web", **context)).record
    offers = {a.split("/")[0] for a in record.eligible}
    channels = {a.split("/")[1] for a in record.eligible if a != DO_NOTHING}
    assert offers == {DO_NOTHING, "sim_only"}  # renewal needs <= 4 months, upsell not on unlimited, handset needs age
    assert channels == {"email", "sms"}  # no app, and no outbound call when the web shop asks
    reasons = brain.explain(record.decision_id).removed
    assert dict(reasons)["renewal/email/morning"].startswith("offers.renewal.eligible_if")
    assert "needs 'handset_age_months'" not in dict(reasons)["new_handset/email/morning"]  # has() guards it


def test_consent(brain: Brain) -> None:
    denied = brain.decider.decide_and_wait(request(personalisation="denied", contact_consent={"sms": "denied"})).record
    assert set(denied.features) == {"n"}  # only non-personal context
    assert denied.features["n"]["region"] == "north"  # marked non-personal in the config
    assert not denied.personalised
    assert not any("/sms/" in a for a in denied.eligible)
    assert dict(brain.explain(denied.decision_id).removed)["renewal/sms/morning"] == "no contact consent for sms"
    granted = brain.decider.decide_and_wait(request("c2", "r2")).record
    assert granted.personalised and granted.features["u"]["plan"] == "basic"
    unspecified = brain.decider.decide_and_wait(request("c3", "r3", personalisation="unspecified")).record
    assert not unspecified.personalised  # the example config: unspecified counts as denied


def _contact(brain: Brain, customer: str, request_id: str, at: float, action: str) -> None:
    brain.decider.decide_and_wait(request(customer, request_id, at=at, candidate_actions=(action,)))


def test_contact_caps_across_channels(brain: Brain, clock: Clock) -> None:
    decide = brain.decider.decide_and_wait
    # Force contacts: a single candidate and do-nothing, until the contact happens.
    made = 0
    for i in range(60):
        record = decide(request("c1", f"r{i}", at=T0 + i, candidate_actions=("renewal/email/morning",))).record
        made += record.action_id != DO_NOTHING
        if made == 1:
            break
    later = decide(request("c1", "next", at=T0 + 100)).record
    assert not any("/email/" in a for a in later.eligible)  # 1 e-mail per day
    assert any("/sms/" in a for a in later.eligible)
    reasons = dict(brain.explain(later.decision_id).removed)
    assert reasons["renewal/email/evening"] == "contact cap: at most 1 email contact(s) per 1 day"
    for i in range(200):
        record = decide(request("c1", f"s{i}", at=T0 + 200 + i, candidate_actions=("renewal/sms/morning",))).record
        if record.action_id != DO_NOTHING:
            break
    capped = decide(request("c1", "capped", at=T0 + 2 * DAY)).record
    assert capped.eligible == (DO_NOTHING,)  # 2 contacts per 7 days
    assert capped.features["h"]["contacts_7d"] == 2.0
    free = decide(request("c1", "free", at=T0 + 8 * DAY)).record
    assert len(free.eligible) > 1


def test_contact_caps_count_contacts_logged_after_the_decisions_time(brain: Brain) -> None:
    """Decisions that reach the log out of event-time order: a contact stored (or still in flight)
    with a later event time counts against a cap as one before it would."""
    decide = brain.decider.decide_and_wait
    for i in range(60):
        made = decide(request("c1", f"e{i}", at=T0 + 6 * 3600 + i, candidate_actions=("renewal/email/morning",))).record
        if made.action_id != DO_NOTHING:
            break
    earlier = decide(request("c1", "earlier", at=T0)).record
    assert not any("/email/" in a for a in earlier.eligible) and any("/sms/" in a for a in earlier.eligible)
    assert "contacts_7d" not in earlier.features.get("h", {})  # features see the past only
    # Two decided together: the later one is in flight (not logged) when the earlier one is decided.
    for customer in (f"c{i}" for i in range(2, 60)):
        later, first = brain.decider.decide_many([
            request(customer, f"{customer}-a", at=T0 + 3600, candidate_actions=("renewal/sms/morning",)),
            request(customer, f"{customer}-b", at=T0, candidate_actions=("renewal/sms/evening",)),
        ])  # fmt: skip
        assert isinstance(later, PendingDecision) and isinstance(first, PendingDecision)
        if later.record.action_id != DO_NOTHING:
            assert first.record.eligible == (DO_NOTHING,)  # 1 SMS a day
            return
    raise AssertionError("no SMS decided in 58 tries")


def test_quiet_period_and_suppression_from_outcomes(brain: Brain, clock: Clock) -> None:
    _, stored = brain.report_outcome(OutcomeReport("o1", "c1", "complaint", event_time=T0))
    stored.result()
    quiet = brain.decider.decide_and_wait(request("c1", "q", at=T0 + 5 * DAY)).record
    assert quiet.eligible == (DO_NOTHING,)
    assert dict(brain.explain(quiet.decision_id).removed)["sim_only/sms/evening"].startswith("quiet period: complaint 5.0 days ago")
    brain.report_outcome(OutcomeReport("o2", "c2", "contract_renewal", event_time=T0))[1].result()
    renewed = brain.decider.decide_and_wait(request("c2", "s", at=T0 + 10 * DAY)).record
    assert not any(a.startswith(("renewal", "new_handset")) for a in renewed.eligible)
    assert any(a.startswith("sim_only") for a in renewed.eligible)
    assert renewed.features["h"]["days_since_contract_renewal"] == pytest.approx(10.0)
    # A renewal with a later event time that reached the log first suppresses the renewal offers too.
    brain.report_outcome(OutcomeReport("o3", "c3", "contract_renewal", event_time=T0 + DAY))[1].result()
    before = brain.decider.decide_and_wait(request("c3", "b", at=T0)).record
    assert not any(a.startswith(("renewal", "new_handset")) for a in before.eligible)
    reason = dict(brain.explain(before.decision_id).removed)["renewal/sms/evening"]
    assert reason.startswith("suppressed: contract_renewal 1.0 days after this decision's time"), reason
    assert "days_since_contract_renewal" not in before.features.get("h", {})  # features see the past only


def test_in_flight_decisions_count_in_history(brain: Brain) -> None:
    pendings = [brain.decider.decide(request("c9", f"r{i}", at=T0 + i, candidate_actions=("sim_only/sms/morning",))) for i in range(40)]
    for pending in pendings:
        pending.committed.result()
    contacts = [p.record for p in pendings if p.record.action_id != DO_NOTHING]
    assert len(contacts) == 1  # 1 sms per day, even though none was committed when the next was decided


def _context_line(config: BreinConfig) -> str:
    """The shared VW line of CONTEXT at T0 on the app."""
    encoder = FeatureEncoder(config)
    features = encoder.shared_features(
        touchpoint="app", event_time=T0, numeric=CONTEXT["numeric"], categorical=CONTEXT["categorical"], history={}, personalised=True
    )
    return encoder.shared_line(features)


def _trained(config: BreinConfig, favourite: str, brain: Brain) -> VWPolicy:
    actions = brain.catalog.actions
    shared_line = _context_line(config)
    examples = [
        LabelledExample(shared_line, actions, i % len(actions), 1 / len(actions), -1.0 if actions[i % len(actions)].id == favourite else 0.0)
        for i in range(600)
    ]
    args = vw_arguments(config.learner)
    data, _ = train(args, None, examples)
    return VWPolicy(args, data)


def test_trained_model_serves_its_pmf_over_eligible_only_and_explains(brain: Brain, config: BreinConfig) -> None:
    model = _trained(config, "sim_only/sms/evening", brain)
    brain.store.models.save(ModelSnapshot(model.version, model.args, model.serialize(), "trained")).result()
    brain.decider.swap_policy(ServingPolicy("trained", model))
    records = [brain.decider.decide_and_wait(request(f"c{i}", f"r{i}")).record for i in range(30)]
    record = records[0]
    assert record.model_version == model.version and record.policy_id == "trained"
    favourite = record.eligible.index("sim_only/sms/evening")
    assert record.pmf[favourite] == max(record.pmf) > 0.5
    assert sum(record.pmf) == pytest.approx(1.0)
    assert sum(r.action_id == "sim_only/sms/evening" for r in records) > 15
    assert any(r.exploratory for r in records) or all(r.action_id == "sim_only/sms/evening" for r in records)
    restricted = brain.decider.decide_and_wait(request("x", "x", candidate_actions=("renewal/email/morning",))).record
    assert len(restricted.pmf) == 2 and sum(restricted.pmf) == pytest.approx(1.0)
    chosen = next(r for r in records if r.action_id == "sim_only/sms/evening")
    explanation = brain.explain(chosen.decision_id)
    names = [name for name, _ in explanation.contributions]
    assert explanation.contributions and explanation.contributions_note == ""
    assert any("sim_only" in n or "sms" in n or "evening" in n for n in names)
    assert all(abs(a[1]) >= abs(b[1]) for a, b in itertools.pairwise(explanation.contributions))


def test_contributions_are_named_and_valued_as_vw_names_the_features() -> None:
    """Python's splitlines() and split() also break on U+2028, NEL and U+3000, which VW keeps in a
    name: a contribution was named by a fragment ("w*o^sim_only") and a raw field's valued as 1."""
    data = example_data()
    data["features"]["numeric_default"] = "raw"
    config = parse_config(data)
    encoder = FeatureEncoder(config)
    actions = Catalog(config).actions
    favourite = next(a for a in actions if a.id == "sim_only/sms/evening")

    def line(spend: float) -> str:
        features = encoder.shared_features(touchpoint="app", event_time=T0, numeric={"spend\u3000x": spend},
                                           categorical={"a\x85b": "v\u2028w"}, history={}, personalised=True)  # fmt: skip
        return encoder.shared_line(features)

    chosen = [actions[i % len(actions)] for i in range(300)]
    cost = {a: -1.0 if a == favourite else 0.0 for a in actions}
    examples = [LabelledExample(line(1.0), actions, actions.index(a), 1 / len(actions), cost[a]) for a in chosen]
    args = vw_arguments(config.learner)
    model, _ = train(args, None, examples)
    once, twice = (dict(contributions(args, model, line(spend), favourite)) for spend in (1.0, 2.0))
    assert {"u^spend\u3000x", "u^a\x85b=v\u2028w", "u^a\x85b=v\u2028w*o^sim_only"} <= set(once)
    assert all("^" in term for name in once for term in name.split("*") if name != "Constant")
    assert {n: twice[n] for n in once if "u^spend" in n} == pytest.approx({n: 2 * once[n] for n in once if "u^spend" in n})


def test_a_models_pmf_is_vowpal_wabbits_own_prediction(brain: Brain, config: BreinConfig) -> None:
    """VWPolicy predicts through the library's core binding, past its Python label check: the same
    distribution as the public ``predict_one`` on fresh parses, in every action order asked."""
    model = _trained(config, "sim_only/sms/evening", brain)
    workspace = Workspace(model.args, model_data=model.serialize())
    parser = TextFormatParser(workspace)
    shared_line = _context_line(config)
    actions = list(brain.catalog.actions)
    for offered in (actions, actions[::-1], actions[3:9], actions[:1]):
        public = workspace.predict_one([parser.parse_line(shared_line), *(parser.parse_line(action_line(a)) for a in offered)])
        expected = [0.0] * len(offered)
        for index, probability in cast("list[tuple[int, float]]", public):
            expected[index] = max(probability, 0.0)
        assert model.pmf(shared_line, offered) == pytest.approx([p / sum(expected) for p in expected], abs=1e-12)
    assert len(set(model.pmf(shared_line, actions))) > 1


def test_the_probability_floor_keeps_every_eligible_action_in_the_log(
    make_brain: Callable[..., Brain], config_data: dict[str, Any]
) -> None:
    config_data["learner"] = {**config_data["learner"], "min_probability": 0.01}
    config = parse_config(config_data)
    brain = make_brain(config)
    model = _trained(config, "sim_only/sms/evening", brain)
    unfloored = model.pmf(_context_line(config), brain.catalog.actions)
    assert min(unfloored) < 0.01  # the learner alone leaves actions below the floor
    brain.decider.swap_policy(ServingPolicy("trained", model))
    record = brain.decider.decide_and_wait(request()).record
    assert min(record.pmf) >= 0.01 - 1e-12 and sum(record.pmf) == pytest.approx(1.0)
    favourite = record.eligible.index("sim_only/sms/evening")
    assert record.pmf[favourite] == max(record.pmf) and record.probability == record.pmf[record.eligible.index(record.action_id)]


def test_bad_requests_are_refused_with_the_field(brain: Brain, clock: Clock) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer_id": ""}, "customer_id: is required"),
        ({"touchpoint": "fax"}, "channel: unknown touchpoint 'fax'"),
        ({"candidate_actions": ("gold/email/morning",)}, "candidate_actions: unknown action id 'gold/email/morning'"),
        ({"numeric": {"x": float("nan")}}, "context.numeric['x']: must be a finite number within ±1e+12, got nan"),
        ({"numeric": {"x": float("inf")}}, "got inf"),
        ({"numeric": {"x": -1.5e12}}, "context.numeric['x']: must be a finite number within ±1e+12, got -1.5e+12"),
        ({"numeric": {f"f{i}": 1.0 for i in range(1001)}}, "features, at most 1000 allowed"),
        ({"categorical": {"k" * 1025: "v"}}, "context.categorical key: longer than 1024 bytes"),
        ({"categorical": {"k": "v" * 1025}}, "longer than 1024 bytes"),
        ({"event_time": clock.now + 301}, "event_time: 301 s ahead of the server's clock, at most 300 s allowed"),
        ({"event_time": 900_000_000.0}, "event_time: before 2000-01-01"),
        ({"contact_consent": {"pigeon": "granted"}}, "consent.contact: unknown channel 'pigeon'"),
    ]
    for overrides, message in cases:
        with pytest.raises(InvalidRequest) as error:
            brain.decider.decide(request(**overrides))
        assert message in str(error.value)
    assert brain.store.decisions.decision_count() == 0


def test_example_config_keeps_outbound_call_for_non_web(config: BreinConfig) -> None:
    assert "outbound_call" in example_data()["channels"]


def test_decide_many_decides_as_decide_one_after_another(make_brain: Callable[..., Brain], config: BreinConfig) -> None:
    requests = [
        request("c1", "m1", candidate_actions=("sim_only/sms/morning",)),
        request("c1", "m2", at=T0 + 1, candidate_actions=("sim_only/sms/morning",)),  # sees m1 in flight
        request("c2", "m3", touchpoint="web"),
        request("c3", "m4", touchpoint="fax"),  # refused, in its place
        request("c2", "m3", touchpoint="web"),  # the same request id again: the same decision
        request("c4", "m3"),  # the same request id for another customer: refused
        request("c1", "m5", at=T0 + 2),
    ]
    one_by_one = make_brain(config)
    expected: list[Any] = []
    for r in requests:
        try:
            expected.append(one_by_one.decider.decide_and_wait(r))
        except (InvalidRequest, Conflict) as error:
            expected.append(error)
    batched = make_brain(config)
    results = batched.decider.decide_many(requests)
    for got, want in zip(results, expected, strict=True):
        if isinstance(want, Exception):
            assert type(got) is type(want) and str(got) == str(want)
        else:
            assert not isinstance(got, Exception)
            assert (got.record, got.replayed) == (want.record, want.replayed)
    decided = [r for r in results if not isinstance(r, Exception)]
    assert len({id(r.committed) for r in decided}) == 1  # one write for the whole call
    decided[0].committed.result()
    assert batched.store.decisions.decision_count() == one_by_one.store.decisions.decision_count() == 4
    again = batched.decider.decide_many([request("c2", "m3", touchpoint="web")])[0]
    assert not isinstance(again, Exception) and again.replayed and again.record == expected[2].record


def test_decide_many_keeps_contact_caps_within_the_call(brain: Brain) -> None:
    many = [request("c9", f"r{i}", at=T0 + i, candidate_actions=("sim_only/sms/morning",)) for i in range(40)]
    results = brain.decider.decide_many(many)
    contacts = [r.record for r in results if not isinstance(r, Exception) and r.record.action_id != DO_NOTHING]
    assert len(contacts) == 1  # 1 sms per day, although none was logged while the others were decided


def _decided(results: Sequence[PendingDecision | Exception]) -> list[PendingDecision]:
    assert not any(isinstance(r, Exception) for r in results)
    return cast("list[PendingDecision]", list(results))


def test_held_decisions_of_several_calls_are_in_flight_until_released_as_one_write(brain: Brain) -> None:
    held = brain.hold_decisions()
    sms = ("sim_only/sms/morning",)
    first = _decided(brain.decide_many([request("c9", f"h{i}", at=T0 + i, candidate_actions=sms) for i in range(20)], held))
    second = _decided(brain.decide_many([request("c9", f"h{i}", at=T0 + i, candidate_actions=sms) for i in range(20, 40)], held))
    replay = _decided(brain.decide_many([request("c9", "h3", at=T0 + 3, candidate_actions=sms)]))[0]
    assert replay.committed is first[3].committed  # the replay waits on the write of h3, held
    contacts = [p.record for p in first + second if p.record.action_id != DO_NOTHING]
    assert len(contacts) == 1  # 1 sms per day: the second call saw the first's decisions in flight
    assert brain.store.decisions.decision_count() == 0 and not held.done()
    assert not any(p.committed.done() for p in first + second)
    held.release()
    for pending in first + second:
        pending.committed.result(timeout=10)
    assert brain.store.decisions.decision_count() == 40
    assert brain.store.decisions.decisions_by_request(["h3"])["h3"] == replay.record


def test_held_decisions_cancelled_before_release_are_never_written_nor_in_flight(brain: Brain) -> None:
    held = brain.hold_decisions()
    sms = ("sim_only/sms/morning",)
    (kept,) = _decided(brain.decide_many([request("c9", "h1", candidate_actions=sms)], held))
    assert kept.record.action_id != DO_NOTHING
    assert held.cancel()
    held.release()
    assert kept.committed.cancelled() and brain.store.decisions.decision_count() == 0
    (later,) = _decided(brain.decide_many([request("c9", "h2", at=T0 + 1, candidate_actions=sms)]))
    again = brain.decider.decide_and_wait(request("c9", "h1", at=T0 + 2, candidate_actions=sms))
    assert later.record.action_id != DO_NOTHING and not again.replayed  # the cancelled decision counts nowhere
    later.committed.result()


def test_actions_tied_under_elimination_still_get_a_distribution(brain: Brain, config: BreinConfig) -> None:
    """VW's SquareCB with --elim gives tied actions 1 each and the best one a negative rest; the
    served pmf must stay a distribution. Only renewal/email/morning is learned, so the actions that
    share none of its offer, channel and slot all score alike."""
    assert "--elim" in config.learner.extra_args
    shared_line = _context_line(config)
    actions = brain.catalog.actions
    learned = next(i for i, a in enumerate(actions) if a.id == "renewal/email/morning")
    args = vw_arguments(config.learner)
    data, _ = train(args, None, [LabelledExample(shared_line, actions, learned, 1 / len(actions), -1.0)] * 50)
    model = VWPolicy(args, data)
    tied = [brain.catalog.by_id[a] for a in ("sim_only/sms/evening", "data_upsell/sms/evening", "new_handset/sms/evening")]
    vw = Workspace(args, model_data=data)
    parser = TextFormatParser(vw)
    raw = vw.predict_one([parser.parse_line(line) for line in (shared_line, *map(action_line, tied))])
    assert min(p for _, p in raw) < 0  # what VW gives
    pmf = model.pmf(shared_line, tied)
    assert min(pmf) >= 0 and sum(pmf) == pytest.approx(1.0)


class OtherReplicaMeanwhile:
    """A decision log shared with another replica that, the first ``refusals`` times this process
    writes, has just logged a decision of its own for the same customer: the store refuses the
    write as StaleHistory, as a backend serialising customers across processes does."""

    def __init__(self, log: DecisionLog, theirs: list[DecisionRecord]) -> None:
        self.log = log
        self.theirs = theirs
        self.heads: list[dict[str, Head]] = []

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        self.heads.append(dict(heads or {}))
        if not self.theirs:
            return self.log.submit_decisions(records, heads)
        self.log.submit_decisions([self.theirs.pop(0)]).result()
        refused: Future[None] = Future()
        refused.set_exception(StaleHistory(f"{records[0].customer_id} got a decision from another process"))
        return refused

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        """As a store that serialises customers across processes: another may decide at any time."""
        return True

    def customer_logs(self, customer_ids: Collection[str], first: float, last: float, lookback_days: float) -> dict[str, CustomerLog]:
        """As a store that serialises customers gives them: each with a head."""
        return {c: replace(log, head=0) for c, log in self.log.customer_logs(customer_ids, first, last, lookback_days).items()}

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        return self.log.decisions_by_request(request_ids), self.customer_logs(customer_ids, first, last, lookback_days)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def _theirs(decision_id: str, customer: str, at: float, action: str) -> DecisionRecord:
    offer, channel, slot = action.split("/")
    return DecisionRecord(decision_id, f"r-{decision_id}", customer, "web", at, action, offer, channel, slot, at, 1.0, False, "champion",
                          COLD_START, True, {}, (action,), (1.0,))  # fmt: skip


def test_a_decision_on_a_history_another_replica_changed_is_made_again_on_the_new_one(brain: Brain, config: BreinConfig) -> None:
    theirs = [_theirs("x1", "c1", T0 - 60, "renewal/email/morning"), _theirs("x2", "c1", T0 - 30, "sim_only/sms/evening")]
    shared = OtherReplicaMeanwhile(brain.store.decisions, list(theirs))
    decider = Decider(config, cast(DecisionLog, shared), brain.decider.policy, clock=brain.clock)
    pending = decider.decide(request("c1", "r1"))
    assert len(pending.record.eligible) > 1  # made on a history without contacts
    pending.committed.result()
    record = pending.record
    assert record.eligible == (DO_NOTHING,)  # made again on the history with both: the cap of 2 in 7 days holds
    assert record.features["h"]["contacts_7d"] == 2.0 and record.decision_id == decision_id_for("r1")
    assert brain.store.decisions.decision(record.decision_id) == record  # the decision answered is the one logged
    assert [list(heads) for heads in shared.heads] == [["c1"]] * MAX_TRIES  # each try hands the store the heads it read
    assert decider.decide(request("c1", "r1")).record == record  # and it is the request's decision from now on


def test_a_history_changed_at_every_try_reaches_the_caller_and_logs_nothing(brain: Brain, config: BreinConfig) -> None:
    theirs = [_theirs(f"x{i}", f"c{i % 2}", T0 - 600 + i, "renewal/app_push/morning") for i in range(MAX_TRIES)]
    decider = Decider(config, cast(DecisionLog, OtherReplicaMeanwhile(brain.store.decisions, theirs)), brain.decider.policy, clock=brain.clock)
    results = decider.decide_many([request("c0", "r0"), request("c1", "r1")])
    pendings = [r for r in results if isinstance(r, PendingDecision)]
    assert len(pendings) == 2 and pendings[0].committed is pendings[1].committed  # one write for the call, tried as one
    with pytest.raises(StaleHistory, match="got a decision from another process"):
        pendings[0].committed.result()
    assert brain.store.decisions.decisions_by_request(["r0", "r1"]) == {}
    assert brain.store.decisions.decision_count() == MAX_TRIES  # theirs only
