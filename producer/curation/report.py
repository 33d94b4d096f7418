"""``ibt report``: read a results file, summarise each judge and how far the judges agree.

The results file is what ``ibt score`` writes (see :mod:`producer.curation.results`).

The report is the command's output, so it goes to stdout (as text, or one JSON object with
``--json``); errors and notes such as ``wrote plots/...`` go to stderr and never mix into it.
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from producer.curation.bias import LengthBias, Lengths, bias_json, token_counter
from producer.curation.gold import CalibrationResult, Gold, fit_json, load_gold
from producer.curation.results import SCORES, JudgeRecord, iter_records
from producer.curation.stats import Agreement, Consensus, Level, ModelStats, SampleSpread
from producer.curation.summary import Summary
from producer.curation.text import fits as _fits
from producer.curation.text import label as _label
from producer.curation.text import num as _num
from producer.curation.text import pct as _pct
from producer.curation.text import plural as _plural
from producer.curation.text import table as _table
from producer.output import summary_path
from workers.errors import ConfigError, InputError
from workers.models import SIMULATED

PRICE_KEYS = ("input_price_per_mtok", "output_price_per_mtok")
HISTOGRAM_PNG = "score_histogram.png"
HEATMAP_PNG = "agreement_heatmap.png"
# A redirected report has no terminal to measure: a fixed width keeps the combined judges
# table on one line per judge and makes the file the same wherever it was written.
REDIRECTED_WIDTH = 120


def load_prices(path: str) -> dict[str, tuple[float, float]]:
    """Prices per million tokens from a models file: ``[models."NAME"]`` tables with
    ``input_price_per_mtok`` and ``output_price_per_mtok``; every other key is ignored, and a
    model with neither key has no price.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prices file: {exc}", source=path) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=path) from exc
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError('expected a [models."NAME"] table per model', source=path, field="models")
    prices: dict[str, tuple[float, float]] = {}
    for name, table in models.items():
        if not isinstance(table, dict) or not any(key in table for key in PRICE_KEYS):
            continue
        header = _line_of(text, f'"{name}"') or _line_of(text, f".{name}]")
        values = []
        for key in PRICE_KEYS:
            line = (_line_of(text, key, header) if key in table else None) or header
            where = f"models.{name}.{key}"
            if key not in table:
                other = PRICE_KEYS[1 - PRICE_KEYS.index(key)]
                raise ConfigError(f"missing (given {other})", source=path, line=line, field=where)
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError("must be a number", source=path, line=line, field=where)
            if not math.isfinite(value) or value < 0:
                raise ConfigError("must be zero or more", source=path, line=line, field=where)
            values.append(float(value))
        prices[name] = (values[0], values[1])
    return prices


def _line_of(text: str, needle: str, after: int | None = None) -> int | None:
    """1-based line of the first ``needle`` on or after line ``after``."""
    start = 0
    if after is not None:
        start = sum(len(line) + 1 for line in text.split("\n")[: after - 1])
    index = text.find(needle, start)
    return None if index < 0 else text.count("\n", 0, index) + 1


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Report:
    """Everything ``ibt report`` shows, computed once from a results file."""

    source: str
    records: int
    pairs: int
    models: list[str]
    per_model: list[ModelStats]
    agreements: list[Agreement]  # one per model pair; empty with a single judge
    consensus: Consensus
    # The run summary the tokens and cost came from (see with_run_usage), if any.
    usage_source: str | None = None
    # Krippendorff's alpha across all judges, by level of measurement.
    alpha: dict[str, float | None] = field(default_factory=dict)
    incomplete_pairs: int = 0  # pairs without a record from every judge
    length_bias: list[LengthBias] = field(default_factory=list)
    calibration: CalibrationResult | None = None
    # Per judge whose records carry ``samples`` (``ibt score --samples N``).
    self_consistency: list[SampleSpread] = field(default_factory=list)

    @property
    def error_records(self) -> int:
        return sum(stats.error_count for stats in self.per_model)

    @property
    def total_cost(self) -> float | None:
        """Cost of the judges with a known price; None when no judge has one."""
        costs = [stats.cost for stats in self.per_model if stats.cost is not None]
        return math.fsum(costs) if costs else None

    def agreement(self, a: str, b: str) -> Agreement | None:
        for entry in self.agreements:
            if {entry.model_a, entry.model_b} == {a, b}:
                return entry
        return None


ALPHA_LEVELS: tuple[Level, ...] = ("interval", "ordinal")


