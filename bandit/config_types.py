"""What every config section is built of: the base model and the bounded types of time.

Every float in a config is finite, by the base model rather than a flag per field: an ``inf`` passed
the check and then stopped the server's joiner for good ("starting another in inf s"), and the
config crosses to the worker process as JSON, where pydantic writes ``inf`` as ``null``, which the
worker refused at every restart. Every span of time has an upper bound far past any real setting
and far inside what the clock, ``select`` and ``threading`` take: ``1e300`` seconds overflowed
``time_t`` in the worker's waits.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_SECONDS = 7 * 86_400.0
"""The longest interval, wait or grace a config may name: a week. A schedule slower than that, or a
drain longer, is a typo; the bound keeps ``now + seconds`` a time every wait takes."""
MIN_SECONDS = 0.01
"""The shortest interval or wait: 10 ms. A shorter one is a typo that makes a loop spin (``1e-300``
between join runs passed, and the worker joined without pause)."""
MAX_DAYS = 36_525.0
"""The longest span of days (a window, a retention, a cap's period): a century, past any legal
retention, and far inside what ``datetime`` reaches from now (the year 9999)."""
MAX_HOURS = 24 * MAX_DAYS

Seconds = Annotated[float, Field(ge=MIN_SECONDS, le=MAX_SECONDS)]
Days = Annotated[float, Field(gt=0, le=MAX_DAYS)]


class ConfigSection(BaseModel):
    """A section of the config: unknown keys refused, frozen, and every float finite (so that the
    config's JSON, which the worker process reads, is the config again)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
