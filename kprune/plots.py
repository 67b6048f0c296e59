"""Plots people would rather look at than read: kept units per layer, metric vs FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kprune.atomic import atomic_path
from kprune.extras import PIPELINE, require


def _plt():
    require(PIPELINE, "matplotlib", purpose="plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kept_units_plot(report: dict, path: str | Path) -> None:
    """Bars of kept heads and kept neurons per layer, against the totals."""
    plt = _plt()
    heads, neurons = report["kept_heads_per_layer"], report["kept_neurons_per_layer"]
    layers = range(len(heads))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, kept, total, name in (
        (axes[0], heads, report["heads_per_layer"], "heads"),
        (axes[1], neurons, report["neurons_per_layer"], "neurons"),
    ):
        ax.bar(layers, [total] * len(kept), color="#dddddd", label="total")
        ax.bar(layers, kept, color="#3a7bd5", label="kept")
        ax.set_xlabel("layer")
        ax.set_title(f"kept {name} per layer")
        ax.set_xticks(list(layers))
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{report.get('task', '')}: {100 * report['flops_kept']:.0f}% of FLOPs kept")
    fig.tight_layout()
    _save(fig, path)


# matplotlib's ten default colours, then Dark2's eight: 18 methods before one repeats
PALETTE = [f"C{i}" for i in range(10)] + [
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A colour per method, K-prune's first, no two alike while the palette lasts."""
    ordered = sorted(methods, key=lambda m: (m != "kprune", m))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(ordered)}


def metric_vs_flops_plot(
    rows: Sequence[dict],
    metric: str,
    path: str | Path,
    title: str = "",
    panels: Sequence[tuple[str, Sequence[str]]] | None = None,
    x: str = "flops_kept",
    xlabel: str = "fraction of FLOPs kept",
) -> None:
    """Metric against the fraction of FLOPs kept (or another field ``x`` of the rows); one
    line per ``method`` in ``rows`` (error bars where rows carry ``metric_std``). ``panels``:
    (title, methods) per subplot; default one panel with every method."""
    plt = _plt()
    methods = sorted({r.get("method", "kprune") for r in rows})
    panels = [(p, [m for m in ms if m in methods]) for p, ms in (panels or [("", methods)])]
    panels = [(p, ms) for p, ms in panels if ms]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    colors = method_colors(methods)
    dense = [r["dense_metric"] for r in rows if r.get("dense_metric") is not None]
    for ax, (panel, chosen) in zip(axes[0], panels, strict=True):
        for method in chosen:
            pts = sorted(
                (float(r[x]), float(r["metric"]), float(r.get("metric_std") or 0.0))
                for r in rows
                if r.get("method", "kprune") == method
            )
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=[p[2] for p in pts],
                marker="o",
                ms=4,
                capsize=2,
                color=colors[method],
                lw=2.2 if method == "kprune" else 1.2,
                label=method,
            )
        if dense:
            ax.axhline(dense[0], color="grey", ls="--", lw=1, label="dense teacher")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _panel_grid(count: int, columns: int, size: tuple[float, float]):
    """A figure of ``count`` subplots, ``columns`` to a row (0: one row), each ``size``
    inches; the grid's spare cells hidden. Returns (figure, 2-D axes array)."""
    plt = _plt()
    cols = min(columns or count, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    return fig, axes


def curves_plot(
    panels: Sequence[dict],
    path: str | Path,
    title: str = "",
    labels: tuple[str, str, str] = ("", "", ""),
    columns: int = 0,
) -> None:
    """One subplot per panel: ``lines`` ({label, x, y}) on the left axis and, where a panel
    has them, ``twin`` lines ({label, x, y}; dashed grey, labelled at their end) on a right
    axis, and an optional ``hline`` (a dashed reference value, e.g. 1 for a ratio).
    ``labels``: (x axis, left axis, right axis); ``columns``: panels per row (0: all in one
    row)."""
    fig, axes = _panel_grid(len(panels), columns, (5.6, 4.2))
    colors = method_colors(sorted({line["label"] for p in panels for line in p["lines"]}))
    for ax, panel in zip(axes.flat, panels, strict=False):
        for line in panel["lines"]:
            ax.plot(line["x"], line["y"], marker="o", ms=3, color=colors[line["label"]],
                    label=line["label"])  # fmt: skip
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(panel.get("title", ""), fontsize=10)
        if panel.get("hline") is not None:
            ax.axhline(panel["hline"], color="grey", ls="--", lw=1)
        ax.legend(fontsize=7, loc="lower left")
        if panel.get("twin"):
            right = ax.twinx()
            for line in panel["twin"]:
                right.plot(line["x"], line["y"], ls="--", color="grey", lw=1)
                right.annotate(line["label"], (line["x"][-1], line["y"][-1]), fontsize=7,
                               color="grey", ha="right", va="bottom")  # fmt: skip
            right.set_ylabel(labels[2])
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def bars_plot(
    panels: Sequence[dict],
    path: str | Path,
    title: str = "",
    ylabel: str = "",
    columns: int = 0,
) -> None:
    """Grouped bars, one subplot per panel: ``groups`` (the x tick labels), ``series``
    ({label, values}; one bar per group, NaN: none) and an optional ``ref`` ({label: value},
    each a dashed line, e.g. the dense model); the value is written above each bar.
    ``columns``: panels per row (0: all in one row)."""
    import numpy as np

    fig, axes = _panel_grid(len(panels), columns, (5.6, 3.9))
    for ax, panel in zip(axes.flat, panels, strict=False):
        groups, series = panel["groups"], panel["series"]
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(groups))
        shown = []
        for i, one in enumerate(series):
            bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, one["values"], width,
                          color=PALETTE[i % len(PALETTE)], label=one["label"])  # fmt: skip
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
            shown += [v for v in one["values"] if v == v]
        for j, (name, value) in enumerate((panel.get("ref") or {}).items()):
            ax.axhline(value, color=PALETTE[j % len(PALETTE)], ls="--", lw=1, label=name)
            shown.append(value)
        if shown:  # bars of close values: start the axis near them, not at zero
            low, high = min(shown), max(shown)
            ax.set_ylim(low - 0.15 * (high - low + 0.01), high + 0.12 * (high - low + 0.01))
        ax.set_xticks(x, groups, fontsize=7, rotation=15)
        ax.set_ylabel(ylabel)
        ax.set_title(panel.get("title", ""), fontsize=10)
    handles, names = axes.flat[0].get_legend_handles_labels()  # one legend: the same series
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)


