"""
Summaries of the samples: median, min, max and the ratio to the baseline;
the table printed, the JSON written, and the plot.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import frozen

from benchmarks.scenarios import Series


@frozen
class Summary:
    """
    One series reduced to figures.

    @ivar ratio: The median over the baseline's median: the baseline of the
        same variant and metric, or, where a variant has none (the variants
        are the sizes being compared, as in the ports scenario), the one
        baseline of the metric; C{None} without either.
    @ivar saturated: How many samples had the load generator at its limit.
    """

    series: Series
    median: float
    low: float
    high: float
    ratio: float | None
    generatorCPU: float | None
    saturated: int


def summarize(results: Sequence[Series]) -> list[Summary]:
    """
    Median, min, max and ratio to the baseline for every series with samples.
    """
    baselines: dict[tuple[str | None, str], float] = {}
    for s in results:
        if s.baseline and s.samples:
            median = statistics.median(x.value for x in s.samples)
            baselines[s.variant, s.metric] = median
            baselines[None, s.metric] = median
    summaries = []
    for series in results:
        if not series.samples:
            continue
        values = [sample.value for sample in series.samples]
        median = statistics.median(values)
        base = baselines.get(
            (series.variant, series.metric), baselines.get((None, series.metric))
        )
        cpus = [s.generatorCPU for s in series.samples if s.generatorCPU is not None]
        summaries.append(
            Summary(
                series=series,
                median=median,
                low=min(values),
                high=max(values),
                ratio=median / base if base else None,
                generatorCPU=max(cpus) if cpus else None,
                saturated=sum(s.saturated for s in series.samples),
            )
        )
    return summaries


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(title: str, summaries: Sequence[Summary]) -> str:
    """
    C{summaries} as a reStructuredText simple table under a section title:
    readable in a terminal, and pasted as it is into docs/benchmarks.rst.
    """
    header = (
        "variant",
        "contender",
        "metric",
        "median",
        "min",
        "max",
        "ratio",
        "errors",
        "gen CPU",
    )
    rows = [header]
    for s in summaries:
        unit = s.series.unit
        rows.append(
            (
                s.series.variant,
                s.series.contender + (" (baseline)" if s.series.baseline else ""),
                f"{s.series.metric} ({unit})",
                _number(s.median),
                _number(s.low),
                _number(s.high),
                "" if s.ratio is None else f"{s.ratio:.2f}",
                str(sum(x.errors for x in s.series.samples)),
                ""
                if s.generatorCPU is None
                else f"{s.generatorCPU:.0%}" + (" SATURATED" if s.saturated else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule = "  ".join("=" * width for width in widths)
    lines = [title, "-" * len(title), "", rule]
    for index, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(cell.ljust(width) for cell, width in cells).rstrip())
        if index == 0:
            lines.append(rule)
    lines.append(rule)
    return "\n".join(lines)


def toJSON(
    scenario: str,
    title: str,
    summaries: Sequence[Summary],
    context: Mapping[str, object],
) -> dict[str, object]:
    """
    What a results file holds: the context and every series' samples.
    """
    return {
        "scenario": scenario,
        "title": title,
        **context,
        "results": [
            {
                "variant": s.series.variant,
                "contender": s.series.contender,
                "metric": s.series.metric,
                "unit": s.series.unit,
                "baseline": s.series.baseline,
                "higher_is_better": s.series.higherIsBetter,
                "samples": [x.value for x in s.series.samples],
                "generator_cpu": [x.generatorCPU for x in s.series.samples],
                "errors": [x.errors for x in s.series.samples],
                "median": s.median,
                "min": s.low,
                "max": s.high,
                "ratio": s.ratio,
                "generator_saturated": s.saturated,
            }
            for s in summaries
        ],
    }


def writeJSON(path: Path, data: Mapping[str, object]) -> None:
    """
    Write C{data} as indented JSON.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _colour(series: Series) -> str:
    if series.baseline:
        return "#9aa5b1"
    if series.contender.startswith("multiport"):
        return "#dd6b20"
    return "#2b6cb0"


def fromJSON(data: Mapping[str, object]) -> list[Summary]:
    """
    The summaries a results file holds (to plot it again).
    """
    from benchmarks.measure import Sample

    series = []
    for row in data["results"]:  # type: ignore[attr-defined]
        series.append(
            Series(
                row["variant"],
                row["contender"],
                row["metric"],
                row["unit"],
                baseline=row["baseline"],
                higherIsBetter=row["higher_is_better"],
                samples=[
                    Sample(value, cpu, errors)
                    for value, cpu, errors in zip(
                        row["samples"], row["generator_cpu"], row["errors"], strict=True
                    )
                ],
            )
        )
    return summarize(series)


def plot(path: Path, title: str, summaries: Sequence[Summary]) -> None:
    """
    A bar chart per variant and metric: each contender's median with its
    min-max range, labelled with the ratio to the baseline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[Summary]] = {}
    for s in summaries:
        groups.setdefault((s.series.metric, s.series.variant), []).append(s)
    if not groups:
        return
    # One contender throughout (the ports scenario): one chart per metric,
    # a bar per variant.
    byVariant = all(len(members) == 1 for members in groups.values())
    if byVariant:
        groups = {}
        for s in summaries:
            groups.setdefault((s.series.metric, ""), []).append(s)
    columns = min(len(groups), 4)
    rows = (len(groups) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False
    )
    for axis in axes.flat[len(groups) :]:
        axis.set_visible(False)
    for axis, ((metric, variant), members) in zip(
        axes.flat, groups.items(), strict=False
    ):
        names = [m.series.variant if byVariant else m.series.contender for m in members]
        medians = [m.median for m in members]
        errors = [
            [m.median - m.low for m in members],
            [m.high - m.median for m in members],
        ]
        colours = [_colour(m.series) for m in members]
        bars = axis.bar(names, medians, yerr=errors, capsize=4, color=colours)
        for bar, member in zip(bars, members, strict=True):
            if member.ratio is not None:
                axis.annotate(
                    f"{member.ratio:.2f}x",
                    (bar.get_x() + bar.get_width() / 2, member.high),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
        axis.set_title(f"{variant}" if variant else metric, fontsize=10)
        axis.set_ylabel(f"{metric} ({members[0].series.unit})", fontsize=9)
        axis.tick_params(axis="x", labelrotation=20, labelsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
