"""Plots people would rather look at than read: kept units per layer, metric vs FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kprune.atomic import atomic_path


def _plt():
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


def metric_vs_flops_plot(
    rows: Sequence[dict], metric: str, path: str | Path, title: str = ""
) -> None:
    """Metric against the fraction of FLOPs kept; one line per ``method`` in ``rows``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    methods = sorted({r.get("method", "kprune") for r in rows})
    for method in methods:
        pts = sorted(
            (r["flops_kept"], r["metric"]) for r in rows if r.get("method", "kprune") == method
        )
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    dense = [r["dense_metric"] for r in rows if r.get("dense_metric") is not None]
    if dense:
        ax.axhline(dense[0], color="grey", ls="--", lw=1, label="dense teacher")
    ax.set_xlabel("fraction of FLOPs kept")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
