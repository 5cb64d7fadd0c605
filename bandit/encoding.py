"""Numeric encodings learned from the log: quantile edges of each numeric context field, computed
once when a model lineage is born and fixed for it (stored with every snapshot of the lineage).

A field encoded ``quantile`` becomes one category at each resolution (``[features]
quantile_resolutions`` bins of about equal size in the data, edges that repeat dropped), so a linear model can learn a
threshold wherever the customers are, without edges picked by hand. A field absent from a
request gets no feature (the missing category: the model's other terms carry it). Before a
lineage has data (a cold start), and for a field the config does not name that few decisions hold
(``MIN_SHARE``, ``FIELDS``), the data-free ``auto`` encoding applies (bandit/features.py); a
field the config names that the data never held has no values to take quantiles of: it is
logged once, when the lineage is born, and encoded as absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bandit.config import FeaturesConfig
from store.ports import ModelSnapshots
from store.records import SharedFeatures

log = logging.getLogger("brein.encoding")

MAX_VALUES = 200_000
"""Values per field the edges are taken from, at most: plenty for a few dozen bins."""
LARGEST = 1e12
"""A value further from 0 cannot make an edge (the same bound the request check applies)."""
CONTEXT_NAMESPACES = ("u", "n", "h")
"""Where numeric fields are; history counts (``h``) are Brein's own and stay raw unless configured."""
MIN_SHARE = 0.01
"""A field the config does not name learns edges only when at least this share of the decisions
holds it, of more than one customer: a field a few requests send (one caller's made-up names)
stays ``auto`` instead of making the lineage's encoding, and every snapshot of it, carry its edges."""
FIELDS = 256
"""Fields the config does not name that learn edges, at most (the most common ones): a lineage's
encoding stays a few hundred KB even when a small log lets many rare names pass ``MIN_SHARE``
(a name is at most 1 KB); a few hundred is still far more numeric fields than a context has."""
COUNTERS = 10_000
"""Names counted at once while finding the common ones (Misra-Gries): learning takes bounded
memory whatever names requests send, and every field in more than 1/(COUNTERS + 1) of the
numeric values logged is found (at ``MIN_SHARE``: any field when decisions hold up to 100 each)."""

DAYS_SINCE_EDGES = (1.0, 7.0, 30.0, 90.0)
"""The bins of the history's ``days_since_*`` fields (bandit/features.py)."""

Edges = tuple[tuple[float, ...], ...]
"""A field's edges at each resolution."""


@dataclass(frozen=True, slots=True)
class LearnedEncoding:
    """Per namespace, per numeric field its quantile edges at each resolution (a context field and
    a history count of the same name are two fields: a caller's values never cut Brein's counts);
    ``unseen``: fields the config names ``quantile`` that the data never held (encoded as absent)."""

    edges: Mapping[str, Mapping[str, Edges]]
    unseen: frozenset[str]
    resolutions: tuple[int, ...]
    key: str = field(init=False)

    def __post_init__(self) -> None:
        text = json.dumps(self.to_json(), sort_keys=True)
        object.__setattr__(self, "key", hashlib.sha256(text.encode()).hexdigest()[:12])

    def field_edges(self, namespace: str, name: str) -> Edges | None:
        """The edges learned for field ``name`` of ``namespace``, None for none."""
        fields = self.edges.get(namespace)
        return None if fields is None else fields.get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "quantile",
            "resolutions": list(self.resolutions),
            "namespaces": {
                namespace: {name: [list(e) for e in edges] for name, edges in sorted(fields.items())}
                for namespace, fields in sorted(self.edges.items())
            },
            "unseen": sorted(self.unseen),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnedEncoding:
        """Also an encoding stored before edges were kept per namespace (``fields``: name -> edges):
        its edges apply in every namespace, as they did."""
        if data.get("kind") != "quantile":
            raise ValueError(f"expected a learned encoding of kind 'quantile', got {data.get('kind')!r}")
        resolutions = tuple(int(r) for r in data["resolutions"])
        stored = data["namespaces"] if "namespaces" in data else dict.fromkeys(CONTEXT_NAMESPACES, data["fields"])
        edges = {str(namespace): {str(name): tuple(tuple(float(x) for x in e) for e in per) for name, per in fields.items()}
                 for namespace, fields in stored.items()}  # fmt: skip
        for fields in edges.values():
            for name, per in fields.items():
                if len(per) != len(resolutions):
                    raise ValueError(f"field {name!r}: expected edges at {len(resolutions)} resolutions, got {len(per)}")
        return cls(edges, frozenset(data.get("unseen", ())), resolutions)


def encoding_from_json(data: Mapping[str, Any] | None) -> LearnedEncoding | None:
    """A stored encoding (a snapshot's, a registry entry's), None for none stored (``auto``)."""
    return None if data is None else LearnedEncoding.from_json(data)


def quantile_edges(values: list[float], bins: int) -> tuple[float, ...]:
    """The edges that cut sorted ``values`` into ``bins`` parts of about equal size, repeats dropped
    (a field with few distinct values gets fewer bins). ``bisect_right(edges, x)`` is x's bin."""
    if not values:
        return ()
    ordered = sorted(values)
    cuts = (ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)] for i in range(1, bins))
    edges = sorted(set(cuts))
    # An edge equal to the smallest value leaves its bin empty below it.
    return tuple(e for e in edges if e > ordered[0])


def is_quantile(features: FeaturesConfig, namespace: str, name: str) -> bool:
    """Whether field ``name`` of ``namespace`` is encoded ``quantile`` by ``features``."""
    configured = features.numeric.get(name)
    if configured is not None:
        return configured.encoding == "quantile"
    return namespace != "h" and features.numeric_default == "quantile"