def build_report(
    path: str,
    prices: dict[str, tuple[float, float]] | None = None,
    warn: Callable[[str], None] | None = None,
    *,
    gold: str | None = None,
    tokens: bool = True,
) -> Report:
    """The report of the results file ``path``, read once, as a stream.

    ``gold``: a file of human scores to calibrate the judges against (see
    :mod:`producer.curation.gold`). ``tokens``: also measure lengths in o200k_base tokens.
    """
    source = "<stdin>" if path == "-" else path
    loaded = load_gold(gold) if gold else None
    report = report_from_records(
        iter_records(path), source=source, prices=prices, gold=loaded, tokens=tokens
    )
    return report if path == "-" else with_run_usage(report, path, warn or (lambda _: None))


def with_run_usage(report: Report, path: str, warn: Callable[[str], None]) -> Report:
    """Tokens and cost of the run that wrote ``path``, from the summary ``ibt score`` wrote
    beside it (real usage, repeated calls included, batch items at batch prices).

    Used only when it describes this very file (same record count); otherwise the records'
    own usage fields, if any, are what the report shows.
    """
    sidecar = summary_path(path)
    if not sidecar.is_file():
        return report
    try:
        summary = json.loads(sidecar.read_text(encoding="utf-8"))
        models = summary["models"]
        if int(summary["records"]) != report.records:
            warn(
                f"{sidecar} describes {summary['records']} records, this file has "
                f"{report.records}: its tokens and cost are not used"
            )
            return report
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warn(f"{sidecar}: not a run summary ({exc}); its tokens and cost are not used")
        return report
    per_model = []
    for stats in report.per_model:
        entry = models.get(stats.model)
        if not isinstance(entry, dict):
            per_model.append(stats)
            continue
        cost = entry.get("cost_usd")
        per_model.append(
            replace(
                stats,
                input_tokens=int(entry.get("input_tokens", 0)),
                output_tokens=int(entry.get("output_tokens", 0)),
                cost=None if cost is None else float(cost),
            )
        )
    return replace(report, per_model=per_model, usage_source=str(sidecar))


def report_from_records(
    records: Iterable[JudgeRecord],
    *,
    source: str = "<python>",
    prices: dict[str, tuple[float, float]] | None = None,
    gold: Gold | None = None,
    tokens: bool = True,
) -> Report:
    """The report of a stream of records (pair, then model, as ``ibt score`` writes them)."""
    from producer.curation.select import AGGREGATES

    summary = Summary(
        gold=gold,
        aggregates=dict(AGGREGATES),
        lengths=Lengths(token_counter() if tokens else None),
    )
    summary.feed(records)
    models = summary.models
    return Report(
        source=source,
        records=summary.records,
        pairs=summary.pairs,
        models=models,
        per_model=summary.model_stats(prices),
        agreements=summary.agreements(),
        consensus=summary.consensus(),
        alpha={level: summary.coincidence.alpha(level) for level in ALPHA_LEVELS}
        if len(models) >= 2
        else {},
        incomplete_pairs=summary.incomplete,
        length_bias=summary.lengths.result(models),
        calibration=None if summary.calibration is None else summary.calibration.result(models),
        self_consistency=summary.sample_spread(),
    )


# --------------------------------------------------------------------------- printing


