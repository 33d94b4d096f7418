"""The plots of "can I trust these scores?": confusion against people, score by length.

matplotlib is imported when a plot is drawn, never when the report is only printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from producer.curation.bias import LengthBias
from producer.curation.gold import CalibrationResult, Fit
from producer.curation.results import SCORES

GOLD_PNG = "gold_heatmap.png"
LENGTH_PNG = "score_by_length.png"


def gold_heatmap(result: CalibrationResult, path: Path) -> Path:
    """One 5x5 confusion matrix per judge and aggregate: judge score by human score."""
    import matplotlib
    from matplotlib.figure import Figure

    fits: list[tuple[str, Fit]] = [(f.name, f) for f in result.judges]
    fits += [(f"--agg {f.name}", f) for f in result.aggregates]
    columns = min(3, len(fits))
    rows = math.ceil(len(fits) / columns)
    fig = Figure(figsize=(4.3 * columns, 4.2 * rows), dpi=100, layout="constrained")
    cmap = matplotlib.colormaps["Blues"]
    image = None
    for i, (name, entry) in enumerate(fits):
        ax = fig.add_subplot(rows, columns, i + 1)
        n = max(entry.n, 1)
        shares = [[count / n for count in row] for row in entry.confusion]
        image = ax.imshow(shares, cmap=cmap, vmin=0.0, vmax=max(0.05, *map(max, shares)))
        for judge in range(5):
            for human in range(5):
                count = entry.confusion[judge][human]
                dark = shares[judge][human] > 0.6 * max(0.05, *map(max, shares))
                ax.text(
                    human,
                    judge,
                    f"{count:,}" if count else "·",
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="white" if dark else "black",
                    fontweight="bold" if judge == human else "normal",
                )
        ticks = [str(k) for k in SCORES]
        ax.set_xticks(range(5), labels=ticks)
        ax.set_yticks(range(5), labels=ticks)
        ax.invert_yaxis()  # score 5 on top
        ax.set_xlabel("human score")
        ax.set_ylabel("judge score" if i < len(result.judges) else "aggregate (floor)")
        kappa = "—" if entry.kappa_quadratic is None else f"{entry.kappa_quadratic:.2f}"
        ax.set_title(f"{_short(name)}\nn={entry.n:,}, κ quad. {kappa}", fontsize=10)
    if image is not None:
        colorbar = fig.colorbar(image, ax=fig.axes, fraction=0.03, pad=0.02)
        colorbar.set_label("share of the labelled pairs")
    fig.suptitle(
        f"Judges against human labels — {Path(result.source).name} "
        f"({result.matched_pairs:,} labelled pairs)",
        x=0.02,
        ha="left",
    )
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    return path


def length_plot(entries: Sequence[LengthBias], path: Path) -> Path:
    """Mean score per length quintile, one line per judge; characters and tokens side by side."""
    import matplotlib
    from matplotlib.figure import Figure

    units = list(dict.fromkeys(entry.unit for entry in entries))
    models = list(dict.fromkeys(entry.model for entry in entries))
    cmap = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(6 * len(units), 4.5), dpi=100, layout="constrained")
    for u, unit in enumerate(units):
        ax = fig.add_subplot(1, len(units), u + 1)
        for m, model in enumerate(models):
            entry = next(e for e in entries if e.model == model and e.unit == unit)
            bins = [b for b in entry.quintiles if b.mean_score is not None]
            if not bins:
                continue
            xs = [(b.low + b.high) / 2 for b in bins]
            rho = "—" if entry.spearman is None else f"{entry.spearman:+.2f}"
            ax.plot(
                xs,
                [b.mean_score or 0.0 for b in bins],
                marker="o",
                color=cmap(m % 10),
                label=f"{_short(model)} (Spearman {rho})",
            )
        ax.set_xlabel(f"answer length, {unit} (quintile midpoints)")
        ax.set_ylabel("mean score in the quintile")
        ax.set_ylim(0.8, 5.2)
        ax.set_yticks(list(SCORES))
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
        ax.set_title(f"Score by answer length ({unit})", loc="left")
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    return path


def _short(name: str, limit: int = 30) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
