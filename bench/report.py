"""Turn docs/benchmarks.csv into docs/benchmarks.md (mean ± std tables) and PNG plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.rows import COLUMNS, TEACHERS, is_stale, main_model, model_of
from kprune.atomic import write_text
from kprune.plots import metric_vs_flops_plot

TEXT = (
    "task",
    "method",
    "metric_name",
    "same_run_as",
    "code",
    "finished_at",
    "heads_kept",
    "neurons_kept",
)
NUMERIC = tuple(c for c in COLUMNS if c not in TEXT)
BASELINES = ("kwon", "magnitude", "random")


def headline(df: pd.DataFrame) -> list[str]:
    """K-prune's mean metric against each baseline's, per task and reduction, over the seeds
    that K-prune has there (a rerun in progress compares like with like): where it is at or
    above, and every place it is not."""
    key = ["task", "reduction", "seed"]
    ran = df[df["method"] == "kprune"][key].drop_duplicates()
    df = df.merge(ran, on=key)
    means = df.groupby(["task", "reduction", "method"])["metric"].mean()
    wins, cells, below, undefined = 0, 0, [], 0
    for (task, reduction), part in means.groupby(level=[0, 1]):
        got = part.droplevel([0, 1])
        if "kprune" not in got:
            continue
        for base in BASELINES:
            if base not in got:
                continue
            if pd.isna(got[base]) or pd.isna(got["kprune"]):
                undefined += 1
                continue
            cells += 1
            if got["kprune"] >= got[base]:
                wins += 1
            else:
                below.append(
                    f"{task} R={reduction:.1f}: kprune {got['kprune']:.4f} < {base} {got[base]:.4f}"
                )
    if not cells:
        return []
    lines = [
        "## K-prune against the baselines",
        "",
        f"K-prune's mean is at or above the baseline's in {wins} of {cells} "
        "(task, reduction, baseline) comparisons, each over the seeds K-prune has there"
        + (" (all of them)." if wins == cells else "; below in:"),
        "",
    ]
    lines += [f"- {b}" for b in below] + ([""] if below else [])
    if undefined:
        lines += [
            f"Left out: {undefined} comparison(s) where a metric is undefined (every seed NaN: "
            "a Spearman correlation of constant predictions).",
            "",
        ]
    return lines


def ablation_table(df: pd.DataFrame) -> list[str]:
    """Each ablation's metric minus K-prune's on the same (task, reduction, seed) runs: over
    all of them, and the mean at each reduction (where a component starts to matter)."""
    reductions = sorted(df["reduction"].unique())
    lines = []
    for method in sorted(m for m in df["method"].unique() if m.startswith("kprune-")):
        diff = -paired_diff(df, method)
        if not len(diff):
            continue
        per_r = diff.groupby(level="reduction").mean()
        by_r = " | ".join(f"{per_r[r]:+.4f}" if r in per_r else "" for r in reductions)
        lines.append(
            f"| {method} | {len(diff)} | {diff.mean():+.4f} | {by_r} | {diff.min():+.4f} | "
            f"{diff.max():+.4f} | {int((diff > 0).sum())} |"
            + (" the default |" if is_default_twin(df, method) else " |")
        )
    if not lines:
        return []
    r_heads = " | ".join(f"R={r:g}" for r in reductions)
    return [
        "## Ablations against K-prune",
        "",
        "Metric of the ablation minus K-prune's on the same task, reduction and seed "
        "(negative: the component helps); the R columns are the mean at each reduction.",
        "",
        f"| ablation | runs | mean Δ | {r_heads} | min Δ | max Δ | runs above K-prune | |",
        "|---|---|---|" + "---|" * len(reductions) + "---|---|---|---|",
        *lines,
        "",
    ]


def paired_diff(df: pd.DataFrame, method: str) -> pd.Series:
    """K-prune's metric minus ``method``'s on every (task, reduction, seed) both ran."""
    key = ["task", "reduction", "seed"]
    base = df[df["method"] == "kprune"].set_index(key)["metric"]
    other = df[df["method"] == method].set_index(key)["metric"]
    both = base.index.intersection(other.index)
    return base[both] - other[both]


def kprune_lead(df: pd.DataFrame, method: str) -> pd.Series:
    """``paired_diff`` in points, NaN metrics dropped."""
    return (paired_diff(df, method) * 100).dropna()


def is_default_twin(df: pd.DataFrame, method: str) -> bool:
    """Every row of ``method`` is K-prune's own run reported under a second name."""
    return bool((df[df["method"] == method]["same_run_as"] == "kprune").all())


