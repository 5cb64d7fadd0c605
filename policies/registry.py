"""The policy registry: which policies exist, which one serves, and every state change with who,
when and why. Exactly one champion; the history is append-only.

States: ``candidate`` (registered, not serving), ``shadow`` (scores every live decision alongside
the champion, logged, never served), ``champion`` (serves), ``retired``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any

from bandit.errors import BreinError, excerpt
from store.errors import Conflict
from store.ports import RegistryStorage
from store.records import KINDS, STATES, AuditEntry, EvaluationRecord, Kind, ModelSnapshot, PolicyEntry, PolicyEvent, State

log = logging.getLogger("brein.registry")

POLICY_ID_LENGTH = 64
POLICY_ID = re.compile(rf"[A-Za-z0-9_.\-]{{1,{POLICY_ID_LENGTH}}}")
"""A policy's id: it names the policy in metrics' labels, logs, exports and both stores' text (no
NUL, no spaces); '.' for ids tuning makes from set-ups (tuned-20261207-lr-0.1)."""


def checked_policy_id(policy_id: str) -> str:
    """``policy_id``, when it is one (``POLICY_ID``); else ValueError saying what is wrong."""
    if not POLICY_ID.fullmatch(policy_id):
        raise ValueError(f"policy_id: expected 1-64 letters, digits, '_', '-' or '.', got {excerpt(policy_id)}")
    return policy_id


KEYWORDS = ("champion", "uniform", "do_nothing")
"""Names a policy spec reads as something other than a registry id: the current champion, the built-ins."""
FILE_SUFFIXES = (".json", ".vw")
"""Suffixes of the rule and model files a policy spec may name."""


def checked_new_policy_id(policy_id: str) -> str:
    """``policy_id`` for a new registration: a ``POLICY_ID`` that a policy spec cannot read as a keyword
    or a file's name, so that what is evaluated under it is what is registered under it. Existing
    entries (and the config's bootstrapped lineage, 'champion' by default) keep their ids."""
    checked_policy_id(policy_id)
    if policy_id in KEYWORDS:
        raise ValueError(f"policy_id: {policy_id!r} is a keyword ('champion' names the current champion, 'uniform' and "
                         f"'do_nothing' the built-in policies): choose another id")  # fmt: skip
    suffix = PurePath(policy_id).suffix
    if suffix.lower() in FILE_SUFFIXES:
        raise ValueError(f"policy_id: {policy_id!r} looks like a file name: choose an id without {suffix!r}")
    return policy_id


def unused_policy_id(registry: Registry, policy_id: str) -> str:
    """``policy_id`` for a new registration (``checked_new_policy_id``) that no entry holds yet: checked
    before the work a registration does (training, tuning), so that none is wasted on an id that is
    taken. Whether it is still free when the registration is written, the write itself decides
    (``Registry.register``); what a killed registration left under it, that write removes."""
    checked_new_policy_id(policy_id)
    if registry.has(policy_id):
        raise InvalidTransition(f"a policy {policy_id!r} is already registered")
    return policy_id


_AS_NOUN = {"candidate": "a candidate", "shadow": "a shadow", "champion": "the champion", "retired": "retired"}
MAX_SHADOWS = 3
"""The most shadows: each scores every decision beside the champion. On a request of 1,000 features
a VW shadow added 2.5 ms to a Decide, a rules shadow up to 5.8 ms (bandit.rules.MAX_CONDITIONS_WEIGHT);
three of those beside a rules champion of the same and the config's heaviest rules, 31 ms."""
CHANGES = 5
"""Times a change is tried when another process changes the registry between its read and its write."""


class UnknownPolicy(BreinError):
    def __init__(self, policy_id: str) -> None:
        super().__init__(f"no policy {policy_id!r} in the registry")


class InvalidTransition(BreinError):
    """A state change the registry does not allow (retiring the champion, ...)."""


class ChampionChanged(InvalidTransition):
    """A champion change decided against one champion found another: it changes nothing."""

    def __init__(self, policy_id: str, expected: str | None, current: str | None) -> None:
        self.expected, self.current = expected, current
        super().__init__(f"the champion changed from {expected or 'none'} to {current or 'none'} since {policy_id}'s "
                         f"change was decided: nothing was changed")  # fmt: skip


# Registry has a method named ``list``; inside the class these aliases name the builtin type.
Entries = list[PolicyEntry]
Events = list[PolicyEvent]
Evaluations = list[EvaluationRecord]
Strings = list[str]


def artifact_hash(kind: str, artifact: bytes | None) -> str:
    return hashlib.sha256(kind.encode() + b"\0" + (artifact or b"")).hexdigest()


def _mirrored(events: Sequence[PolicyEvent]) -> list[AuditEntry]:
    """Every state change is in the audit trail too."""
    return [
        AuditEntry(e.at, e.actor, "policy", e.policy_id, f"{e.from_state or 'new'} -> {e.to_state}: {e.reason}") for e in events
    ]


class Registry:
    """The registry's rules over its storage: each change reads the registry, checks the change is
    allowed and writes it as a compare-and-set; one that finds the registry changed meanwhile (by
    another process) is checked again on what it finds."""

    def __init__(self, store: RegistryStorage) -> None:
        self.store = store

    # -- reads --------------------------------------------------------------------------------

    def get(self, policy_id: str) -> PolicyEntry:
        entry = self.store.policy(policy_id)
        if entry is None:
            raise UnknownPolicy(policy_id)
        return entry

    def has(self, policy_id: str) -> bool:
        return self.store.policy(policy_id) is not None

    def list(self) -> Entries:
        return self.store.policies()

    def champion(self) -> PolicyEntry | None:
        return self.store.champion()

    def in_state(self, state: State) -> Entries:
        return self.store.policies(state)

    def history(self, policy_id: str | None = None) -> Events:
        return self.store.events(policy_id)

    def evaluations(self, policy_id: str) -> Evaluations:
        return self.store.evaluations(policy_id)

    def looks(self, entry: PolicyEntry) -> Evaluations:
        """The recorded evaluations of ``entry``'s policy under any id: of every entry with its artifact hash.
        The same file registered again under another name is the same policy, and a look at it under
        one name is a look under the other (each name's first look at 95% was a fresh chance on the same
        log). An evaluation nobody recorded (a notebook's, of an exported log) cannot be counted."""
        return [e for other in self.list() if other.artifact_hash == entry.artifact_hash for e in self.evaluations(other.id)]

    def previous_champion(self) -> str | None:
        """The champion before the current one, from the history."""
        champion = self.champion()
        for event in reversed(self.history()):
            if event.to_state == "champion" and (champion is None or event.policy_id != champion.id):
                return event.policy_id
        return None

    # -- writes -------------------------------------------------------------------------------

    def register(
        self,
        policy_id: str,
        kind: Kind,
        *,
        artifact: bytes | None = None,
        args: Strings | None = None,
        features: dict[str, Any] | None = None,
        parent: str = "",
        note: str = "",
        actor: str,
        state: State = "candidate",
        now: float | None = None,
        trained_until: float | None = None,
        selected_among: int = 1,
        evidence: Sequence[EvaluationRecord] = (),
        snapshot: ModelSnapshot | None = None,
        audit: Sequence[AuditEntry] = (),
    ) -> PolicyEntry:
        """``trained_until``: a trained model's end of the range it learned from (``PolicyEntry.trained_until``);
        ``selected_among``: the set-ups it was picked among (``PolicyEntry.selected_among``); ``evidence``:
        its evaluations; ``snapshot``: a trained model's first snapshot (how far it has learned); ``audit``:
        entries of the audit trail that stand or fall with it (a tuning run's trial). The
        entry, its evidence and its snapshot are one write, in which the entry's row claims the id: of
        two registrations of one id, however close, one is written whole and the other (InvalidTransition)
        not at all, so no entry ever gets another registration's model or evidence. What that write finds
        under the id of no entry (``Leftovers``: a registration killed before its entry, by a Brein that
        wrote them apart) it removes, with an audit entry: every registration, a bootstrapped champion's
        too, takes the id clean, never inheriting a model or evidence that was not its own."""
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
        checked_policy_id(policy_id)
        if snapshot is not None and snapshot.policy_id != policy_id:
            raise ValueError(f"snapshot: expected one of policy {policy_id!r}, got one of {snapshot.policy_id!r}")
        at = time.time() if now is None else now
        entry = PolicyEntry(policy_id, kind, artifact, artifact_hash(kind, artifact), list(args or []), dict(features or {}),
                            parent, at, state, note, trained_until, selected_among)  # fmt: skip
        event = PolicyEvent(policy_id, at, actor, "", state, note or "registered")
        self._refuse_registering(entry)
        try:
            removed = self.store.register(entry, event, [*_mirrored([event]), *audit], evidence, snapshot).result()
        except Conflict:
            self._refuse_registering(entry, meanwhile=True)  # another process registered it, or a champion, first
            raise
        if removed:
            log.warning("policy %s: %s", policy_id, removed.detail())
        return entry

    def _refuse_registering(self, entry: PolicyEntry, *, meanwhile: bool = False) -> None:
        """InvalidTransition when ``entry`` cannot be registered; ``meanwhile``: its write was refused, and
        whatever took the id (or became the champion) did so while it was being written."""
        if self.has(entry.id):
            if meanwhile:
                first = next(iter(self.history(entry.id)), None)
                by = f"{first.actor} registered it" if first is not None else "it was registered"
                raise InvalidTransition(f"a policy {entry.id!r} is already registered: {by} while this registration was "
                                        f"being written, and nothing of this one was written")  # fmt: skip
            raise InvalidTransition(f"a policy {entry.id!r} is already registered")
        if entry.state == "champion" and self.champion() is not None:
            raise InvalidTransition("there is a champion already: register as a candidate and promote it")
        if entry.state == "shadow":
            self._refuse_shadowing(entry.id)

    def _refuse_shadowing(self, policy_id: str) -> None:
        shadows = [e.id for e in self.in_state("shadow")]
        if len(shadows) >= MAX_SHADOWS:
            raise InvalidTransition(f"{policy_id} cannot shadow: {', '.join(shadows)} shadow already, the most "
                                    f"({MAX_SHADOWS}) that score every decision; retire one first")  # fmt: skip

    def set_state(self, policy_id: str, to_state: State, *, actor: str, reason: str, now: float | None = None) -> None:
        """Shadow, retire or re-candidate a policy; the champion changes only by promote/rollback."""
        if to_state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}, got {to_state!r}")
        at = time.time() if now is None else now

        def change() -> Events:
            current = self.get(policy_id).state
            if current == "champion":
                raise InvalidTransition(f"{policy_id} is the champion: promote another policy or roll back first")
            if to_state == "champion":
                raise InvalidTransition("use promote to make a policy the champion")
            if to_state == current:
                raise InvalidTransition(f"{policy_id} is {_AS_NOUN[current]} already")
            if to_state == "shadow":
                self._refuse_shadowing(policy_id)
            return [PolicyEvent(policy_id, at, actor, current, to_state, reason)]

        self._change(change)

    def make_champion(
        self, policy_id: str, *, replacing: str | None, actor: str, reason: str, now: float | None = None
    ) -> str | None:
        """The policy serves from now on and ``replacing``, the champion the caller judged it against
        (None: there was none), is retired. The write is a compare-and-set on that champion: when another
        process changed the champion first, ChampionChanged, and nothing changes. Returns ``replacing``."""
        at = time.time() if now is None else now

        def change() -> Events:
            current = self.get(policy_id).state
            if current == "champion":
                raise InvalidTransition(f"{policy_id} is the champion already")
            champion = self.champion()
            if (champion.id if champion else None) != replacing:
                raise ChampionChanged(policy_id, replacing, champion.id if champion else None)
            events = [] if replacing is None else [
                PolicyEvent(replacing, at, actor, "champion", "retired", f"replaced by {policy_id}: {reason}")
            ]  # fmt: skip
            return [*events, PolicyEvent(policy_id, at, actor, current, "champion", reason)]

        self._change(change)
        return replacing

    def _change(self, change: Callable[[], Events]) -> Events:
        """Write the events ``change`` makes from the registry as it reads it; made again from a
        fresh read when the registry changed between the read and the write."""
        attempt = 1
        while True:
            events = change()
            try:
                self.store.transition(events, _mirrored(events)).result()
                return events
            except Conflict:
                if attempt == CHANGES:
                    raise
                attempt += 1

    def record_evaluation(self, record: EvaluationRecord) -> None:
        self.store.record_evaluation(record).result()
