"""Alpha spending across the candidates judged against one champion.

The gate corrects the looks at one candidate (its k-th on the gate's window at ALPHA / k²:
``policies.gate.look``) and the set-ups a tuned candidate was picked among (ALPHA shared among them).
But a champion faces candidate after candidate: every run of the worker's ``[tuning]``, every
operator's ``policy train`` or ``policy register`` and ``evaluate``. Each judged at its own first look
at 95%, a grid of set-ups no better than the champion passes some run sooner or later, and is
promoted: of 20 candidates no better than the champion, each judged on a log of its own, one passed
in 35% of 400 repetitions, of 20 tuning runs of 13 set-ups in 32% of 100 (bench/estimators.py,
"candidates in turn"); spent as below, in 1.8% and 2.0%.

The rule. The i-th candidate judged against a champion has the alpha ALPHA_i = ALPHA·6/(π² i²)
(``candidate_alpha``; Σ_i ALPHA_i = ALPHA), its k-th look ALPHA_i / k², and each of the m set-ups it was
picked among ALPHA_i / (m k²) (``Spending.alpha``). Whatever the dependence between them (all are judged
against one champion on overlapping logs), the chance that some candidate no better than the champion
ever passes against it, over all its candidates, their looks and their set-ups, is at most
Σ_i ALPHA_i·π²/6 = ALPHA·π²/6 = 8.2%: the bound one candidate's looks had alone. The first candidate
against a champion is judged at 96.96%, not at 95% as before: with ALPHA_1 = ALPHA nothing would be
left for a second. The second is judged at 99.24%, the tenth at 99.97%.

Why this rule. Alpha-investing and LORD earn alpha back at each discovery, and keep their promise
only for tests that are independent (or positively dependent). Here a discovery, a candidate that
passes and is promoted, makes a new champion: a new question with a fresh ALPHA, which is what they
would earn back. And the candidates against one champion are judged on overlapping logs against the
same logged rewards, dependent in ways nobody can model: a union bound over the sequence holds
whatever that dependence. Among spending sequences the shape matters little, for an interval's
half-width grows only as the normal quantile of alpha: 1/(i(i+1)) (the first at 97.5%) has
intervals 1 to 3% narrower for the 2nd to the 50th candidate than 6/(π² i²) and 3.5% wider for the
first. 6/(π² i²) puts most on the first candidates, where most champions' question is settled, and
keeps the whole family's bound at the 8.2% the looks alone had.

What a candidate is. A policy, not a name: the entries with one artifact hash are one candidate
(``Registry.looks``), so neither another id nor the same bytes registered again start it afresh; it
counts from its first look recorded on the gate's window against the champion. A tuning run against
the champion is one candidate, its set-ups sharing its alpha: it is recorded in the audit trail
(``TRIAL_ACTION``, with its registration when it registered its best) unless none of its set-ups was
reliable, when none could pass whatever the rewards, and it spent nothing. An evaluation nobody
recorded (a notebook's) cannot be counted; it is no evidence either.

The count. A candidate keeps the rank of its first look: its later looks spend its own ALPHA_i (a
tuning run that trains the same model as an earlier candidate, on the same log, judges it at its own
new rank, stricter: the candidate keeps the first). The count is of the champion's id: a new champion is
a new question and starts at 1; one rolled back to takes up its count where it was (the same question).
Two first looks against one champion at once can take one rank: the first by key holds it, the other
takes the next free rank when it looks again, and the gate refuses evidence judged at a rank its
candidate does not hold (``policies.gate.check_gate``).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from policies.estimators import ALPHA, level
from policies.registry import Registry
from store import Store
from store.records import AuditEntry

TRIAL_ACTION = "policy_trial"
"""The audit action of a tuning run judged against the champion: a candidate, whether it registered its best or not."""
KEY = "spending"
"""Where a stored evaluation report keeps the level its look was judged at (``Spending.as_dict``)."""


def candidate_alpha(rank: int) -> float:
    """The alpha of the ``rank``-th candidate judged against one champion: ALPHA·6/(π² rank²)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected an integer >= 1, got {rank!r}")
    return ALPHA * 6 / (math.pi**2 * rank**2)