def lead_cell(d: pd.Series) -> str:
    """Mean lead (seeds or runs where K-prune is ahead / all; single-run range)."""
    if not len(d):
        return ""
    ahead = int((d > 0).sum())
    spread = f"; {d.min():+.2f} to {d.max():+.2f}" if len(d) > 1 else ""
    return f"{d.mean():+.2f} ({ahead}/{len(d)}{spread})"


def paired_table(df: pd.DataFrame, method: str, title: str, what: str) -> list[str]:
    """K-prune's metric minus ``method``'s on the same task, reduction and seed, per task and
    reduction: the mean difference in points, the seeds where K-prune is ahead, and the
    largest single-seed gap either way (is a mean difference bigger than the seeds' spread?)."""
    diff = kprune_lead(df, method)
    if not len(diff):
        return []
    reductions = sorted(diff.index.get_level_values("reduction").unique())
    lines = [
        f"## {title}",
        "",
        f"K-prune's test metric minus {what}'s ({method}) on the same task, reduction and seed, "
        "in points: the mean over seeds, then (seeds where K-prune is ahead / seeds) and the "
        "single-seed range. Positive: K-prune is better.",
        "",
        "| task | " + " | ".join(f"R={r:g}" for r in reductions) + " | all R |",
        "|---|" + "---|" * (len(reductions) + 1),
    ]
    for task, part in diff.groupby(level="task"):
        by_r = part.groupby(level="reduction")
        cells = [lead_cell(by_r.get_group(r)) if r in by_r.groups else "" for r in reductions]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {lead_cell(part)} |")
    by_r = diff.groupby(level="reduction")
    lines.append(
        "| all tasks | "
        + " | ".join(lead_cell(by_r.get_group(r)) for r in reductions)
        + f" | {lead_cell(diff)} |"
    )
    return [*lines, ""]


