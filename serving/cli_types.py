"""Parameter types the commands share."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A float range that refuses nan and ±inf, which click's FloatRange lets through: `simulate
    --days inf` never ended, `--last-days nan` reported nan shares (and JSON no parser reads)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
