"""Confidence intervals for off-policy estimates, in plain numpy: bootstrap and Cressie-Read.

Two kinds of interval, both at level 1 - alpha:

* The bootstrap interval resamples logged decisions with replacement (multinomial counts) and
  takes the alpha/2 and 1 - alpha/2 quantiles of the re-computed statistic. Every statistic an
  estimator needs is a ratio of sums over decisions, so a resample is a count vector ``c`` and
  its sums are ``c @ columns``: one matrix product per chunk of resamples, never a Python loop
  over single decisions. The counts depend only on (number of decisions, number of resamples, seed), so
  two estimators, or two policies of a paired comparison, resampled with the same seed see the
  very same resamples.

* The analytic interval is Cressie-Read's empirical likelihood with divergence parameter -2
  (Karampatziakis, Langford and Mineiro, "Empirical Likelihood for Contextual Bandits", 2020),
  the interval vw-estimators ships. We chose it over empirical Bernstein because Bernstein needs
  a known bound on every per-decision term, i.e. on the largest importance weight times the
  reward range; with small logged propensities that bound is huge, and Bernstein's range term
  (of order bound / n) makes the interval uselessly wide. Cressie-Read needs only the reward
  range, uses the constraint that importance weights average to one, stays inside the reward
  range, and is calibrated by an F(1, n) quantile, so it is accurate at moderate n.
  For a plain mean of per-decision terms (DM, DR, clipped IPS, a difference between two
  policies), where there is no weight constraint, the same divergence ball gives a closed form:
  mean +- sqrt(q * s^2 / n), q the F(1, n) quantile and s^2 the variance with divisor n.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Multinomial counts are built this many at a time (8 bytes each): bounds the bootstrap's memory.
_COUNTS_PER_CHUNK = 1 << 23
# Rows per block when drawing counts: a block's int64 counters (512 KiB) fit in a core's cache.
_BLOCK = 1 << 16


def bootstrap_sums(columns: FloatArray, *, n_bootstrap: int, seed: int) -> FloatArray:
    """Column sums of ``columns`` (n, m) over ``n_bootstrap`` resamples of its rows: (n_bootstrap, m).

    Resample b draws n row indices uniformly with replacement; its sums are counts_b @ columns.
    The draws are generated block by block of rows (how many fall in each block is multinomial,
    then uniform within the block), the same distribution as n uniform draws over all rows, but
    each block's counters stay in cache: about twice as fast for a million rows. Resamples come
    in order from one generator, so the result does not depend on chunking.
    """
    n, m = columns.shape
    rng = np.random.default_rng(seed)
    firsts = np.arange(0, n, _BLOCK)
    widths = np.minimum(_BLOCK, n - firsts)
    shares = widths / n
    sums = np.empty((n_bootstrap, m))
    chunk = max(1, min(n_bootstrap, _COUNTS_PER_CHUNK // max(n, 1)))
    counts = np.empty((chunk, n))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        for row in range(size):
            draws = rng.multinomial(n, shares)
            for first, width, k in zip(firsts.tolist(), widths.tolist(), draws.tolist(), strict=True):
                counts[row, first : first + width] = np.bincount(rng.integers(0, width, size=k), minlength=width)
        sums[start : start + size] = counts[:size] @ columns
    return sums


def percentile_interval(samples: FloatArray, alpha: float) -> tuple[float, float]:
    """The alpha/2 and 1 - alpha/2 quantiles of bootstrap samples; undefined (NaN) resamples are left out."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mean_interval(terms: FloatArray, alpha: float) -> tuple[float, float]:
    """Cressie-Read (-2) empirical-likelihood interval for the mean of i.i.d. per-decision terms.

    Reweighting the n terms by q with sum(q) = 1 inside the divergence ball
    sum((n q_i - 1)^2) <= F(1, n) quantile, the mean ranges over mean +- sqrt(quantile * s^2 / n),
    s^2 the variance with divisor n: a Student-t interval with that variance.
    """
    n = terms.size
    mean = float(terms.mean())
    variance = float(np.mean((terms - mean) ** 2))
    half_width = math.sqrt(f1_quantile(alpha, n) * variance / n)
    return mean - half_width, mean + half_width