def look_alpha(look: int, selected_among: int = 1, alpha: float = ALPHA) -> float:
    """The alpha of a candidate's ``look``-th look against one champion on the gate's window (1 for the
    first), for a candidate whose alpha is ``alpha`` (its rank's: ``candidate_alpha``): alpha / look².
    Evaluated again as the log grows and promoted at the first pass, a candidate no better than the
    champion passes some look sooner or later at a fixed level (a sequential test read as a single
    one); at alpha / k² the chance that it ever passes is at most alpha·π²/6. A candidate picked as the
    best of ``selected_among`` set-ups on a log its window keeps (``PolicyEntry.selected_among``: a
    tuning's) shares it among them at every look, as tuning did: evaluated again on that log at the
    level of one, the one picked would pass on the error that made it look best."""
    return alpha / (max(1, selected_among) * look**2)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True, slots=True)
class Spending:
    """The level a look against a champion is judged at, and why: the candidate's ``rank`` among those
    judged against the champion, which ``look`` at it this is, and the set-ups it was picked among."""

    rank: int
    look: int = 1
    selected_among: int = 1

    def __post_init__(self) -> None:
        for name in ("rank", "look", "selected_among"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")

    @property
    def alpha(self) -> float:
        """Every interval of the look is at 1 - alpha: ALPHA·6/(π² rank²) / (selected_among · look²)."""
        return look_alpha(self.look, self.selected_among, candidate_alpha(self.rank))

    def describe(self, champion: str) -> str:
        """In words, for reports and the gate's refusals: "99.747%: its 1st look as the 2nd candidate
        judged against champion, shared among 3 set-ups"."""
        among = f", shared among {self.selected_among} set-ups" if self.selected_among > 1 else ""
        return (f"{level(self.alpha)}: its {ordinal(self.look)} look as the {ordinal(self.rank)} candidate judged against "
                f"{champion}{among}")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "look": self.look, "selected_among": self.selected_among, "alpha": self.alpha}

    @classmethod
    def read(cls, data: Any) -> Spending | None:
        """What ``as_dict`` wrote (a stored report's ``KEY``); None for anything else: a look recorded
        before the gate spent its alpha across candidates."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(data["rank"], data["look"], data["selected_among"])
        except (KeyError, ValueError):
            return None


Trials = Mapping[str, Set[int]]
"""The candidates judged against one champion: each one's key (its artifact hash, or a tuning run's
``run:`` id when it registered nothing) and the ranks its recorded looks were judged at (none for
looks recorded before spending)."""


def trials(store: Store, champion: str) -> dict[str, set[int]]:
    """Every candidate judged against ``champion``, from what the store holds: the looks on the gate's
    window against it recorded under any registry entry, and the tuning runs' trials."""
    registry = Registry(store.registry)
    found: dict[str, set[int]] = {}
    for entry in registry.list():
        for evaluation in registry.evaluations(entry.id):
            if evaluation.gate_window and evaluation.against == champion:
                judged = Spending.read(evaluation.report.get(KEY))
                found.setdefault(entry.artifact_hash, set()).update(() if judged is None else (judged.rank,))
    for row in store.audit.entries(TRIAL_ACTION):
        trial = json.loads(row.detail)
        if trial["champion"] == champion:
            found.setdefault(trial["key"], set()).add(int(trial["rank"]))
    return found


def rank(judged: Trials, key: str | None) -> int:
    """The rank of the candidate ``key`` (None: one not judged yet) among ``judged``: the first rank its
    looks were judged at that it holds (of two candidates judged at one rank at once, the first by key
    holds it); else (its first look, looks recorded before spending, a rank lost that way) the next
    after every candidate and rank recorded: 1 + the most of their number and their largest rank."""
    holders: dict[int, str] = {}
    for candidate, ranks in sorted(judged.items()):
        for held in ranks:
            holders.setdefault(held, candidate)
    own = sorted(judged.get(key, ())) if key is not None else []
    kept = next((held for held in own if holders[held] == key), None)
    if kept is not None:
        return kept
    return 1 + max(sum(1 for other in judged if other != key), max(holders, default=0))


def trial_entry(
    champion: str, spending: Spending, *, actor: str, at: float, verdict: str, candidate: str | None = None,
    artifact_hash: str | None = None,
) -> AuditEntry:  # fmt: skip
    """The audit row of a tuning run judged against ``champion`` at ``spending``'s level: the candidate
    it registered (its artifact hash is the candidate's key) or, registering nothing, a key of its own."""
    key = artifact_hash if artifact_hash is not None else f"run:{uuid.uuid4().hex}"
    detail = {"champion": champion, "key": key, "candidate": candidate, **spending.as_dict(), "verdict": verdict}
    return AuditEntry(at, actor, TRIAL_ACTION, champion, json.dumps(detail))