def learns_encoding(features: FeaturesConfig) -> bool:
    """Whether a new lineage learns quantile edges with these feature settings."""
    return features.numeric_default == "quantile" or any(f.encoding == "quantile" for f in features.numeric.values())


def _quantile_values(features: FeaturesConfig, shared: SharedFeatures) -> Iterator[tuple[tuple[str, str], float]]:
    """(namespace, name) and value of each field of ``shared`` encoded ``quantile`` whose value can make an edge."""
    for namespace in CONTEXT_NAMESPACES:
        for name, value in shared.get(namespace, {}).items():
            if isinstance(value, str) or not math.isfinite(value) or abs(value) > LARGEST:
                continue
            if is_quantile(features, namespace, name):
                yield (namespace, name), float(value)


def _frequent(features: FeaturesConfig, logged: Iterable[tuple[str, SharedFeatures]]) -> tuple[int, set[tuple[str, str]]]:
    """The number of decisions, and the fields that may be common among them, counted in bounded
    memory (Misra-Gries, ``COUNTERS`` names at a time): every field in more than 1/(COUNTERS + 1)
    of the values is among them."""
    decisions = 0
    counts: dict[tuple[str, str], int] = {}
    for _, shared in logged:
        decisions += 1
        for key, _ in _quantile_values(features, shared):
            if key in counts:
                counts[key] += 1
            elif len(counts) < COUNTERS:
                counts[key] = 1
            else:  # one less for every name counted and this one: amortised, as many steps as values
                counts = {k: c - 1 for k, c in counts.items() if c > 1}
    return decisions, set(counts)


def learn_encoding(features: FeaturesConfig, logged: Sequence[tuple[str, SharedFeatures]]) -> LearnedEncoding:
    """The quantile edges, from the logged (customer id, raw features), of every numeric field
    encoded ``quantile`` that the config names, and of the ``FIELDS`` most common of the others that
    at least ``MIN_SHARE`` of the decisions, of more than one customer, hold (the rest stay
    ``auto``). A configured field never seen is logged (once: a lineage learns its encoding once)."""
    configured = {name for name, c in features.numeric.items() if c.encoding == "quantile"}
    decisions, frequent = _frequent(features, logged)
    values: dict[tuple[str, str], list[float]] = {}
    first: dict[tuple[str, str], str] = {}  # field -> the first customer seen holding it
    several: set[tuple[str, str]] = set()  # fields held by more than one customer
    for customer, shared in logged:
        for key, value in _quantile_values(features, shared):
            if key in frequent or key[1] in configured:
                seen = values.setdefault(key, [])
                if len(seen) < MAX_VALUES:
                    seen.append(value)
                if key not in several and first.setdefault(key, customer) != customer:
                    several.add(key)
    enough = MIN_SHARE * decisions
    common = sorted((k for k in values if k[1] not in configured and k in several and len(values[k]) >= enough),
                    key=lambda k: (-len(values[k]), k))  # fmt: skip
    learned = [k for k in values if k[1] in configured] + common[:FIELDS]
    resolutions = tuple(features.quantile_resolutions)
    edges: dict[str, dict[str, Edges]] = {}
    for namespace, name in learned:
        edges.setdefault(namespace, {})[name] = tuple(quantile_edges(values[namespace, name], r) for r in resolutions)
    unseen = frozenset(configured - {name for _, name in values})
    for name in sorted(unseen):
        log.warning("numeric field %r is configured 'quantile' but the log holds no value of it: encoded as absent", name)
    return LearnedEncoding(edges, unseen, resolutions)


def field_encoding(features: FeaturesConfig, learned: LearnedEncoding | None, namespace: str, name: str) -> dict[str, Any]:
    """Numeric field ``name`` of ``namespace``: its kind and edges as a model with ``learned``
    encodes it (the choice FeatureEncoder makes)."""
    if namespace == "h" and name.startswith("days_since_"):
        return {"kind": "bins", "edges": [list(DAYS_SINCE_EDGES)]}
    if learned is not None:
        edges = learned.field_edges(namespace, name)
        if edges is not None:
            return {"kind": "quantile", "edges": [list(e) for e in edges]}
        if name in learned.unseen:
            return {"kind": "absent", "edges": []}
    configured = features.numeric.get(name)
    if configured is not None and configured.encoding == "bins":
        return {"kind": "bins", "edges": [list(configured.edges)]}
    kind = configured.encoding if configured is not None else "raw" if namespace == "h" else features.numeric_default
    return {"kind": "auto" if kind == "quantile" else kind, "edges": []}  # quantile without edges: auto


def encoding_summary(
    features: FeaturesConfig, learned: LearnedEncoding | None, shared: SharedFeatures
) -> dict[str, dict[str, dict[str, Any]]]:
    """Namespace -> numeric field of ``shared`` (a decision's raw features) -> its kind and edges as
    a model with ``learned`` encodes it: for Explain and the export, the decision's own fields (a
    lineage's encoding may hold hundreds)."""
    summary = {namespace: {name: field_encoding(features, learned, namespace, name)
                           for name, value in values.items() if not isinstance(value, str)}
               for namespace, values in shared.items()}  # fmt: skip
    return {namespace: fields for namespace, fields in summary.items() if fields}


def model_encoding(models: ModelSnapshots, policy_id: str, version: str) -> LearnedEncoding | None:
    """The learned encoding of the model (policy, version) that made a decision: None (the data-free
    one) for a cold start, a policy without snapshots (rules, uniform) or a snapshot no longer stored."""
    snapshot = models.get(policy_id, version)
    return None if snapshot is None else encoding_from_json(snapshot.encoding)