def cressie_read_interval(
    weights: FloatArray,
    rewards: FloatArray,
    *,
    alpha: float,
    reward_range: tuple[float, float],
    weight_range: tuple[float, float] = (0.0, math.inf),
) -> tuple[float, float]:
    """Cressie-Read (-2) empirical-likelihood interval for E[w r], using E[w] = 1.

    The sample is completed by one unobserved decision whose weight is at the edge of
    ``weight_range`` (the side on which the observed weights fall short of averaging to one) and
    whose reward is the bound being computed; the lower (upper) bound is the smallest (largest)
    value a reweighting of the sample can take within the divergence ball calibrated by the
    F(1, n) quantile. Same definitions as vw-estimators' ``cressieread.Interval`` (tested to
    1e-9), except in two degenerate cases: when no reweighting qualifies we return the trivial
    bound of the reward range (vw-estimators returns the lower reward bound for both ends; with
    the default infinite ``weight_range`` it cannot happen), and a numerically zero spread gives
    the centre itself (vw-estimators moves it by sqrt(2) * 1e-9).
    """
    n = weights.size
    w_low = min(weight_range[0], float(weights.min()))
    w_high = max(weight_range[1], float(weights.max()))
    squared = weights * weights
    sums = _WeightedSums(
        w=float(weights.sum()),
        ww=float(squared.sum()),
        wr=float(weights @ rewards),
        wwr=float(squared @ rewards),
        wwrr=float(squared @ (rewards * rewards)),
    )
    # Divergence of the best reweighting that satisfies E[w] = 1; the interval allows q beyond it.
    fake = w_high if sums.w < n else w_low
    if math.isinf(fake):
        best_fit = 1 + 1 / n
    else:
        mean_w = (fake + sums.w) / (n + 1)
        mean_ww = (fake * fake + sums.ww) / (n + 1)
        best_fit = (n + 1) * (mean_w - 1) ** 2 / (mean_ww - mean_w * mean_w)
    budget = -(best_fit + f1_quantile(alpha, n)) / (2 * (n + 1))

    r_low, r_high = reward_range
    bounds = []
    for reward, sign in ((r_low, 1.0), (r_high, -1.0)):
        candidates = [c for fake in (w_low, w_high) if (c := _bound_candidate(sums, n, fake, reward, sign, budget)) is not None]
        value = sign * min(candidates) if candidates else (r_low if sign > 0 else r_high)
        bounds.append(min(r_high, max(r_low, value)))
    return bounds[0], bounds[1]


@dataclass(frozen=True, slots=True)
class _WeightedSums:
    """Sums over decisions of w, w^2, w r, w^2 r and w^2 r^2."""

    w: float
    ww: float
    wr: float
    wwr: float
    wwrr: float


def _bound_candidate(sums: _WeightedSums, n: int, fake: float, reward: float, sign: float, budget: float) -> float | None:
    """sign x the extreme value of the reweighted mean with the unobserved decision at weight ``fake``."""
    if math.isinf(fake):
        centre = sign * (reward + (sums.wr - sums.w * reward) / n)
        spread = (reward * sums.w - sums.wr) ** 2 / (n * (n + 1)) - (
            reward * reward * sums.ww - 2 * reward * sums.wwr + sums.wwrr
        ) / (n + 1)
        slack = budget + 1 / (2 * n)
    else:
        m_w = (fake + sums.w) / (n + 1)
        m_ww = (fake * fake + sums.ww) / (n + 1)
        m_wr = sign * (fake * reward + sums.wr) / (n + 1)
        m_wwr = sign * (fake * fake * reward + sums.wwr) / (n + 1)
        m_wwrr = (fake * fake * reward * reward + sums.wwrr) / (n + 1)
        var_w = m_ww - m_w * m_w
        if var_w <= 0:
            return None
        cov = m_wwr - m_w * m_wr
        centre = m_wr + (1 - m_w) * cov / var_w
        spread = cov * cov / var_w - (m_wwrr - m_wr * m_wr)
        slack = budget + 0.5 * (1 - m_w) ** 2 / var_w
    product = spread * slack
    if abs(product) <= 1e-18:
        return centre
    if slack <= 0 and product >= 0:
        return centre - math.sqrt(2 * product)
    return None


