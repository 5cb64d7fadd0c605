"""Rebuild tests/data/obd_all.npz from the Open Bandit Dataset sample in the obp 0.4.1 wheel.

    pip download --no-deps --python-version 3.10 --only-binary=:all: obp==0.4.1 -d DIR
    unzip -q DIR/obp-0.4.1-py3-none-any.whl -d DIR/wheel
    .venv/bin/python tests/data/make_obd_extract.py DIR/wheel/obp/dataset/obd tests/data/obd_all.npz

Keeps, for campaign "all" of both logs (Bernoulli TS and uniform random, 10,000 impressions each),
only what the estimator tests use: item, position, click, propensity score and the four user
features, plus the item features. Hashed categories become small integer codes (shared across
the two logs); numbers are kept exactly as parsed from the CSV text. obp is not imported.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

USER_FEATURES = [f"user_feature_{k}" for k in range(4)]
ITEM_CATEGORIES = [f"item_feature_{k}" for k in range(1, 4)]


def main(obd: Path, output: Path) -> None:
    codes: dict[str, dict[str, int]] = {}

    def code(column: str, value: str) -> int:
        table = codes.setdefault(column, {})
        return table.setdefault(value, len(table))

    arrays: dict[str, np.ndarray] = {}
    for log in ("bts", "random"):
        with open(obd / log / "all" / "all.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        arrays[f"{log}_item"] = np.array([int(r["item_id"]) for r in rows], dtype=np.uint8)
        arrays[f"{log}_position"] = np.array([int(r["position"]) for r in rows], dtype=np.uint8)
        arrays[f"{log}_click"] = np.array([int(r["click"]) for r in rows], dtype=np.uint8)
        arrays[f"{log}_propensity"] = np.array([float(r["propensity_score"]) for r in rows])
        arrays[f"{log}_user"] = np.array([[code(c, r[c]) for c in USER_FEATURES] for r in rows], dtype=np.uint8)
    with open(obd / "bts" / "all" / "item_context.csv", newline="") as file:
        items = sorted(csv.DictReader(file), key=lambda r: int(r["item_id"]))
    arrays["item_numeric"] = np.array([float(r["item_feature_0"]) for r in items])
    arrays["item_categories"] = np.array([[code(c, r[c]) for c in ITEM_CATEGORIES] for r in items], dtype=np.uint8)
    np.savez_compressed(output, **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
