"""The Open Bandit Dataset extract (``tests/data/obd_all.npz``, see ``tests/data/README.md``) as
logged decisions, for the estimator checks in the tests and ``bench/estimators.py``.

Positions are pooled: each impression is one decision, its position a context feature. The
uniform random policy draws each position's item uniformly from the 80, so its probability of the
logged item is 1/80 whatever the position, and its click rate is the random log's mean click over
all positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from policies.estimators import LoggedDecisions
from policies.reward_model import CrossFittedRewardModel

__all__ = ["OpenBandit", "load_open_bandit", "load_open_bandit_log"]


@dataclass(frozen=True)
class OpenBandit:
    log: LoggedDecisions  # Bernoulli TS log, "all" campaign, with cross-fitted VW predictions
    target: npt.NDArray[np.float64]  # the uniform random policy: 1/80 for every item at every position
    random_click_rate: float  # what the uniform random policy actually earned, from its own log
    random_clicks: int


def load_open_bandit_log(path: Path) -> LoggedDecisions:
    """The Bernoulli TS log's clicks and propensities only (no reward model)."""
    data = np.load(path)
    return LoggedDecisions(reward=data["bts_click"].astype(np.float64), propensity=data["bts_propensity"])


def load_open_bandit(path: Path, model: CrossFittedRewardModel | None = None) -> OpenBandit:
    """The Bernoulli TS log with ``model``'s cross-fitted predictions (default hyper-parameters if
    None), the uniform random target, and the random log's observed click rate."""
    data = np.load(path)
    item = data["bts_item"].astype(np.int64)
    items = data["item_numeric"].size
    shared = [
        f"|u a={a} b={b} c={c} d={d} |p position={p}"
        for (a, b, c, d), p in zip(data["bts_user"].tolist(), data["bts_position"].tolist(), strict=True)
    ]
    offers = [
        f"|i item={k} x0:{x0!r} c1={c1} c2={c2} c3={c3}"
        for k, (x0, (c1, c2, c3)) in enumerate(zip(data["item_numeric"].tolist(), data["item_categories"].tolist(), strict=True))
    ]
    reward = data["bts_click"].astype(np.float64)
    predictions = (model or CrossFittedRewardModel()).fit_predict(shared, [offers] * item.size, item, reward)
    log = LoggedDecisions(reward=reward, propensity=data["bts_propensity"], action=item, reward_hat=predictions)
    clicks = data["random_click"]
    return OpenBandit(
        log=log,
        target=np.full((item.size, items), 1 / items),
        random_click_rate=float(clicks.mean()),
        random_clicks=int(clicks.sum()),
    )
