"""Eligibility rules per offer and per channel, written in CEL and compiled once at start-up.

A rule sees these variables: ``numeric`` and ``categorical`` (the request context), ``history``
(the history features, see bandit.history), ``touchpoint`` (the calling channel), ``hour`` and
``weekday`` (local time of the request, Monday = 0). A rule that errors on a request (say, a
missing key without ``has()``) makes its subject ineligible for that request, with the error as
the reason: a broken rule must not send offers it was meant to guard.

A rule is a pure function of what it reads, so its verdicts are remembered: a rule that reads only
named keys (``numeric.months_to_contract_end``, ``has(categorical.plan)``) and scalar variables
(``touchpoint``) is evaluated once per distinct value of those, and its verdict reused after that.
What a rule reads is found conservatively in its source; a rule that reads a whole map (``size(numeric)``,
``numeric["x"]``) is evaluated on every request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cel

from bandit.config import BreinConfig
from bandit.errors import ConfigError, excerpt

RULE_VARIABLES: dict[str, Any] = {
    "numeric": {},
    "categorical": {},
    "history": {},
    "touchpoint": "",
    "hour": 0,
    "weekday": 0,
}


MEMO_SIZE = 4096
"""Verdicts remembered per rule; the memo starts afresh when full."""

_ABSENT = object()
Reads = tuple[tuple[str, str | None], ...]
"""What a rule reads: (variable, key) for one key of a map, (variable, None) for a scalar variable."""


@dataclass(frozen=True, slots=True)
class Rule:
    subject: Literal["offer", "channel"]
    name: str
    source: str
    program: Any
    # What the rule reads when that is only named keys of maps and scalars; None when it reads more.
    reads: Reads | None = None
    memo: dict[tuple[Any, ...], str | None] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.subject}s.{self.name}.eligible_if"

    def reason(self, context: Any) -> str | None:
        """Why the rule removes its subject in this context (a cel.Context or a dict), or None."""
        try:
            result = self.program.execute(context)
        except KeyError as error:
            return f"{self.key} needs {error.args[0]!r}, absent from the request"
        except Exception as error:
            return f"{self.key} failed: {error}"
        return None if result is True else f"{self.key}: {self.source}"


def reads_of(source: str, variables: list[str]) -> Reads | None:
    """What a rule whose program references ``variables`` reads, found in its source: every mention
    of a map variable must select a named key (``numeric.x``, not ``numeric.exists(...)``,
    ``numeric["x"]`` or ``size(numeric)``). None when that cannot be shown. A mention inside a
    string literal only adds a key: more reads than needed, never fewer."""
    reads: list[tuple[str, str | None]] = []
    for name in variables:
        if name not in RULE_VARIABLES:
            continue  # a name a macro binds, or an unknown one (an error whatever the request)
        if not isinstance(RULE_VARIABLES[name], dict):
            reads.append((name, None))
            continue
        mentions = list(re.finditer(rf"(?<![\w.]){name}(?!\w)", source))
        if not mentions:
            return None
        for mention in mentions:
            selected = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(?!\w)(?!\s*\()").match(source, mention.end())
            if selected is None:
                return None
            reads.append((name, selected.group(1)))
    return tuple(dict.fromkeys(reads))


def _value_key(value: Any) -> Any:
    """A value as part of a memo key: its type too (CEL tells 1 from 1.0), and the sign of a zero."""
    if value.__class__ is float and value == 0.0:
        return float, math.copysign(1.0, value)
    return value.__class__, value


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """Subjects a request's rules removed, each with the reason."""

    offers: dict[str, str]
    channels: dict[str, str]


MAX_CONDITION_CHARACTERS = 1024
"""The longest CEL condition: far past a hand-written one. The parser's error repeats the source under
each error it finds: 7,200 characters of a bad condition made a 4.4 MB message, 36,000 one of 108 MB."""
MAX_CONDITIONS_WEIGHT = MAX_CONDITION_CHARACTERS**2
"""The most a rules policy's conditions may weigh together, and a config's ``eligible_if`` conditions:
a condition weighs its length squared, as its work can grow as that square. Each part of a condition
runs at most once (``unbounded_part``), but a part's operands may be as long as the condition that
built them: ``size([1] + [1] + ...)`` copies the list built so far on each ``+``, whatever the request
(28 ms in 4,096 characters, 1.6 ms in 1,024, 93 µs in 256). So one condition of the longest, or 1,000
of 32 characters. The heaviest this admits added at most 5.8 ms to a Decide as a shadow, on a request
of 1,000 features (1,000 conditions of 32 characters; 2.7 ms of it the copy of the request's features for
CEL that a policy reading a map by ``[key]``, ``in`` or ``size`` needs: ``read_context``); 1,000
conditions of 4,096 characters, admitted before, 42 s."""
PROBLEM_CHARACTERS = 300
"""The most of the CEL library's own error text a message quotes."""