def component_table(df: pd.DataFrame) -> list[str]:
    """Per ablation and task, K-prune's lead over every reduction and seed both ran: which
    component matters on which task."""
    ablations = sorted(
        m for m in df["method"].unique() if m.startswith("kprune-") and not is_default_twin(df, m)
    )
    leads = {m: kprune_lead(df, m) for m in ablations}
    leads = {m: d for m, d in leads.items() if len(d)}
    if not leads:
        return []
    tasks = sorted(df["task"].unique())
    lines = [
        "## Each ablation per task",
        "",
        "K-prune's test metric minus the ablation's, in points, over every reduction and seed "
        "both ran on the task: mean (runs where K-prune is ahead / runs; single-run range). "
        "Positive: what K-prune has and the ablation lacks helps there.",
        "",
        "| ablation | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for m, d in leads.items():
        present = set(d.index.get_level_values("task"))
        cells = [lead_cell(d.xs(t, level="task")) if t in present else "" for t in tasks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def over_budget(df: pd.DataFrame, tol: float = 1e-6) -> list[str]:
    """Lines naming the runs that kept more FLOPs than their reduction allows (a method that
    misses the budget is compared on unequal terms)."""
    over = df[df["flops_kept"] > 1.0 - df["reduction"] + tol]
    if not len(over):
        return []
    lines = [
        f"**{len(over)} of {len(df)} runs kept more FLOPs than their budget** (1 - R); "
        "their metrics are not comparable with the others':",
        "",
    ]
    for r in over.sort_values(["method", "task", "reduction", "seed"]).itertuples():
        lines.append(
            f"- {r.task} {r.method} R={r.reduction:g} seed {int(r.seed)}: "
            f"{r.flops_kept:.4f} of the FLOPs kept (budget {1 - r.reduction:.4f})"
        )
    return [*lines, ""]


def sparse_section(out: Path, teachers: Path) -> list[str]:
    """The unstructured rows of ``out``/sparse.csv (``python -m bench.sparse``) beside the
    grid's K-prune: per method, sparsity and R, each task's test metric with its nonzero
    encoder weights, and K-prune's seed-0 grid rows at each R (``teachers`` gives
    their dimensions); then sparse_notes.md."""
    from bench.rows import read_rows
    from bench.sparse_report import (
        ABLATION_PLOT,
        LATENCY_PLOT,
        dense_matrix_params,
        kprune_points,
        label,
        teacher_dims,
    )

    model = model_of(teachers)
    rows = [
        r for r in read_rows(out / "sparse.csv") if str(r["seed"]) == "0" and r["model"] == model
    ]
    if not rows:
        return []
    tasks = sorted({r["task"] for r in rows})
    dense_m = dense_matrix_params(rows) / 1e6
    lines = [
        "## Unstructured pruning: SparseBERT beside K-prune",
        "",
        "From [sparse.csv](sparse.csv) (`python -m bench.sparse`; every row and its latency in "
        "[sparse.md](sparse.md)), seed 0. Each cell: test metric (nonzero encoder matrix "
        f"weights, M; the dense encoder has {dense_m:.1f} M); K-prune: the grid's seed-0 runs "
        "(every kept unit's weights counted).",
        "",
        "| method | sparsity | R | " + " | ".join(tasks) + " |",
        "|---|---|---|" + "---|" * len(tasks),
    ]
    dense = {r["task"]: float(r["dense_test"]) for r in rows}
    lines.append(
        "| dense teacher | 0 | 0 | "
        + " | ".join(f"{dense[t]:.4f} ({dense_m:.1f})" for t in tasks)
        + " |"
    )
    keys = sorted({(label(r), float(r["sparsity"]), float(r["reduction"])) for r in rows})
    for method, sparsity, reduction in keys:
        cells = []
        for t in tasks:
            hit = [
                r
                for r in rows
                if r["task"] == t
                and (label(r), float(r["sparsity"]), float(r["reduction"]))
                == (method, sparsity, reduction)
            ]
            cells.append(
                f"{float(hit[0]['test']):.4f} ({int(float(hit[0]['nonzero_params'])) / 1e6:.2f})"
                if hit
                else "–"
            )
        lines.append(f"| {method} | {sparsity:g} | {reduction:g} | " + " | ".join(cells) + " |")
    points = kprune_points(out / "benchmarks.csv", teachers, lambda t: teacher_dims(teachers, t))
    for reduction in sorted({float(p["reduction"]) for p in points}):
        got = {p["task"]: p for p in points if abs(float(p["reduction"]) - reduction) < 1e-9}
        if any(t in got for t in tasks):
            cells = [
                f"{float(got[t]['metric']):.4f} ({got[t]['nonzero_params'] / 1e6:.2f})"
                if t in got
                else "–"
                for t in tasks
            ]
            lines.append(f"| kprune | 0 | {reduction:g} | " + " | ".join(cells) + " |")
    lines += ["", " ".join(f"![{t}](plots/sparse_{t}.png)" for t in tasks), ""]
    for name, alt in ((ABLATION_PLOT, "the recipe against each ablation"),
                      (LATENCY_PLOT, "CSR time over the dense teacher's")):  # fmt: skip
        if (out / "plots" / name).exists():
            lines += [f"![{alt}](plots/{name})", ""]
    notes = out / "sparse_notes.md"
    if notes.exists():
        lines += [notes.read_text(), ""]
    return lines


def write_report(rows: list[dict], out: Path, teachers: Path = Path(TEACHERS)) -> list[Path]:
    """benchmarks.md from the rows of the main base model (``main_model``; with the SparseBERT
    section and benchmarks_notes.md), and benchmarks-<model>.md for each other base model's
    rows: a page never mixes two models' teachers."""
    main = main_model(rows, teachers)
    if model_of(teachers) != main:  # the SparseBERT section reads the main model's teachers
        teachers = Path(TEACHERS)
    paths = [out / "benchmarks.csv"] if rows else []
    for model in sorted({r["model"] for r in rows}, key=lambda m: (m != main, m)):
        mine = [r for r in rows if r["model"] == model]
        paths += model_page(mine, out, teachers if model == main else None, model)
    return paths


def model_page(rows: list[dict], out: Path, teachers: Path | None, model: str) -> list[Path]:
    """One base model's page (``teachers`` None: not the main model's, benchmarks-<model>.md
    without the SparseBERT section and the notes); its path and its figures' paths."""
    suffix = "" if teachers is not None else f"-{model}"
    stale = [r for r in rows if is_stale(r)]
    df = pd.DataFrame([r for r in rows if not is_stale(r)], columns=list(COLUMNS))
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else float("nan")
    for col in TEXT:
        df[col] = df[col].fillna("") if col in df else ""
    paths = []
    lines = [
        f"# Benchmarks: {model} teachers",
        "",
        "Generated by `python -m bench` from `benchmarks.csv` beside this file; "
        "every number comes from a measured run on this machine (2 CPU cores, "
        "latency at length 128 with 2 threads, median of repeated runs).",
        "",
    ]
    if stale:
        codes = ", ".join(sorted({r.get("code") or "?" for r in stale}))
        lines += [
            f"**{len(stale)} stale rows left out**: K-prune rows (kprune and its ablations) "
            "measured with an older score scale (code digests "
            f"{codes}: head K_rep and paper-form K_pred not on the published scale that "
            "kprune.pruning.knowledge.SCORE_SCALE now names). They stay in benchmarks.csv, are rerun by the bench, and appear in "
            "no table, plot or conclusion here.",
            "",
        ]
    codes = sorted(c for c in df["code"].unique() if c)
    if codes:
        lines += [f"kprune source digest(s) of the runs: {', '.join(codes)}.", ""]
    twins = df[df["same_run_as"] != ""]
    if len(twins):
        pairs = sorted(
            {f"`{m}` = `{t}`" for m, t in zip(twins.method, twins.same_run_as, strict=True)}
        )
        lines += [
            "Same computation under two names (the row is the one run, reported under both): "
            + ", ".join(pairs)
            + ".",
            "",
        ]
    busy = df[df["load_1m"] > df["threads"] + 1.0]
    if len(busy):
        lines += [
            f"{len(busy)} of {len(df)} runs ended with a 1-minute load average above the "
            "thread count + 1 (something else used the cores): their seconds and latencies "
            "are inflated; their metrics are not affected.",
            "",
        ]
    lines += over_budget(df) + headline(df) + ablation_table(df)
    lines += paired_table(
        df, "kprune-no-kpms", "What KPMS buys, per task", "a uniform per-layer ratio"
    )
    lines += component_table(df)
    for task, part in df.groupby("task"):
        metric = part["metric_name"].iloc[0]
        dense = part["dense_metric"].iloc[0]
        lines += [
            f"## {task} ({metric} on the test split; dense teacher {dense:.4f})",
            "",
            f"Sample: {int(part['tokens'].median())} tokens; seeds "
            f"{sorted(part['seed'].astype(int).unique().tolist())}; ± is the std over "
            "seeds.",
            "",
        ]
        table = part.groupby(["method", "reduction"])["metric"].agg(
            ["mean", "std", "count", "size"]
        )
        pivot = table.reset_index().pivot(index="method", columns="reduction")
        reductions = sorted(part["reduction"].unique())
        lines.append("| method | " + " | ".join(f"R={r:.1f}" for r in reductions) + " |")
        lines.append("|---|" + "---|" * len(reductions))
        for method in pivot.index:
            cells = []
            for r in reductions:
                mean, std, n, runs = (
                    pivot.loc[method, (k, r)] for k in ("mean", "std", "count", "size")
                )
                if pd.isna(runs) or runs == 0:
                    cells.append("–")
                elif pd.isna(mean):
                    cells.append("undefined")
                else:
                    cells.append(f"{mean:.4f}" + (f" ± {std:.4f}" if n > 1 else ""))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        speed = part.groupby("method")[["prune_seconds", "peak_rss_mb"]].mean()
        lat = part.assign(speedup=part["dense_latency_ms_b32"] / part["latency_ms_b32"])
        sp = lat.groupby(["method", "reduction"])["speedup"].mean().unstack()
        lines += [
            "",
            "| method | prune s (mean) | peak RSS MB | "
            + " | ".join(f"speedup b32 R={r:.1f}" for r in reductions)
            + " |",
            "|---|---|---|" + "---|" * len(reductions),
        ]
        for method in speed.index:
            cells = [
                f"{sp.loc[method, r]:.2f}x"
                if r in sp.columns and not pd.isna(sp.loc[method, r])
                else "–"
                for r in reductions
            ]
            lines.append(
                f"| {method} | {speed.loc[method, 'prune_seconds']:.1f} | "
                f"{speed.loc[method, 'peak_rss_mb']:.0f} | " + " | ".join(cells) + " |"
            )
        lines.append("")
        grouped = part.groupby(["method", "reduction"])
        means = grouped.mean(numeric_only=True)
        stds = grouped["metric"].std().fillna(0.0)
        plot_rows = [
            {
                "method": method,
                "flops_kept": row.flops_kept,
                "metric": row.metric,
                "metric_std": stds[(method, reduction)],
                "dense_metric": dense,
            }
            for (method, reduction), row in means.iterrows()
        ]
        png = out / f"bench{suffix}_{task}.png"
        ablations = sorted(m for m in part["method"].unique() if m.startswith("kprune-"))
        metric_vs_flops_plot(
            plot_rows,
            metric,
            png,
            f"{task}: {metric} on the test split vs FLOPs kept (mean ± std over seeds)",
            panels=[
                ("K-prune and the baselines", ["kprune", *BASELINES]),
                ("K-prune and its ablations", ["kprune", *ablations]),
            ],
        )
        lines += [f"![{task}]({png.name})", ""]
        paths.append(png)
    md = out / f"benchmarks{suffix}.md"
    if teachers is not None:
        lines += sparse_section(out, teachers)
        notes = out / "benchmarks_notes.md"
        if notes.exists():
            lines += ["## Notes", "", notes.read_text()]
    write_text(md, "\n".join(lines) + "\n")
    return [md, *paths]
