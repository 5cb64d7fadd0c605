"""Feature encoding: a request, its consent and the customer's history become VW namespaces.

Shared namespaces (one letter each, VW interacts namespaces by their first letter):
  ``u`` the customer's own context features (only with personalisation consent)
  ``h`` history features from Brein's log (only with personalisation consent)
  ``n`` non-personal context: touchpoint, local hour and weekday, features the config marks non-personal
Action namespaces: ``o`` offer, ``c`` channel, ``s`` send-time slot; do-nothing has only ``d``.
Do-nothing is the baseline every contact is compared with, so it takes part in no interaction:
its predicted value is the shared features' own terms (learned from every example) plus one
constant, and each contact's interactions learn how far it lies above or below that baseline.
With its own ``o`` feature it would get a full set of interaction weights learned only from the
few decisions that chose it (1 in ~40 under uniform exploration), and the choice between
contacting and not would rest on them (measured in docs/simulation.md).

The log keeps the raw values as used (``SharedFeatures``); the VW text is derived from them with
the configured encoding, so an exported log can be re-encoded by another feature set-up.

A numeric context field with no encoding configured (``quantile``) is cut at quantile edges learned
from the log when a model lineage is born (bandit/encoding.py, ``learned``). Before that, and for a
field the lineage never saw, the data-free ``auto`` applies, which needs no thresholds either: it
becomes one category at each of several resolutions of its signed log scale (``LOG_RESOLUTIONS``
steps per doubling of 1 + |value|), so a linear model can still say "in the last month before
the term ends" or "only the heaviest users" without edges picked by hand (measured against raw in
docs/simulation.md, "Choosing the defaults").
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from bandit.catalog import Action
from bandit.config import BreinConfig, NumericFeatureConfig
from bandit.encoding import DAYS_SINCE_EDGES, LearnedEncoding
from bandit.requests import MAX_FEATURE_MAGNITUDE
from store.records import SharedFeatures

LOG_RESOLUTIONS = (1, 4)
"""Steps per doubling of 1 + |value| of the ``auto`` encoding's categories: coarse ones learn fast,
fine ones resolve thresholds (months 0, 1, 2, 3 before a term ends; 18-22 against 22-26 years)."""
TOKEN_MEMO_SIZE = 65_536
_ESCAPED = re.compile(r"[\x00-\x20%*:=|~]|^_")
"""What ``vw_safe`` percent-encodes: what VW's text format splits on (space, tab, '|', ':') and the
other characters up to space, which VW's hash drops at a name's ends ("\\x01a" hashed as "a"); '='
and '~', which join a field's name to its value or its encoding's category; '*', which joins the
terms of an interaction in VW's feature names (Explain splits them there); '%' itself; and a
leading '_', which VW's DSJSON reader takes for a key of its own (skipped, refused as "Unsupported
key", or ``_label_cost`` read as the label)."""


def _percent(match: re.Match[str]) -> str:
    return f"%{ord(match[0]):02X}"


@lru_cache(maxsize=65_536)
def vw_safe(text: str) -> str:
    """A name or category as one VW token, the same in the text line and the DSJSON export.

    One-to-one, so distinct fields stay distinct features ("a b" and "a_b", "k=v":"w" and
    "k":"v=w"); most text needs nothing, so the search alone is the usual cost.
    """
    return text if _ESCAPED.search(text) is None else _ESCAPED.sub(_percent, text)


def _bucket(value: float, edges: tuple[float, ...] | list[float]) -> str:
    return f"b{bisect_right(edges, value)}"


def _signed_log1p(value: float) -> float:
    return math.copysign(math.log1p(abs(value)), value)


SHARED_NAMESPACES = "uhn"
"""The namespaces numeric values enter VW in; the actions' (o, c, s, d) hold categories of value 1."""


def numeric_bound(interactions: list[str]) -> float:
    """The largest |value| a numeric feature enters VW with: MAX_FEATURE_MAGNITUDE ** (1 / k), for k
    the most shared-namespace features one of ``interactions`` multiplies (1 without any: the
    feature's own weight), so that each product stays within MAX_FEATURE_MAGNITUDE. VW's adaptive,
    normalised update sums g²x² in float32 (largest 3.4e38) for every product x: at order k a
    feature's (x^k)² overflowed after three examples from x = 1.2e18, 1.1e9, 1.1e6 (k = 1, 2, 3) and
    learning was lost; at 1e12, 1e6, 1e4 the sum has room (extrapolated) for some 10^8 such examples
    at the largest cost (README, "What a request may hold")."""
    order = max((sum(term.count(ns) for ns in SHARED_NAMESPACES) for term in interactions), default=1)
    return math.pow(MAX_FEATURE_MAGNITUDE, 1 / max(order, 1))


def _log_steps(value: float, resolution: int) -> int:
    """Which step of the signed log scale ``value`` falls in, ``resolution`` steps per doubling."""
    step = math.floor(resolution * math.log2(1.0 + abs(value)))
    return -step - 1 if value < 0 else step


def local_hour_weekday(event_time: float, zone: ZoneInfo) -> tuple[int, int]:
    # Hour and weekday change only on whole seconds (zone offsets are whole seconds): one per second.
    return _local_hour_weekday(math.floor(event_time), zone)


@lru_cache(maxsize=1024)
def _local_hour_weekday(second: int, zone: ZoneInfo) -> tuple[int, int]:
    local = datetime.fromtimestamp(second, tz=UTC).astimezone(zone)
    return local.hour, local.weekday()