_QUOTED_OR_COMMENT = re.compile(
    r"(?:[rR][bB]?|[bB][rR])(?P<raw>\'\'\'|\"\"\"|\'|\")[\s\S]*?(?P=raw)"  # a raw string: no escapes
    r"|(?P<quoted>\'\'\'|\"\"\"|\'|\")(?:\\[\s\S]|[^\\])*?(?P=quoted)"
    r"|//[^\n]*"
)
_COMPREHENSION = re.compile(r"\.\s*(all|exists_one|exists|map|filter)\s*\(")
UNBOUNDED_FUNCTIONS = frozenset({"matches"})
"""Functions whose work a condition's length does not bound: ``matches`` compiles its regular expression
on every call, up to the regex library's size limit (one 20-character pattern, 0.36 s a call)."""
MAP_VARIABLES = tuple(name for name, value in RULE_VARIABLES.items() if isinstance(value, dict))
_KEYED_USES = (
    r"(?<![\w.])(?P<map>{})\s*\.\s*[A-Za-z_]\w*(?!\w)(?!\s*\()",  # numeric.key, has(numeric.key)
    r"(?<![\w.])(?P<map>{})\s*\[",  # numeric["key"]
    r"(?<![\w.])in\s+(?P<map>{})(?!\w)(?!\s*[-+*/%.\[(])",  # "key" in numeric, not "key" in numeric + x
    r"(?<![\w.])size\s*\(\s*(?P<map>{})\s*\)",  # size(numeric)
)


def unbounded_part(source: str, program: cel.Program) -> str | None:
    """What in a valid condition could make its work exceed what its length allows, or None. Without
    comprehension macros (``exists``, ``all``, ``exists_one``, ``map``, ``filter``) every part of a
    condition runs at most once on each evaluation: a macro runs its body once per element, so five
    nested over 16 elements ran 1M times (1.2 s in 286 characters), and one over the 1,000 features
    a request may have, comparing whole maps in its body, over 20 s. Nor may a map variable be used
    but by a key (``_whole_map``). Both are found in the source outside its string literals and comments."""
    code = _QUOTED_OR_COMMENT.sub('""', source)
    macro = _COMPREHENSION.search(code)
    if macro is not None:
        return f"the comprehension macro {macro.group(1)}()"
    functions = UNBOUNDED_FUNCTIONS.intersection(program.functions())
    if functions:
        return f"the function {min(functions)}()"
    return _whole_map(code, [name for name in MAP_VARIABLES if name in program.variables()])


def _whole_map(code: str, names: list[str]) -> str | None:
    """A map variable among ``names`` that ``code`` uses other than by a key, as a sentence, or None.
    A key, its presence and the map's size cost the same whatever the map; the map itself is copied
    into a list, compared or handed back to Python entry by entry: with the 1,000 features a request
    may have, ``[numeric] + [1] + ...`` copied it on each ``+`` (130 ms in 1,600 characters), and a
    list of whole maps compared with another took 113 ms in 4,096 characters (1,000 such rules, 113 s
    a Decide as a shadow)."""
    for name in names:
        keyed = {m.start("map") for use in _KEYED_USES for m in re.finditer(use.format(name), code)}
        if any(m.start() not in keyed for m in re.finditer(rf"(?<![\w.]){name}(?!\w)", code)):
            return f"the whole map {name}, not by a key ({name}.key, {name}[key], key in {name} or size({name}))"
    return None


def compiled_conditions(key: str, conditions: Sequence[tuple[str, str]]) -> list[cel.Program]:
    """CEL conditions (a config's ``eligible_if``, a rules policy's ``when``), each its key and source,
    compiled (``_compiled``). ConfigError when one is longer than
    MAX_CONDITION_CHARACTERS or, naming ``key``, when they weigh more than MAX_CONDITIONS_WEIGHT together:
    found before any is compiled, since compiling runs each (1,000 conditions of 4,096 characters, 28 s)."""
    for condition_key, source in conditions:
        if len(source) > MAX_CONDITION_CHARACTERS:
            raise ConfigError(f"{condition_key}: a CEL rule of {len(source):,} characters, more than the "
                              f"{MAX_CONDITION_CHARACTERS:,} allowed")  # fmt: skip
    weight = sum(len(source) ** 2 for _, source in conditions)
    if weight > MAX_CONDITIONS_WEIGHT:
        many = len(conditions) > 1
        counted = f"{len(conditions):,} condition{'s' if many else ''} of {sum(len(s) for _, s in conditions):,} characters"
        raise ConfigError(f"{key}: {counted} weigh{'' if many else 's'} {weight:,} (each its length squared), more than "
                          f"the {MAX_CONDITIONS_WEIGHT:,} allowed")  # fmt: skip
    return [_compiled(condition_key, source) for condition_key, source in conditions]


