"""Background housekeeping inside the server: retention, every ``privacy.retention_interval_seconds``."""

from __future__ import annotations

import asyncio
import logging

from reward.retention import RetentionReport, apply_retention
from serving.app import Brain
from serving.metrics import Metrics

log = logging.getLogger("brein.retention")

RETENTION_ACTOR = "brein retention"


def run_retention(brain: Brain, metrics: Metrics, days: float) -> RetentionReport:
    """One retention run on the server's store, counted in the metrics."""
    report = apply_retention(brain.store, days, now=brain.clock(), actor=RETENTION_ACTOR)
    for kind, count in report.deleted.items():
        metrics.retention_deleted.labels(kind).inc(count)
    metrics.retention_runs.labels("ok").inc()
    if any(report.deleted.values()):
        log.info("retention deleted data older than %g days", days, extra=report.deleted)
    return report


async def retention_forever(brain: Brain, metrics: Metrics, days: float, interval: float) -> None:
    """Retention in a worker thread, at start and then every ``interval`` seconds; a failed run is retried."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, run_retention, brain, metrics, days)
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.retention_runs.labels("failed").inc()
            log.exception("retention run failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)