def format_cost(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or value >= 1:
        return f"${value:,.2f}"
    return f"${value:.2g}" if value < 0.01 else f"${value:.4f}"


def print_report(report: Report, console: Console) -> None:
    """The report as rich tables; a table too wide for the console is split in narrower ones."""
    from producer.curation import views

    _print_judges(report, console)
    views.print_reliability(report, console)
    views.print_self_consistency(report.self_consistency, console)
    views.print_length_bias(report.length_bias, console)
    if report.calibration is not None:
        views.print_calibration(report.calibration, console)


def _print_judges(report: Report, console: Console) -> None:
    judges = len(report.models)
    console.print(
        f"[bold]{report.source}[/]: {_plural(report.records, 'record')}, "
        f"{_plural(report.pairs, 'pair')}, {_plural(judges, 'judge')}, "
        f"{_plural(report.error_records, 'error record')}",
        highlight=False,
    )
    usage = any(s.input_tokens or s.output_tokens or s.cost is not None for s in report.per_model)
    summary = ("records", "scored", "errors", "mean", "median")
    scores = tuple(str(score) for score in SCORES)
    tokens = ("tokens in", "tokens out", "cost") if usage else ()
    rows = []
    for stats in report.per_model:
        rows.append(
            (
                _label(stats.model),
                f"{stats.count:,}",
                f"{stats.scored:,}",
                f"[red]{stats.error_count:,}[/]" if stats.error_count else "0",
                _num(stats.mean),
                _num(stats.median, 1),
                *(f"{n:,}" for n in stats.histogram),
                *(
                    (f"{stats.input_tokens:,}", f"{stats.output_tokens:,}", format_cost(stats.cost))
                    if usage
                    else ()
                ),
            )
        )
    combined = _table("judge", *summary, *scores, *tokens)
    for row in rows:
        combined.add_row(*row)
    if _fits(console, combined):
        console.print("[bold]Judges[/] (columns 1..5: how many pairs got that score)")
        console.print(combined)
    else:
        parts = [
            ("[bold]Judges[/]", summary, slice(1, 6)),
            ("[bold]Scores given[/] (pairs per score)", scores, slice(6, 11)),
        ]
        if usage:
            parts.append(("[bold]Tokens and cost[/]", tokens, slice(11, 14)))
        for title, columns, part in parts:
            table = _table("judge", *columns)
            for row in rows:
                table.add_row(row[0], *row[part])
            console.print(title)
            console.print(table)
    if report.total_cost is not None:
        unpriced = [s.model for s in report.per_model if s.cost is None]
        note = f" (no price for {', '.join(unpriced)})" if unpriced else ""
        console.print(f"total cost: {format_cost(report.total_cost)}{note}", highlight=False)
    if report.usage_source:
        console.print(
            f"tokens and cost: what the run paid, from {report.usage_source}", highlight=False
        )

    if report.error_records:
        errors = _table("judge", "error kind", "records", "share", left=2)
        for stats in report.per_model:
            for i, (kind, n) in enumerate(stats.errors.items()):
                errors.add_row(
                    _label(stats.model) if i == 0 else "",
                    kind,
                    f"{n:,}",
                    _pct(stats.error_share[kind]),
                )
        console.print("[bold]Error records by kind[/] (share of that judge's records)")
        console.print(errors)

    if judges < 2:
        return
    numbers = ("pairs", "exact", "κ quad.", "κ lin.", "Spearman")
    cells = [
        (
            f"{entry.n:,}",
            _pct(entry.exact),
            _num(entry.kappa_quadratic, 3),
            _num(entry.kappa_linear, 3),
            _num(entry.spearman, 3),
        )
        for entry in report.agreements
    ]
    agreement = _table("judge A", "judge B", *numbers, left=2)
    for entry, row in zip(report.agreements, cells, strict=True):
        agreement.add_row(entry.model_a, entry.model_b, *row)
    if not _fits(console, agreement):
        agreement = _table("judges", *numbers)
        agreement.show_lines = True
        for entry, row in zip(report.agreements, cells, strict=True):
            agreement.add_row(f"{entry.model_a}\n{entry.model_b}", *row)
    console.print("[bold]Agreement between judges[/] (over the pairs both scored)")
    console.print(agreement)
    c = report.consensus
    console.print(
        Text.assemble(
            f"All {c.models} judges scored {c.all_scored:,} of {_plural(c.pairs, 'pair')}; "
            f"they agree exactly on {c.all_agree:,}",
            f" ({_pct(c.agree_share)})" if c.agree_share is not None else "",
            ".",
        )
    )
    legend = "κ: Cohen's kappa, quadratic / linear weights; Spearman: rank correlation"
    if any(entry.spearman is None for entry in report.agreements):
        legend += "; —: undefined (under 2 shared pairs, or a constant score)"
    console.print(f"[dim]{legend}[/]")


# --------------------------------------------------------------------------- plots


def write_plots(report: Report, directory: Path) -> list[Path]:
    """``score_histogram.png``, ``score_by_length.png``, with two judges or more
    ``agreement_heatmap.png``, and with a gold file ``gold_heatmap.png``."""
    from producer.curation import plots

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [_plot_histogram(report, directory / HISTOGRAM_PNG)]
    if len(report.models) >= 2:
        paths.append(_plot_heatmap(report, directory / HEATMAP_PNG))
    if report.length_bias:
        paths.append(plots.length_plot(report.length_bias, directory / plots.LENGTH_PNG))
    if report.calibration is not None:
        paths.append(plots.gold_heatmap(report.calibration, directory / plots.GOLD_PNG))
    return paths


def _plot_histogram(report: Report, path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    models = report.per_model
    fig = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(models), 1)
    colors = _palette(len(models))
    for i, stats in enumerate(models):
        offsets = [score - 0.4 + width * (i + 0.5) for score in SCORES]
        mean_text = "" if stats.mean is None else f", mean {stats.mean:.2f}"
        simulated = " (SIMULATED)" if stats.model in SIMULATED else ""
        bars = ax.bar(
            offsets,
            stats.histogram,
            width=width * 0.92,
            color=colors[i],
            label=f"{_short(stats.model)}{simulated}\n(n={stats.scored:,}{mean_text})",
            zorder=3,
        )
        if len(models) <= 4:
            ax.bar_label(bars, labels=[f"{n:,}" if n else "" for n in stats.histogram], fontsize=8)
    ax.set_xticks(list(SCORES))
    ax.set_xticklabels(["1\npoor", "2", "3", "4", "5\nexcellent"])
    ax.set_xlim(0.5, 5.5)
    ax.set_xlabel("score")
    ax.set_ylabel("pairs scored")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"Score distribution per judge — {Path(report.source).name}", loc="left")
    ax.legend(
        title="judge (n scored, mean)",
        frameon=False,
        fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    return path


def _plot_heatmap(report: Report, path: Path) -> Path:
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    models = report.models
    m = len(models)
    matrix = [[math.nan] * m for _ in range(m)]
    counts = [[0] * m for _ in range(m)]
    for i, a in enumerate(models):
        matrix[i][i] = 1.0
        for j, b in enumerate(models):
            entry = report.agreement(a, b) if i != j else None
            if entry is not None:
                counts[i][j] = entry.n
                if entry.kappa_quadratic is not None:
                    matrix[i][j] = entry.kappa_quadratic
    side = max(5.0, 1.2 * m + 2.5)
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax, extend="min", fraction=0.046, pad=0.04)
    colorbar.set_label("Cohen's κ, quadratic weights")
    labels = [_short(model) for model in models]
    ax.set_xticks(range(m), labels=labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(m), labels=labels)
    ax.set_xlabel("judge")
    ax.set_ylabel("judge")
    font = 11 if m <= 5 else 9
    for i in range(m):
        for j in range(m):
            value = matrix[i][j]
            if i == j:
                text = "1.00"
            elif math.isnan(value):
                text = f"n/a\nn={counts[i][j]:,}" if counts[i][j] else "no shared\npairs"
            else:
                text = f"{value:.2f}\nn={counts[i][j]:,}"
            rgb = (0.85, 0.85, 0.85) if math.isnan(value) else to_rgb(cmap(max(value, 0.0)))
            luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=font,
                color="black" if luminance > 0.5 else "white",
            )
    ax.set_title(f"Agreement between judges — {Path(report.source).name}", loc="left")
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    return path


