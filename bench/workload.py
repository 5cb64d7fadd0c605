"""The benchmark's world: the telecom example config, a trained model for it, synthetic customers
and their DecideRequests, and catalogs of a chosen size for the in-process figures.

Everything is drawn from a seeded ``random.Random``, so two processes that build the workload from
the same seed (the server that samples a fixed response, the client that sends) agree on it.
"""

from __future__ import annotations

import copy
import random
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandit.catalog import Catalog
from bandit.config import BreinConfig, parse_config
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, train, vw_arguments
from serving.pb.brein.v1 import brein_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "telecom.toml"
EVENT_TIME = 1_780_000_000.0  # a fixed event time for training examples and in-process requests

TOUCHPOINTS = ("web", "app", "call_centre", "shop")
PLANS = ("basic", "plus", "unlimited")
REGIONS = ("north", "south", "east", "west", "centre")
DEVICES = ("ios", "android", "desktop")
CHANNELS = ("email", "sms", "app_push", "outbound_call")


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    touchpoint: str
    numeric: dict[str, float]
    categorical: dict[str, str]


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def customer(rng: random.Random, index: int) -> Customer:
    """One customer with the telecom example's context features."""
    return Customer(
        customer_id=f"cust-{index:06d}",
        touchpoint=rng.choice(TOUCHPOINTS),
        numeric={
            "months_to_contract_end": float(rng.randint(0, 24)),
            "tenure_months": float(rng.randint(1, 120)),
            "monthly_spend": round(rng.uniform(10.0, 120.0), 2),
            "handset_age_months": float(rng.randint(0, 48)),
        },
        categorical={
            "plan": rng.choice(PLANS),
            "has_app": rng.choice(("yes", "no")),
            "region": rng.choice(REGIONS),
            "device": rng.choice(DEVICES),
        },
    )


def customers(count: int, seed: int) -> list[Customer]:
    rng = random.Random(seed)
    return [customer(rng, i) for i in range(count)]


def decide_request(c: Customer, request_id: str = "") -> pb.DecideRequest:
    """Consent granted for personalisation and every channel; no event time (the server's now)."""
    return pb.DecideRequest(
        request_id=request_id,
        customer_id=c.customer_id,
        channel=c.touchpoint,
        context=pb.Context(numeric=c.numeric, categorical=c.categorical),
        consent=pb.Consent(
            personalisation=pb.CONSENT_STATE_GRANTED,
            contact={channel: pb.CONSENT_STATE_GRANTED for channel in CHANNELS},
        ),
    )


def request_bases(count: int, seed: int) -> list[bytes]:
    """Each customer's DecideRequest serialised without a request id (see ``with_request_id``)."""
    return [decide_request(c).SerializeToString() for c in customers(count, seed)]


def with_request_id(base: bytes, request_id: str) -> bytes:
    """A serialised request with its request id: protobuf parses concatenated messages as one
    merged message, so appending the encoded field is the same as setting it, at a fraction of
    the cost of building the message (the client must not be the bottleneck of the no-op)."""
    suffix: bytes = pb.DecideRequest(request_id=request_id).SerializeToString()
    return base + suffix


# -- a trained model ------------------------------------------------------------------------------


def _cost(c: Customer, offer: str, channel: str) -> float:
    """A synthetic reward pattern (cost = -reward) so the model learns something non-uniform."""
    months = c.numeric["months_to_contract_end"]
    if offer in ("renewal", "renewal_discount") and months <= 4:
        return -1.0 if channel in ("email", "app_push") else -0.5
    if offer == "data_upsell" and c.categorical["plan"] == "basic":
        return -0.6
    if offer == "new_handset" and c.numeric["handset_age_months"] >= 24:
        return -0.8
    return 0.0


def train_model(config: BreinConfig, examples: int, seed: int, actions_per_example: int = 8) -> bytes:
    """A VW model for ``config``'s catalog, learned on synthetic logged examples; its bytes."""
    rng = random.Random(seed)
    catalog = Catalog(config)
    encoder = FeatureEncoder(config)

    def logged() -> Iterator[LabelledExample]:
        for i in range(examples):
            c = customer(rng, i)
            features = encoder.shared_features(
                touchpoint=c.touchpoint,
                event_time=EVENT_TIME + rng.uniform(0, 7 * 86_400),
                numeric=c.numeric,
                categorical=c.categorical,
                history={},
                personalised=True,
            )
            actions = tuple(rng.sample(catalog.actions, min(actions_per_example, len(catalog.actions))))
            chosen = rng.randrange(len(actions))
            action = actions[chosen]
            cost = 0.0 if action.do_nothing else _cost(c, action.offer, action.channel)
            yield LabelledExample(encoder.shared_line(features), actions, chosen, 1.0 / len(actions), cost)

    data, _ = train(vw_arguments(config.learner), None, logged())
    assert data is not None
    return data


def telecom_config(store: Path | str, model: Path | None) -> dict[str, Any]:
    """The example config with a temp store, a model file and a seed of its own."""
    data = example_data()
    data["server"] = {**data["server"], "store": str(store), "seed": 7}
    if model is not None:
        data["learner"] = {**data.get("learner", {}), "model": str(model)}
    return data


# -- catalogs of a chosen size, for the in-process figures -----------------------------------------

SLOTS = {"morning": "09:00", "evening": "19:30", "afternoon": "14:00", "night": "22:00", "now": ""}  # "now" is built in
EXTRA_OFFER_RULE = "has(numeric.tenure_months) && numeric.tenure_months >= 6.0"


def sized_config(offers: int, channels: int, slots: int) -> BreinConfig:
    """The example config with an (offers x channels x slots) catalog. The example's five offers
    (and their rules) come first, then extra offers with a rule each; channels and their rules
    are the example's; slots are taken in the order of ``SLOTS``."""
    data = copy.deepcopy(example_data())
    example_offers = list(data["offers"].items())
    names = [name for name, _ in example_offers[:offers]]
    for i in range(len(names), offers):
        data["offers"][f"bundle_{i}"] = {"cost": float(i), "eligible_if": EXTRA_OFFER_RULE}
        names.append(f"bundle_{i}")
    data["offers"] = {name: data["offers"][name] for name in names}
    if channels > len(CHANNELS):
        raise ValueError(f"expected at most {len(CHANNELS)} channels, got {channels}")
    data["channels"] = {name: data["channels"][name] for name in CHANNELS[:channels]}
    slot_names = list(SLOTS)[:slots]
    if slots > len(SLOTS):
        raise ValueError(f"expected at most {len(SLOTS)} slots, got {slots}")
    data["slots"] = {name: SLOTS[name] for name in slot_names if name != "now"}
    data["combinations"] = [{"offers": names, "channels": list(data["channels"]), "slots": slot_names}]
    kept = set(names)
    policy = data["contact_policy"]
    policy["suppressions"] = [
        {**s, "offers": [o for o in s["offers"] if o in kept]} for s in policy["suppressions"] if set(s["offers"]) & kept
    ]
    return parse_config(data, source=f"{offers}x{channels}x{slots} catalog")


def eligible_customer() -> Customer:
    """A customer every example rule lets through: all configured actions stay eligible."""
    return Customer(
        customer_id="cust-inprocess",
        touchpoint="app",
        numeric={"months_to_contract_end": 2.0, "tenure_months": 30.0, "monthly_spend": 45.0, "handset_age_months": 26.0},
        categorical={"plan": "plus", "has_app": "yes", "region": "north", "device": "android"},
    )
