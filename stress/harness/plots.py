"""PNG plots of one or more runs: line length, admissions per second, latency over
time and the CDF of time to result. matplotlib without a display (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@dataclass
class Series:
    label: str
    timeline: list[dict[str, Any]]
    time_to_result_s: list[float] = field(default_factory=list)
    rate: float | None = None  # configured admissions per second, if any
    students: int = 0  # the CDF's denominator: those who never got a result count too


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, ax: Any, path: Path) -> Path:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _xy(timeline: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["t"], row[key]) for row in timeline if key in row]
    return [p[0] for p in points], [p[1] for p in points]


def draw(
    series: Sequence[Series],
    folder: Path,
    prefix: str,
    cdf_title: str = "Time from arrival to own marksheet (CDF)",
) -> list[Path]:
    """Up to four PNGs in ``folder``; a plot with nothing to show is skipped."""
    out = []
    lined = [s for s in series if any("line" in row for row in s.timeline)]
    if lined:
        fig, ax = _figure("Students waiting in line", "seconds since start", "people in line")
        for s in lined:
            ax.plot(*_xy(s.timeline, "line"), label=s.label)
        out.append(_save(fig, ax, folder / f"{prefix}-line.png"))

        fig, ax = _figure("Admissions per second", "seconds since start", "admitted per second")
        for s in lined:
            (line,) = ax.plot(*_xy(s.timeline, "admitted"), label=f"{s.label}: achieved")
            if s.rate:
                ax.axhline(s.rate, linestyle="--", color=line.get_color(), label="configured")
        out.append(_save(fig, ax, folder / f"{prefix}-admissions.png"))

    if any("p50_ms" in row for s in series for row in s.timeline):
        fig, ax = _figure("Request latency over time", "seconds since start", "ms (log scale)")
        ax.set_yscale("log")
        for s in series:
            for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
                xs, ys = _xy(s.timeline, key)
                if xs:
                    ax.plot(xs, ys, style, label=f"{s.label} {key[:-3]}")
        out.append(_save(fig, ax, folder / f"{prefix}-latency.png"))

    fig, ax = _figure(cdf_title, "seconds", "share of students")
    for s in series:
        values = sorted(s.time_to_result_s)
        if values:
            total = max(s.students, len(values))
            ax.step(values, [(i + 1) / total for i in range(len(values))], label=s.label)
    out.append(_save(fig, ax, folder / f"{prefix}-time-to-result.png"))
    return out