def effective_sample_size(weights: FloatArray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: how many on-policy decisions the log is worth."""
    total_sq = float(weights @ weights)
    return float(weights.sum()) ** 2 / total_sq if total_sq > 0 else 0.0


def largest_weight_share(weights: FloatArray) -> float:
    """max w / sum w: the share of the importance weight one logged decision holds (0 when there is none).

    Above a few percent, every estimate that averages these weights, and every interval that treats
    their terms as a sample (the bootstrap, a t-interval), turns on that one decision: a resample's
    value depends mostly on how many times it drew it. Kish's ESS is at most 1 / share^2 (25 at 20%).
    """
    total = float(weights.sum())
    return float(weights.max()) / total if total > 0 else 0.0


@lru_cache(maxsize=256)
def f1_quantile(alpha: float, dfd: float) -> float:
    """The upper-``alpha`` quantile of the F(1, dfd) distribution: the square of Student's t quantile.

    Up to 1e5 degrees of freedom, safeguarded Newton on the survival function, a regularised
    incomplete beta function: P(F > x) = I_{d/(d+x)}(d/2, 1/2). Beyond, where that continued
    fraction loses digits, the Cornish-Fisher expansion of t around the normal quantile, whose
    first omitted term is of order d^-5.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    if not dfd > 0:
        raise ValueError(f"dfd: expected a positive number, got {dfd!r}")
    if dfd > 1e5:
        z = _solve_decreasing(lambda v: 0.5 * math.erfc(v / math.sqrt(2)) - alpha / 2, _normal_density, 2.0)
        z2 = z * z
        terms = (
            z * (z2 + 1) / 4,
            z * (3 + z2 * (16 + z2 * 5)) / 96,
            z * (-15 + z2 * (17 + z2 * (19 + z2 * 3))) / 384,
            z * (-945 + z2 * (-1920 + z2 * (1482 + z2 * (776 + z2 * 79)))) / 92160,
        )
        t = z + sum(term / dfd ** (power + 1) for power, term in enumerate(terms))
        return t * t
    log_norm = _log_beta_inverse(dfd / 2, 0.5) - 0.5 * math.log(dfd)

    def density(x: float) -> float:
        return math.exp(log_norm - 0.5 * math.log(x) - (dfd + 1) / 2 * math.log1p(x / dfd))

    return _solve_decreasing(lambda x: _f1_survival(x, dfd) - alpha, density, 4.0)


def _normal_density(z: float) -> float:
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _solve_decreasing(excess: Callable[[float], float], slope: Callable[[float], float], start: float) -> float:
    """The root in (0, inf) of a decreasing function whose derivative is -slope: Newton kept inside a bracket."""
    low, high = 0.0, start
    while excess(high) > 0:
        low, high = high, high * 4
    x = (low + high) / 2
    for _ in range(200):
        value = excess(x)
        if value > 0:
            low = x
        else:
            high = x
        step = x + value / slope(x)
        if abs(step - x) <= 1e-15 * x:
            return step
        x = step if low < step < high else (low + high) / 2
    return x


def _f1_survival(x: float, dfd: float) -> float:
    # I_y(d/2, 1/2) at y = d / (d + x); 1 - y is passed as well so neither side loses digits.
    return _regularized_beta(dfd / (dfd + x), x / (dfd + x), dfd / 2, 0.5)


def _regularized_beta(x: float, x_complement: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (modified Lentz), on the side where it converges fast."""
    if x <= 0:
        return 0.0
    if x_complement <= 0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_beta(x_complement, x, b, a)
    log_x = math.log1p(-x_complement) if x > 0.5 else math.log(x)
    log_front = _log_beta_inverse(a, b) + a * log_x + b * math.log(x_complement)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 100_000):
        numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        for term in (numerator, -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + term * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + term / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-16:
            break
    return math.exp(log_front) * fraction / a


def _log_beta_inverse(a: float, b: float) -> float:
    """-log B(a, b) = lgamma(a + b) - lgamma(a) - lgamma(b), without cancellation when a or b is large."""
    small, large = min(a, b), max(a, b)
    if large < 16:
        return math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    # Stirling for the ratio Gamma(large + small) / Gamma(large); the leading terms combined by log1p.
    ratio = (large - 0.5) * math.log1p(small / large) + small * math.log(large + small) - small
    ratio += _stirling_tail(large + small) - _stirling_tail(large)
    return ratio - math.lgamma(small)


def _stirling_tail(z: float) -> float:
    """lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2), for z >= 16."""
    inverse, inverse_sq = 1 / z, 1 / (z * z)
    return inverse * (1 / 12 - inverse_sq * (1 / 360 - inverse_sq * (1 / 1260 - inverse_sq / 1680)))