def _short(name: str, limit: int = 28) -> str:
    """A model name fit for an axis label: long ones keep their start and end."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep - keep // 3] + "…" + name[-(keep // 3) :]


def _palette(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --------------------------------------------------------------------------- the command


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-safe object: the numbers the text report shows, unrounded.

    Keys are stable; ``null`` stands where the text shows "—" (undefined or unknown):

    - ``source``, ``records``, ``pairs``, ``judges``, ``error_records``: the header line.
    - ``models``: one object per judge, in order of first appearance, with ``model``,
      ``simulated``, ``records``, ``scored``, ``error_records``, ``mean``, ``median``,
      ``histogram`` (``{"1": n, ..., "5": n}``, pairs given each score), ``errors``
      (``{kind: {"records": n, "share": n / records}}``, most frequent first),
      ``input_tokens``, ``output_tokens`` and ``cost`` (``null`` without a price).
    - ``total_cost``: over the judges with a price; ``null`` when none has one.
    - ``agreement``: one object per pair of judges, with ``model_a``, ``model_b``, ``pairs``
      (how many both scored), ``exact``, ``kappa_quadratic``, ``kappa_linear``, ``spearman``;
      empty with a single judge.
    - ``consensus``: ``judges``, ``pairs``, ``all_scored`` (pairs every judge scored),
      ``all_agree`` (of those, the pairs every judge gave the same score), ``agree_share``.
    - ``krippendorff_alpha``: ``{"interval": a, "ordinal": a}`` across all judges (``{}``
      with one judge); ``incomplete_pairs``: pairs without a record from every judge.
    - ``length_bias``: per judge and unit (``chars``, ``tokens``): ``model``, ``unit``,
      ``records``, ``pearson``, ``spearman``, ``quintiles`` (``low``, ``high``, ``records``,
      ``mean_score``; a bin holds lengths in (low, high], the first includes ``low``).
    - ``calibration`` (``null`` without ``--gold``): ``source``, ``gold_rows``,
      ``matched_rows``, ``unmatched_rows``, ``matched_pairs``, and ``judges`` and
      ``aggregates``, one object each with ``name``, ``pairs``, ``exact``,
      ``kappa_quadratic``, ``kappa_linear``, ``spearman``, ``mean_offset`` (judge - human),
      ``confusion`` (5x5, rows judge 1..5, columns human 1..5) and ``thresholds`` (per K:
      ``k``, ``kept``, ``relevant``, ``hits``, ``precision``, ``recall``).
    - ``self_consistency``: one object per judge whose records carry ``samples`` (``ibt
      score --samples N``; empty otherwise), with ``model``, ``records`` (those with at
      least 2 readable samples), ``samples``, ``unreadable_samples``, ``mean_sd`` (mean
      population standard deviation of a record's samples), ``mean_range`` (mean highest -
      lowest) and ``all_agree_share`` (records whose samples are all the same score).
    """
    c = report.consensus
    cal = report.calibration
    return {
        "source": report.source,
        "records": report.records,
        "pairs": report.pairs,
        "judges": len(report.models),
        "error_records": report.error_records,
        "models": [
            {
                "model": stats.model,
                "simulated": stats.model in SIMULATED,
                "records": stats.count,
                "scored": stats.scored,
                "error_records": stats.error_count,
                "mean": stats.mean,
                "median": stats.median,
                "histogram": {
                    str(score): n for score, n in zip(SCORES, stats.histogram, strict=True)
                },
                "errors": {
                    kind: {"records": n, "share": stats.error_share[kind]}
                    for kind, n in stats.errors.items()
                },
                "input_tokens": stats.input_tokens,
                "output_tokens": stats.output_tokens,
                "cost": stats.cost,
            }
            for stats in report.per_model
        ],
        "total_cost": report.total_cost,
        "usage_source": report.usage_source,
        "agreement": [
            {
                "model_a": entry.model_a,
                "model_b": entry.model_b,
                "pairs": entry.n,
                "exact": entry.exact,
                "kappa_quadratic": entry.kappa_quadratic,
                "kappa_linear": entry.kappa_linear,
                "spearman": entry.spearman,
            }
            for entry in report.agreements
        ],
        "consensus": {
            "judges": c.models,
            "pairs": c.pairs,
            "all_scored": c.all_scored,
            "all_agree": c.all_agree,
            "agree_share": c.agree_share,
        },
        "krippendorff_alpha": report.alpha,
        "incomplete_pairs": report.incomplete_pairs,
        "length_bias": [bias_json(entry) for entry in report.length_bias],
        "calibration": None
        if cal is None
        else {
            "source": cal.source,
            "gold_rows": cal.gold_rows,
            "matched_rows": cal.matched_rows,
            "unmatched_rows": cal.unmatched_rows,
            "matched_pairs": cal.matched_pairs,
            "judges": [fit_json(entry) for entry in cal.judges],
            "aggregates": [fit_json(entry) for entry in cal.aggregates],
        },
        "self_consistency": [
            {
                "model": entry.model,
                "records": entry.records,
                "samples": entry.samples,
                "unreadable_samples": entry.unreadable,
                "mean_sd": entry.mean_sd,
                "mean_range": entry.mean_range,
                "all_agree_share": entry.all_agree,
            }
            for entry in report.self_consistency
        ],
    }