def heatmap_plot(
    panels: Sequence[dict],
    path: str | Path,
    title: str = "",
    labels: tuple[str, str] = ("", ""),
    span: float | None = None,
) -> None:
    """One heat map per panel: ``values`` [rows][cols] (NaN: not measured) coloured on one
    scale across panels (at most ``span`` wide, down from the best), each cell annotated with
    ``labels`` [rows][cols]; ``marks`` maps (row, col) to a short tag drawn in the cell's
    corner (e.g. the default, the best). ``labels``: (x axis, y axis)."""
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
    finite = [v for p in panels for row in p["values"] for v in row if v == v]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    lo = max(lo, hi - span) if span else lo  # collapsed cells saturate, the rest stays legible
    for ax, panel in zip(axes[0], panels, strict=True):
        values = np.array(panel["values"], dtype=float)
        image = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi, origin="lower")
        ax.set_xticks(range(len(panel["cols"])), [str(c) for c in panel["cols"]])
        ax.set_yticks(range(len(panel["rows"])), [str(r) for r in panel["rows"]])
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(panel.get("title", ""), fontsize=10)
        mid = (lo + hi) / 2
        for i, row in enumerate(panel["labels"]):
            for j, text in enumerate(row):
                dark = values[i, j] == values[i, j] and values[i, j] < mid
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
        for (i, j), tag in panel.get("marks", {}).items():
            ax.text(j - 0.45, i - 0.45, tag, ha="left", va="bottom", fontsize=6, color="red")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def pareto_plot(
    frame,
    teacher_metric: float,
    max_drop: float,
    metric: str,
    runtime: str,
    path: str | Path,
) -> None:
    """Dev metric against latency of every candidate of a target search: the Pareto front
    joined, the tolerance as a line, the chosen point starred (``frame``: the trace)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    stages = {"teacher": "black", "estimate": "C0", "confirm": "C1", "recipe": "C2"}
    timed = frame[frame["latency_ms"].notna() & frame["metric"].notna()]
    for stage, color in stages.items():
        part = timed[timed["stage"] == stage]
        if len(part):
            ax.scatter(part["latency_ms"], part["metric"], color=color, s=22, label=stage)
    front = timed[timed["pareto"]].sort_values("latency_ms")
    ax.plot(front["latency_ms"], front["metric"], color="grey", lw=1, label="Pareto front")
    chosen = timed[timed["chosen"]]
    ax.scatter(
        chosen["latency_ms"], chosen["metric"], marker="*", s=220, color="gold",
        edgecolors="black", zorder=5, label="chosen",
    )  # fmt: skip
    ax.axhline(teacher_metric - max_drop / 100, color="red", ls="--", lw=1, label="tolerance")
    ax.set_xlabel(f"latency (ms) on {runtime}; the teacher in torch")
    ax.set_ylabel(f"dev {metric}")
    ax.legend(fontsize=8)
    ax.set_title(f"candidates within {max_drop:g} points of the teacher")
    fig.tight_layout()
    _save(fig, path)
