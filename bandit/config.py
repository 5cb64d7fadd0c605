"""The configuration file (TOML) as typed, validated settings.

Pydantic does the type checking and names the offending key; cross-references (a combination
naming an unknown offer, a quiet period after an unknown outcome) are checked here, so a bad
file fails at start-up with the key and the reason.
"""

from __future__ import annotations

import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from bandit.config_types import MAX_DAYS, MAX_HOURS, MAX_SECONDS, ConfigSection, Days, Seconds
from bandit.errors import BreinError, ConfigError, excerpt, validation_problems
from bandit.security_config import LimitsConfig, PrivacyConfig, SecurityConfig, TLSConfig
from store.records import HISTORY_CONTACTS

MAX_MONEY = 1e12
"""The largest |amount| of money a config may name (a value, a cost, a max_value), in any unit: room
for any real outcome, and a log whose rewards stay far inside what the estimators compute with
(policies.estimators.MAX_REWARD), where a max_value of 1e300 let a reported 1e300 overflow them."""
Money = Annotated[float, Field(ge=-MAX_MONEY, le=MAX_MONEY)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class OfferConfig(ConfigSection):
    cost: Money = 0.0
    description: str = ""
    eligible_if: str | None = None


class ChannelConfig(ConfigSection):
    cost: Money = 0.0
    deferred: bool = False
    eligible_if: str | None = None


class CombinationConfig(ConfigSection):
    offers: list[Name] = Field(min_length=1)
    channels: list[Name] = Field(min_length=1)
    slots: list[Name] = Field(min_length=1)


MAX_VALUE_FACTOR = 100.0
MAX_VALUE_FLOOR = 1000.0


class OutcomeTypeConfig(ConfigSection):
    value: Money = 0.0
    # The largest |value| a report of this type may carry; absent: 100 x |value|, at least 1000.
    max_value: float | None = Field(default=None, gt=0, le=MAX_MONEY)
    window_days: Days = 30.0
    attribution: Literal["window", "last_touch", "direct"] = "window"
    # Offers an outcome may be credited to; empty means any offer, do-nothing included.
    offers: list[str] = []
    allow_negative: bool = False

    @property
    def value_bound(self) -> float:
        """``max_value``, or by default 100 times the type's default value: room for real spread
        (a bigger contract, a costlier complaint), none for a typo or a poisoned 1e308. A type whose
        default value is small or 0 (its callers always send the value) gets at least 1000."""
        if self.max_value is not None:
            return self.max_value
        return max(MAX_VALUE_FACTOR * abs(self.value), MAX_VALUE_FLOOR)

    @model_validator(mode="after")
    def _value_within_bound(self) -> OutcomeTypeConfig:
        if abs(self.value) > self.value_bound:
            raise ValueError(f"value {self.value:g} is beyond max_value {self.value_bound:g}")
        if self.value < 0 and not self.allow_negative:  # else every report without a value would be refused
            raise ValueError(f"value {self.value:g} is negative: set allow_negative = true")
        return self


class CapConfig(ConfigSection):
    max: int = Field(ge=0, lt=HISTORY_CONTACTS)  # a customer's log holds its latest HISTORY_CONTACTS contacts
    days: Days
    per_channel: bool = False


class QuietPeriodConfig(ConfigSection):
    after: Name
    days: Days


class SuppressionConfig(ConfigSection):
    after: Name
    offers: list[Name] = Field(min_length=1)
    days: Days


class ContactPolicyConfig(ConfigSection):
    caps: list[CapConfig] = []
    quiet_periods: list[QuietPeriodConfig] = []
    suppressions: list[SuppressionConfig] = []


class NumericFeatureConfig(ConfigSection):
    # quantile: categories at quantile edges learned from the log when a model lineage is born
    # (bandit/encoding.py); auto: categories on a signed log scale at several resolutions
    # (bandit/features.py), no data needed.
    encoding: Literal["quantile", "auto", "raw", "log1p", "bins"] = "quantile"
    edges: list[float] = []

    @model_validator(mode="after")
    def _edges_for_bins(self) -> NumericFeatureConfig:
        if self.encoding == "bins":
            if not self.edges:  # finite, as every float of the config
                raise ValueError("encoding 'bins' needs a non-empty list of edges")
            if sorted(self.edges) != self.edges or len(set(self.edges)) != len(self.edges):
                raise ValueError("edges must be strictly increasing")
        return self


class FeaturesConfig(ConfigSection):
    non_personal: list[str] = []
    numeric: dict[str, NumericFeatureConfig] = {}
    # The encoding of a numeric context field not listed in ``numeric``: ``quantile`` is learned
    # from the log per model lineage, ``auto`` until a lineage has data.
    numeric_default: Literal["quantile", "auto", "raw", "log1p"] = "quantile"
    # Bins per ``quantile`` field, one category at each resolution; fixed per model lineage (stored
    # with its encoding). Quartiles: every weight of a field learns from a quarter of the customers.
    # Quartiles and 16ths (and 4 and 8) gave each field's interactions more, sparser weights, whose
    # noise the greedy choice picks up: quartiles alone won in 21 of 28 choosing worlds that differed
    # (docs/simulation.md, "Choosing the defaults, round 7"); coarser ([3], [2]) lost too (round 9).
    quantile_resolutions: list[Annotated[int, Field(ge=2, le=256)]] = Field(default=[4], min_length=1)

    @field_validator("quantile_resolutions")
    @classmethod
    def _increasing(cls, resolutions: list[int]) -> list[int]:
        if sorted(set(resolutions)) != resolutions:
            raise ValueError("quantile_resolutions must be strictly increasing")
        return resolutions


class ConsentConfig(ConfigSection):
    personalisation_default: Literal["granted", "denied"] = "denied"
    contact_default: Literal["granted", "denied"] = "granted"


class LearnerConfig(ConfigSection):
    policy_id: Name = "champion"
    exploration: Literal["squarecb", "epsilon"] = "squarecb"
    epsilon: float = Field(default=0.05, ge=0.0, le=1.0)
    # Namespace letters to interact: u(ser context), h(istory), n(on-personal context) x o(ffer), c(hannel), s(lot).
    # Pairs only: who gets which offer (uo, ho, no), which channel (uc, hc, nc) and which send time
    # (us, ns). A channel's and a slot's weights are learned from every offer sent on them, not per
    # offer (the triples uoc, hoc, noc, nos, which split the same evidence 3-8 ways): more evidence
    # for each weight. Chosen on the choosing worlds over three seeds each (docs/simulation.md,
    # "Choosing the defaults, round 6"); cubic terms stay a set-up `brein policy tune` tries.
    interactions: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = [
        "uo", "uc", "us", "ho", "hc", "no", "nc", "ns"
    ]  # fmt: skip
    # --clip_p 1: every importance weight is 1, the plain regression on the reward of the action taken
    # that SquareCB assumes; weighted 1/p, a rare large outcome on a rarely explored action made the
    # greedy chase costly offers (docs/simulation.md, "Choosing the defaults, round 2"). --elim:
    # SquareCB explores only the actions still plausibly best.
    extra_args: list[str] = ["--clip_p", "1.0", "--elim"]
    # A VW model file to start from; absent or missing means a cold start (uniform exploration).
    model: str | None = None
    # VW minimises cost: cost = -reward / reward_scale. Absent: the config's largest |outcome value| / 24
    # (10 for the telecom example's renewal of 240), so that what Brein learns does not depend on the
    # unit its money is counted in: SquareCB's exploration and `--elim` read cost gaps in absolute units
    # (reward/online.py, `reward_scale`).
    reward_scale: float | None = Field(default=None, gt=0)
    # A contact is learned as earning this share of the config's largest |outcome value| less than it
    # did, do-nothing as it did: the greedy choice contacts only where a contact's predicted advantage
    # over do-nothing clears that hurdle. The argmax over many noisy estimates against one do-nothing
    # is biased towards some contact. Off by default: 0.01 cut contacts by a quarter on the choosing
    # worlds but lost the median share (docs/simulation.md, "Choosing the defaults, round 3"). Learning
    # only: logged rewards, evaluation and the export's `_reward` are untouched; the export's
    # `_label_cost` is the cost learned (margin included), so `vw --dsjson` still reproduces the model.
    restraint: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Every eligible action keeps at least this probability (at most 1/K: uniform), mixed in after the
    # learner's pmf, so the log keeps the support off-policy evaluation and tuning need.
    min_probability: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Learn online inside the server from joined examples, and swap in a new snapshot after this many.
    online: bool = True
    snapshot_every: int = Field(default=1000, ge=1)


class JoinerConfig(ConfigSection):
    # A decision's window stays open this long after its longest attribution window, for late reports.
    allowed_lateness_days: float = Field(default=1.0, ge=0, le=MAX_DAYS)
    # How an outcome's value is shared among the decisions in its window (types with attribution
    # "window"): the latest decision gets it all, equal parts, or each gets it in full. Chosen on the
    # choosing worlds (docs/simulation.md, "Choosing the defaults").
    credit: Literal["full", "equal", "last_touch"] = "last_touch"
    # The most decisions one outcome is credited to (full or equal credit): the latest in its window.
    # A customer decided for without pause (a probe, a loop in a caller) would otherwise make every
    # outcome's crediting, and what the joiner stores of it, as long as the window's decisions: 200
    # renewals after 20,000 such decisions held a join run for 35 s (docs/benchmarks.md, "One
    # customer's flood"). Shared among 50, an outcome gives each under 2% of its value anyway.
    max_credited_decisions: int = Field(default=50, ge=1, le=10_000)
    # Days after a decision within which its outcomes are credited to it, whatever an outcome type's
    # window (a type's shorter window stays): what a decision causes comes within days or weeks,
    # while the rest of a long window mostly collects outcomes that would have come anyway (alike
    # for every action: noise in their comparison) and holds back every lesson, complaints
    # included, until the whole window has passed. Absent: each type's own window.
    horizon_days: Days | None = None
    # Learn each decision at the close of every shorter window too (reward/provisional.py): what the
    # types whose windows have closed credited it, less its cost, plus what the types still open
    # brought the same action's decisions joined whole; then once more, whole, when it is joined.
    provisional: bool = True
    # Seconds between background join runs inside the server.
    interval_seconds: Seconds = 2.0


class ServerConfig(ConfigSection):
    address: str = "127.0.0.1:50051"
    metrics_address: str = "127.0.0.1:9464"
    # The store's URL: sqlite:///relative/path.db, sqlite:////absolute/path.db (or a plain path).
    store: str = "sqlite:///var/brein.db"
    seed: int = 0
    # How long a graceful shutdown waits for in-flight requests, in seconds.
    shutdown_grace: float = Field(default=10.0, ge=0, le=MAX_SECONDS)
    # Plaintext gRPC on an address other than loopback only when this is explicitly true; else use [tls].
    allow_plaintext: bool = False
    # Seconds between looks at the store for a new champion, snapshot or shadow to serve.
    follow_seconds: Seconds = 1.0
    # Least seconds between two changes of the serving model for a newer snapshot of the same champion
    # (a new champion is served at the next look). Each change loads a VW model: 3.5-6 ms of a core in
    # one call that holds the GIL, which the Decides arriving meanwhile wait out; a learner catching up
    # on a backlog stores a snapshot every `snapshot_every` examples.
    snapshot_seconds: float = Field(default=5.0, ge=0, le=MAX_SECONDS)

    @field_validator("address", "metrics_address")
    @classmethod
    def _host_and_port(cls, value: str, info: ValidationInfo) -> str:
        """host:port with a port a socket can have (0: any free one); gRPC also serves a unix socket.
        A port past 65535 was taken modulo 65536 (99999 served on 34463)."""
        if info.field_name == "address" and value.startswith(("unix:", "unix-abstract:")):
            return value
        _, colon, port = value.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65_535:
            raise ValueError(f"expected host:port with a port from 0 to 65535, got {excerpt(value)}")
        return value


class GateConfig(ConfigSection):
    """What a candidate must show, off-policy against the champion, before `brein policy promote`."""

    estimator: Literal["ips", "clipped_ips", "snips", "dm", "dr", "sndr"] = "snips"  # clipped_ips: refused below
    # The lower bound of the paired difference (candidate - champion, money per decision) must exceed this.
    min_lift: Money = 0.0
    min_decisions: int = Field(default=1000, ge=1)
    # An estimate is unreliable, and refused whatever the estimator, when the effective sample size of
    # the candidate's unclipped importance weights is below min_ess or one logged decision holds more
    # than max_weight_share of that weight (the same holds for the champion's side of the lift).
    min_ess: float = Field(default=100.0, ge=0)
    max_weight_share: float = Field(default=0.2, gt=0, le=1)
    max_age_hours: float = Field(default=24.0, gt=0, le=MAX_HOURS)

    @field_validator("estimator")
    @classmethod
    def _unbiased_or_pessimistic(cls, estimator: str) -> str:
        """Clipped IPS only lowers a policy's value when rewards are non-negative. Brein's are money less
        costs: clipping the weight of a costly action the log rarely took shrinks the candidate's loss, and
        a lift's two sides are clipped unequally, so its bias has no sign (a candidate worse by 4.0 per
        decision showed +4.8, lower bound +3.3). No shift of the rewards gives a difference a sign either:
        the gate takes an estimator without that bias. Evaluations still report clipped IPS."""
        if estimator == "clipped_ips":
            raise ValueError("clipped_ips cannot judge a promotion: with rewards that can be negative its lift can be biased "
                             "upwards (clipping shrinks a candidate's rare losses); choose ips, snips, dm, dr or sndr "
                             "(evaluations still report clipped_ips)")  # fmt: skip
        return estimator


class TuningConfig(ConfigSection):
    """Opt-in: the worker tunes learning set-ups from the log on a schedule in event time (`brein policy
    tune`'s work) and promotes the best through the gate, never around it."""

    enabled: bool = False
    # Days of event time between tuning runs.
    every_days: Days = 7.0
    # The newest joined examples of this many days are held out: set-ups learn before them, are evaluated on them.
    holdout_days: Days = 14.0
    # A TOML file of [[setup]] tables (see `brein policy tune --setups`); absent: the default grid.
    setups: str | None = None


class BreinConfig(ConfigSection):
    timezone: str = "UTC"
    currency: str = "EUR"
    server: ServerConfig = ServerConfig()
    touchpoints: list[Name] = Field(min_length=1)
    consent: ConsentConfig = ConsentConfig()
    offers: dict[Name, OfferConfig] = Field(min_length=1)
    channels: dict[Name, ChannelConfig] = Field(min_length=1)
    slots: dict[Name, str] = {}
    combinations: list[CombinationConfig] = Field(min_length=1)
    outcomes: dict[Name, OutcomeTypeConfig] = {}
    contact_policy: ContactPolicyConfig = ContactPolicyConfig()
    features: FeaturesConfig = FeaturesConfig()
    learner: LearnerConfig = LearnerConfig()
    joiner: JoinerConfig = JoinerConfig()
    gate: GateConfig = GateConfig()
    tuning: TuningConfig = TuningConfig()
    tls: TLSConfig | None = None
    security: SecurityConfig | None = None
    privacy: PrivacyConfig = PrivacyConfig()
    limits: LimitsConfig = LimitsConfig()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name no file can have, a folder of zones
            raise ValueError(f"unknown time zone {excerpt(value)}") from None
        return value

    @field_validator("slots")
    @classmethod
    def _slot_times(cls, value: dict[str, str]) -> dict[str, str]:
        for name, at in value.items():
            if name == "now":
                raise ValueError("'now' is built in (deliver at decision time); do not configure it")
            try:
                time.fromisoformat(at)
            except ValueError:
                raise ValueError(f"slot {name!r}: expected a time of day like '09:00', got {at!r}") from None
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> BreinConfig:
        slots = set(self.slots) | {"now"}
        for i, combo in enumerate(self.combinations):
            for kind, names, known in (
                ("offers", combo.offers, self.offers),
                ("channels", combo.channels, self.channels),
                ("slots", combo.slots, slots),
            ):
                unknown = sorted(set(names) - set(known))
                if unknown:
                    raise ValueError(f"combinations[{i}].{kind}: unknown {', '.join(unknown)}")
        outcome_refs = [(f"contact_policy.quiet_periods[{i}]", q.after) for i, q in enumerate(self.contact_policy.quiet_periods)]
        outcome_refs += [(f"contact_policy.suppressions[{i}]", s.after) for i, s in enumerate(self.contact_policy.suppressions)]
        for where, after in outcome_refs:
            if after not in self.outcomes:
                raise ValueError(f"{where}.after: unknown outcome type {after!r}")
        offer_refs = [(f"contact_policy.suppressions[{i}].offers", s.offers) for i, s in enumerate(self.contact_policy.suppressions)]
        offer_refs += [(f"outcomes.{name}.offers", o.offers) for name, o in self.outcomes.items()]
        for where, offers in offer_refs:
            unknown = sorted(set(offers) - set(self.offers) - {"do_nothing"})
            if unknown:
                raise ValueError(f"{where}: unknown offer {', '.join(unknown)}")
        retention = self.privacy.retention_days
        if retention is not None and (problem := self.retention_problem(retention)):
            raise ValueError(f"privacy.retention_days: {problem}")
        if "do_nothing" in self.offers:
            raise ValueError("offers.do_nothing: do-nothing is built in and always eligible; do not configure it")
        return self

    def retention_problem(self, days: float) -> str | None:
        """Why a retention of ``days`` loses data, or None: it must outlast the longest attribution
        window plus lateness, else it deletes decisions before they are joined."""
        longest = max(self.credit_windows_days().values(), default=0.0) + self.joiner.allowed_lateness_days
        if days > longest:
            return None
        return (f"{days:g} deletes decisions before they are joined; expected more than the longest attribution window "
                f"plus lateness ({longest:g} days)")  # fmt: skip

    def credit_windows_days(self) -> dict[str, float]:
        """Each outcome type's window as the joiner credits it: its own, cut at ``joiner.horizon_days``."""
        horizon = self.joiner.horizon_days
        return {name: o.window_days if horizon is None else min(o.window_days, horizon) for name, o in self.outcomes.items()}

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_config(data: dict[str, object], source: str = "config") -> BreinConfig:
    """Validate a parsed TOML document; raise ConfigError naming the key and the reason."""
    try:
        return BreinConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {validation_problems(error)}") from None


def read_toml(path: Path, error: type[BreinError] = ConfigError) -> dict[str, Any]:
    """A TOML file's document; ``error`` naming the file when it is missing or not valid TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from None


def load_config(path: str | Path) -> BreinConfig:
    return parse_config(read_toml(Path(path)), source=str(path))