def stdout_console() -> Console:
    """The console the report is printed on: stdout, as the command's output.

    A terminal gets colour at its own width; a file or pipe gets plain text (no ANSI codes)
    at :data:`REDIRECTED_WIDTH` columns, so ``ibt report r.json > report.txt`` is clean text.
    """
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=REDIRECTED_WIDTH, color_system=None)


def run_report(
    path: str,
    png_dir: str | None,
    prices_file: str | None = None,
    *,
    as_json: bool = False,
    gold: str | None = None,
    out: Console | None = None,
    err: Console | None = None,
) -> int:
    """Print the report of ``path`` on stdout (and write plots to ``png_dir``).

    ``as_json`` prints :func:`report_json` instead of the tables; ``gold`` adds the
    calibration against that file of human scores. Errors and notes go to ``err`` (stderr).
    Returns 0 when done, 2 on bad input.
    """
    err = err or Console(stderr=True)
    try:
        prices = load_prices(prices_file) if prices_file else None
        report = build_report(
            path, prices, warn=lambda text: err.print(f"note: {text}", highlight=False), gold=gold
        )
    except InputError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    if as_json:
        sys.stdout.write(json.dumps(report_json(report), ensure_ascii=False, indent=2) + "\n")
        sys.stdout.flush()
    else:
        print_report(report, out or stdout_console())
    if png_dir:
        for written in write_plots(report, Path(png_dir)):
            err.print(f"wrote {written}", highlight=False)
    return 0