def _compiled(key: str, source: str) -> cel.Program:
    """A condition compiled and run once on an empty context: it must parse, do no more work than its
    length bounds (``unbounded_part``), run and give true or false. ``key`` names it in errors, which
    quote the condition by an excerpt and the library's reason by its first line."""
    try:
        program = cel.compile(source)
    except ValueError as error:
        raise ConfigError(f"{key}: invalid CEL rule {excerpt(source)}: {_problem(error)}") from None
    unbounded = unbounded_part(source, program)
    if unbounded is not None:
        raise ConfigError(f"{key}: rule {excerpt(source)} uses {unbounded}, whose work its length does not bound")
    try:
        result = program.execute(cel.Context(RULE_VARIABLES))
    except KeyError:
        return program  # a key absent from the empty dry-run context: fine at start-up
    except Exception as error:
        raise ConfigError(f"{key}: rule {excerpt(source)} cannot run: {_problem(error)}") from None
    if not isinstance(result, bool):
        raise ConfigError(f"{key}: rule {excerpt(source)} must give true or false, gives {type(result).__name__}")
    return program


def _problem(error: Exception) -> str:
    """The CEL library's reason without the source it repeats: its first ``ERROR:`` line (position and
    reason), else its first line, clipped to PROBLEM_CHARACTERS."""
    text = str(error)
    start = text.find("ERROR: ")
    line = text[start:] if start >= 0 else text
    line = line.split("\n", 1)[0]
    return line if len(line) <= PROBLEM_CHARACTERS else f"{line[:PROBLEM_CHARACTERS]}..."


class EligibilityRules:
    def __init__(self, config: BreinConfig) -> None:
        subjects: list[tuple[Literal["offer", "channel"], str, str]] = [
            ("offer", n, o.eligible_if) for n, o in config.offers.items() if o.eligible_if
        ]
        subjects += [("channel", n, c.eligible_if) for n, c in config.channels.items() if c.eligible_if]
        conditions = [(f"{subject}s.{name}.eligible_if", source) for subject, name, source in subjects]
        programs = compiled_conditions("offers.*.eligible_if and channels.*.eligible_if", conditions)
        self.rules: tuple[Rule, ...] = tuple(
            Rule(subject, name, source, program, reads_of(source, program.variables()))
            for (subject, name, source), program in zip(subjects, programs, strict=True)
        )

    def evaluate(self, variables: Mapping[str, Any]) -> RuleVerdict:
        verdict = RuleVerdict({}, {})
        context = None
        for rule in self.rules:
            if rule.reads is not None and all(name in variables for name, _ in rule.reads):
                reason = _remembered(rule, variables)
            else:
                if context is None:
                    context = cel.Context(dict(variables))
                reason = rule.reason(context)
            if reason is not None:
                (verdict.offers if rule.subject == "offer" else verdict.channels)[rule.name] = reason
        return verdict


def _remembered(rule: Rule, variables: Mapping[str, Any]) -> str | None:
    """The rule's verdict on what it reads, evaluated on just that the first time it is seen."""
    assert rule.reads is not None  # and every variable it reads is there
    values = read_values(rule.reads, variables)
    try:
        memo_key = tuple(_value_key(v) for v in values)
        return rule.memo[memo_key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: evaluate, do not remember
        memo_key = None
    reason = rule.reason(read_context(rule.reads, values))
    if memo_key is not None:
        if len(rule.memo) >= MEMO_SIZE:
            rule.memo.clear()
        rule.memo[memo_key] = reason
    return reason


def read_values(reads: Reads, variables: Mapping[str, Any]) -> list[Any]:
    """The values ``reads`` names in ``variables`` (which holds each variable it names), in its order;
    _ABSENT for a key its map lacks."""
    return [variables[name] if key is None else variables[name].get(key, _ABSENT) for name, key in reads]


def read_context(reads: Reads, values: Sequence[Any]) -> dict[str, Any]:
    """The context for a program that reads only ``reads``, from their ``values`` (``read_values``):
    its maps hold just the keys it reads. Handing CEL a request's whole maps instead converts every
    entry: 2.7 ms a program run on a request of 1,000 features, whatever the program reads."""
    context: dict[str, Any] = {}
    for (name, key), value in zip(reads, values, strict=True):
        if key is None:
            context[name] = value
        elif value is not _ABSENT:
            context.setdefault(name, {})[key] = value
    for name, key in reads:
        if key is not None:
            context.setdefault(name, {})
    return context
