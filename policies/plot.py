"""An evaluation as a picture (`brein policy evaluate --plot`, `brein replay --plot`): each estimator's
value with its two intervals beside the baseline's, and the paired lift with its intervals around
zero, so an operator sees at a glance whether a lift is real. Unreliable estimates are greyed and
hatched; an interval whose coverage is unknown is dotted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bandit.errors import BreinError
from policies.estimators import Comparison, Estimate, Interval
from policies.evaluation import EvaluationReport

CANDIDATE, BASELINE = "tab:blue", "tab:orange"
HATCH: dict[str, Any] = {"facecolor": "#fbe9e7", "edgecolor": "#e0a39a", "hatch": "///"}


def plot_report(report: EvaluationReport, path: Path) -> None:
    """Write the report's figure to ``path`` (PNG, or any format matplotlib infers from the suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError:
        raise BreinError("--plot needs matplotlib: pip install 'brein[plot]'") from None
    names = [e.estimator for e in report.estimates]
    panels = 2 if report.comparisons else 1
    height = 1.6 + 0.75 * len(names)  # inches: a row per estimator, and room for the title and the legend
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, height), sharey=True, squeeze=False)
    values = axes[0][0]
    # A row is unreliable when its estimate is (or, with a baseline, its paired lift: either side's estimate).
    verdicts = [c.reliable for c in report.comparisons] or [e.reliable for e in report.estimates]
    for panel in axes[0]:
        for row in (row for row, reliable in enumerate(verdicts) if not reliable):
            panel.axhspan(row - 0.45, row + 0.45, **HATCH, linewidth=0, zorder=0)
    offset = 0.15 if report.comparisons else 0.0
    for row, estimate in enumerate(report.estimates):
        _draw(values, row - offset, estimate.value, estimate.bootstrap, estimate.analytic, estimate.reliable, CANDIDATE)
    for row, comparison in enumerate(report.comparisons):
        baseline = comparison.baseline
        _draw(values, row + offset, baseline.value, baseline.bootstrap, baseline.analytic, baseline.reliable, BASELINE)
    values.set_yticks(range(len(names)), names)
    values.invert_yaxis()
    values.set_xlabel("estimated value per decision (95% intervals)")
    handles: list[Any] = [Line2D([], [], color=CANDIDATE, marker="o", linestyle="", label=report.candidate)]
    if report.comparisons:
        lifts = axes[0][1]
        lifts.axvline(0.0, color="black", linewidth=0.8)
        for row, comparison in enumerate(report.comparisons):
            _draw(lifts, row, comparison.difference, comparison.bootstrap, comparison.analytic, comparison.reliable, CANDIDATE)
        lifts.set_xlabel(f"paired lift: {report.candidate} - {report.baseline} per decision")
        handles.append(Line2D([], [], color=BASELINE, marker="o", linestyle="", label=f"{report.baseline} (baseline)"))
    handles += [
        Line2D([], [], color="black", linewidth=5, alpha=0.35, label="Cressie-Read 95%"),
        Line2D([], [], color="black", linewidth=1.2, label="bootstrap 95%"),
    ]
    shown: list[Estimate | Comparison] = [*report.estimates, *(c.baseline for c in report.comparisons), *report.comparisons]
    if not all(i.trustworthy for item in shown for i in (item.bootstrap, item.analytic)):
        handles.append(Line2D([], [], color="black", linewidth=1.2, linestyle=":", label="interval with unknown coverage"))
    if not all(verdicts):
        handles += [
            Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="", label="unreliable estimate"),
            Patch(**HATCH, label="unreliable (reasons: the table or --json)"),
        ]
    verdict = "" if report.reliable else " — UNRELIABLE"
    title = f"{report.candidate}" + (f" vs {report.baseline}" if report.baseline else "")
    figure.suptitle(f"{title} on {report.decisions:,} logged decisions{verdict}")
    columns = 3 * panels
    figure.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    legend_rows = -(-len(handles) // columns)
    figure.tight_layout(rect=(0, (0.15 + 0.2 * legend_rows) / height, 1, 1))
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise BreinError(f"--plot: cannot write {path}: {error.strerror or error}") from None
    finally:
        plt.close(figure)


def _draw(axes: Any, y: float, value: float, bootstrap: Interval, analytic: Interval, reliable: bool, colour: str) -> None:
    """A point (hollow when unreliable) with its Cressie-Read interval (thick) and bootstrap interval (thin);
    an interval with unknown coverage dotted."""
    for interval, width, alpha in ((analytic, 5.0, 0.35), (bootstrap, 1.2, 1.0)):
        axes.plot([interval.low, interval.high], [y, y], color=colour, linewidth=width, alpha=alpha,
                  linestyle="-" if interval.trustworthy else ":", solid_capstyle="butt", zorder=2)  # fmt: skip
    axes.plot([value], [y], marker="o", color=colour, markerfacecolor=colour if reliable else "white", zorder=3)