class FeatureEncoder:
    """Shared features as VW sees them, with ``learned``: the quantile edges of the model lineage the
    features are for (None before a lineage has data: ``quantile`` fields are then encoded ``auto``)."""

    def __init__(self, config: BreinConfig, learned: LearnedEncoding | None = None) -> None:
        self._config = config
        self._zone = config.zone
        self._non_personal = frozenset(config.features.non_personal)
        self._numeric: Mapping[str, NumericFeatureConfig] = config.features.numeric
        self._numeric_default = config.features.numeric_default
        self._bound = numeric_bound(config.learner.interactions)
        self.learned = learned
        # (namespace, name) -> value -> its token in the VW line: most values recur (categories, hours,
        # counts, whole months). Zeros are not remembered: 0.0 and -0.0 are equal keys, not equal tokens.
        # Nested, so that a lookup makes no key tuple; ``_token_count`` tokens in all, at most TOKEN_MEMO_SIZE.
        self._tokens: dict[str, dict[str, dict[float | str, str]]] = {}
        self._token_count = 0

    def with_encoding(self, learned: LearnedEncoding | None) -> FeatureEncoder:
        """This encoder for a model of another lineage (itself when the encoding is the same)."""
        if (learned.key if learned else "") == (self.learned.key if self.learned else ""):
            return self
        return FeatureEncoder(self._config, learned)

    def shared_features(
        self,
        *,
        touchpoint: str,
        event_time: float,
        numeric: Mapping[str, float],
        categorical: Mapping[str, str],
        history: Mapping[str, float],
        personalised: bool,
    ) -> SharedFeatures:
        hour, weekday = local_hour_weekday(event_time, self._zone)
        non_personal: dict[str, float | str] = {"touchpoint": touchpoint, "hour": str(hour), "weekday": str(weekday)}
        user: dict[str, float | str] = {}
        for source in (numeric, categorical):
            for name, value in source.items():
                if name in self._non_personal:
                    non_personal[name] = value
                elif personalised:
                    user[name] = value
        features: SharedFeatures = {"n": non_personal}
        if personalised:
            if user:
                features["u"] = user
            if history:
                features["h"] = dict(history)
        return features

    def _encode(self, namespace: str, name: str, value: float | str) -> list[tuple[str, float]]:
        """One field as VW sees it: (name, value) pairs; a category is ``name=category`` with value 1."""
        safe = vw_safe(name)
        if isinstance(value, str):
            return [(f"{safe}={vw_safe(value)}", 1.0)]
        if namespace == "h" and name.startswith("days_since_"):
            return [(f"{safe}={_bucket(value, DAYS_SINCE_EDGES)}", 1.0)]
        learned = self.learned
        if learned is not None:  # the lineage's edges, fixed when it was born, whatever the config says now
            edges = learned.field_edges(namespace, name)
            if edges is not None:
                return [(f"{safe}~q{r}={_bucket(value, e)}", 1.0) for r, e in zip(learned.resolutions, edges, strict=True)]
            if name in learned.unseen:
                return []
        configured = self._numeric.get(name)
        # History counts are Brein's own (small, comparable): raw unless configured.
        encoding = configured.encoding if configured is not None else "raw" if namespace == "h" else self._numeric_default
        if encoding in ("auto", "quantile"):  # quantile without edges: a cold start, or a field newer than the lineage
            return [(f"{safe}~{r}={_log_steps(value, r)}", 1.0) for r in LOG_RESOLUTIONS]
        if encoding == "bins" and configured is not None:
            return [(f"{safe}={_bucket(value, configured.edges)}", 1.0)]
        if encoding == "log1p":
            value = _signed_log1p(value)
        return [(safe, float(f"{min(max(value, -self._bound), self._bound):.6g}"))]

    def encode(self, features: SharedFeatures) -> dict[str, list[tuple[str, float]]]:
        """Namespace -> VW features, the one encoding both the text and the DSJSON forms are made from."""
        return {ns: [pair for name, value in values.items() for pair in self._encode(ns, name, value)]
                for ns, values in features.items()}  # fmt: skip

    def shared_line(self, features: SharedFeatures) -> str:
        parts = ["shared"]
        for namespace, values in features.items():
            parts.append(f"|{namespace}")
            fields = self._tokens.get(namespace)
            if fields is None:
                fields = self._tokens[namespace] = {}
            for name, value in values.items():
                known = fields.get(name)
                token = known.get(value) if known is not None and value else None
                if token is None:
                    token = self._token(namespace, name, value)
                    if value:
                        if self._token_count >= TOKEN_MEMO_SIZE:
                            self._tokens.clear()
                            self._token_count = 0
                            fields = self._tokens[namespace] = {}
                            known = None
                        if known is None:
                            known = fields[name] = {}
                        known[value] = token
                        self._token_count += 1
                if token:  # empty for a field encoded as absent
                    parts.append(token)
        return " ".join(parts)

    def _token(self, namespace: str, name: str, value: float | str) -> str:
        return " ".join(encoded if number == 1.0 and "=" in encoded else f"{encoded}:{number:.6g}"
                        for encoded, number in self._encode(namespace, name, value))  # fmt: skip


def action_features(action: Action) -> dict[str, list[str]]:
    """Namespace -> the action's features (each with value 1)."""
    if action.do_nothing:
        return {"d": ["do_nothing"]}
    return {"o": [vw_safe(action.offer)], "c": [vw_safe(action.channel)], "s": [vw_safe(action.slot)]}


@lru_cache(maxsize=4096)
def action_line(action: Action) -> str:
    return " ".join(f"|{ns} {' '.join(names)}" for ns, names in action_features(action).items())
