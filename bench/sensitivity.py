"""lambda/mu sensitivity of K-prune (the paper's open question 2), chosen on dev, reported on test.

For each task and seed: load the teacher, draw the sample, measure iteration 0 (K_pred and
K_rep of the teacher) and evaluate the dense model once; then for every reduction x lambda x
mu run the iterative loop from those shared scores (only iterations >= 1 depend on lambda
and mu), cut the model and evaluate it on dev and test. One row per setting is appended to
docs/sensitivity.csv as it finishes (resumable: a row of this code's score scale is not run
again); docs/sensitivity.md and one heat map per task are rewritten at the end.

  python -m bench.sensitivity                          # 4 tasks x R 0.6, 0.8 x 4 lambda x 4 mu
  python -m bench.sensitivity --tasks rt --reductions 0.6
  python -m bench.sensitivity --report-only
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from bench.rows import TEACHERS, TEACHERS_HELP, append_row, of_current_scale, read_rows, utc_stamp
from kprune.entry import run_main
from kprune.errors import KPruneError

LAMS = (0.0, 2.5e-5, 2.5e-4, 2.5e-3)
MUS = (16.0, 32.0, 64.0, 128.0)
DEFAULT = (2.5e-4, 64.0)  # the paper's
COLUMNS = [
    "task",
    "reduction",
    "lam",
    "mu",
    "seed",
    "tokens",
    "tokens_asked",
    "metric_name",
    "dev",
    "test",
    "dense_dev",
    "dense_test",
    "flops_kept",
    "heads_kept",
    "neurons_kept",
    "prune_seconds",
    "shared_seconds",
    "code_digest",
    "score_scale",
    "finished_at",
    "threads",
    "load_1m",
]


def _key(task, reduction, lam, mu, seed, tokens) -> tuple:
    return (task, round(float(reduction), 6), float(lam), float(mu), int(seed), int(tokens))


def done_keys(rows: list[dict]) -> set[tuple]:
    return {
        _key(r["task"], r["reduction"], r["lam"], r["mu"], r["seed"], r["tokens_asked"])
        for r in rows
        if of_current_scale(r)
    }


def sweep_task(task_name: str, seed: int, settings: list[tuple], args, csv_path: Path) -> int:
    """Every (reduction, lam, mu) of ``settings`` not yet in the CSV, from one shared sample
    and iteration-0 measurement; returns the number of rows written."""
    import torch

    from flows.keys import code_digest
    from kprune.config import PruneConfig
    from kprune.data.sample import task_sample
    from kprune.data.tasks import load_task
    from kprune.models.checkpoint import load_model
    from kprune.models.loading import load_tokenizer
    from kprune.pruning.assemble import cut, prune_and_tune
    from kprune.pruning.knowledge import SCORE_SCALE, MeasureSpec
    from kprune.pruning.score_tables import measure_knowledge
    from kprune.train.evaluation import evaluate_model

    done = done_keys(read_rows(csv_path))
    todo = [s for s in settings if _key(task_name, *s, seed, args.tokens) not in done]
    if not todo:
        return 0
    torch.set_num_threads(args.threads)
    teacher = Path(args.teachers) / task_name
    task = load_task(task_name, args.data_dir)
    tokenizer, model = load_tokenizer(str(teacher)), load_model(str(teacher))
    metric = task.spec.metric
    cfg = PruneConfig(tokens=args.tokens, seed=seed)
    cpu = torch.device("cpu")

    def score(m, split: str) -> float:
        return evaluate_model(m, tokenizer, task, split, cfg.sample.max_length, cpu)[metric]

    dense = {split: score(model, split) for split in ("dev", "test")}
    t0 = time.perf_counter()
    data = task_sample(model, tokenizer, task, cfg.sample, cpu)
    mspec = MeasureSpec.of(cfg, task.spec.kind)
    initial = measure_knowledge(model, data, mspec, cfg.sample.batch_size, cpu)
    shared = time.perf_counter() - t0
    code = code_digest()[:12]
    for reduction, lam, mu in todo:
        t = time.perf_counter()
        at = cfg.replace(reduction=reduction, lam=lam, mu=mu)
        tuned, masks, report, _ = prune_and_tune(
            copy.deepcopy(model), data, task.spec.kind, at, cpu, initial=initial, progress=False
        )
        pruned = cut(tuned, masks, report)
        seconds = time.perf_counter() - t
        row = {
            "task": task_name,
            "reduction": reduction,
            "lam": lam,
            "mu": mu,
            "seed": seed,
            "tokens": data.meta["tokens"],
            "tokens_asked": args.tokens,
            "metric_name": metric,
            "dev": score(pruned, "dev"),
            "test": score(pruned, "test"),
            "dense_dev": dense["dev"],
            "dense_test": dense["test"],
            "flops_kept": report["flops_kept"],
            "heads_kept": json.dumps(report["kept_heads_per_layer"]),
            "neurons_kept": json.dumps(report["kept_neurons_per_layer"]),
            "prune_seconds": round(seconds, 2),
            "shared_seconds": round(shared, 2),
            "code_digest": code,
            "score_scale": SCORE_SCALE,
            "finished_at": utc_stamp(),
            "threads": args.threads,
            "load_1m": round(os.getloadavg()[0], 2),
        }
        append_row(csv_path, row, COLUMNS)
        print(
            f"{task_name:12s} R={reduction:.1f} lam={lam:g} mu={mu:g} seed={seed} "
            f"dev={row['dev']:.4f} test={row['test']:.4f} {seconds:.0f}s",
            flush=True,
        )
    return len(todo)


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _grid(rows: list[dict], field: str, lams, mus) -> list[list[float]]:
    """Mean of ``field`` over seeds per (lam, mu): [lam][mu]."""
    out = []
    for lam in lams:
        line = []
        for mu in mus:
            vals = [_f(r[field]) for r in rows if _f(r["lam"]) == lam and _f(r["mu"]) == mu]
            line.append(sum(vals) / len(vals) if vals else math.nan)
        out.append(line)
    return out


def best_setting(rows: list[dict]) -> tuple[float, float] | None:
    """(lam, mu) with the highest mean dev metric over seeds (ties: the paper's default, then
    the smaller lam and mu)."""
    lams = sorted({_f(r["lam"]) for r in rows})
    mus = sorted({_f(r["mu"]) for r in rows})
    dev = _grid(rows, "dev", lams, mus)
    cells = [
        (dev[i][j], (lam, mu) == DEFAULT, -lam, -mu, (lam, mu))
        for i, lam in enumerate(lams)
        for j, mu in enumerate(mus)
        if dev[i][j] == dev[i][j]
    ]
    return max(cells)[-1] if cells else None


def write_report(rows: list[dict], out: Path) -> list[Path]:
    """sensitivity.md (per task and reduction: dev grid, best on dev, its test next to the
    default's) and sensitivity_<task>.png heat maps."""
    from kprune.atomic import write_text
    from kprune.plots import heatmap_plot

    rows = [r for r in rows if of_current_scale(r)]
    lines = [
        "# λ/μ sensitivity of K-prune",
        "",
        "Generated by `python -m bench.sensitivity` from `sensitivity.csv` beside this "
        "file. Each cell: the iterative K-prune loop with that λ (weight of K_rep) and μ "
        "(weight of heads), iteration 0 shared from one measurement of the teacher; metric "
        "mean over the seeds run. λ and μ are chosen on the **dev** split; test is reported "
        "for the choice. The paper's default is λ = 2.5e-4, μ = 64. Heat maps: colour spans the "
        "0.1 below the best cell (collapsed settings saturate dark).",
        "",
        "| task | R | seeds | default dev | default test | best on dev (λ, μ) | its dev | its test "
        "| test Δ vs default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    details, paths = [], []
    for task in sorted({r["task"] for r in rows}):
        part = [r for r in rows if r["task"] == task]
        lams = sorted({_f(r["lam"]) for r in part})
        mus = sorted({_f(r["mu"]) for r in part})
        panels = []
        for red in sorted({_f(r["reduction"]) for r in part}):
            cell = [r for r in part if _f(r["reduction"]) == red]
            dev, test = _grid(cell, "dev", lams, mus), _grid(cell, "test", lams, mus)
            best = best_setting(cell)
            seeds = sorted({int(r["seed"]) for r in cell})
            bi, bj = lams.index(best[0]), mus.index(best[1])
            d = (
                (lams.index(DEFAULT[0]), mus.index(DEFAULT[1]))
                if DEFAULT[0] in lams and (DEFAULT[1] in mus)
                else None
            )
            dd = f"{dev[d[0]][d[1]]:.4f}" if d else "–"
            dt = f"{test[d[0]][d[1]]:.4f}" if d else "–"
            delta = f"{test[bi][bj] - test[d[0]][d[1]]:+.4f}" if d else "–"
            lines.append(
                f"| {task} | {red:g} | {seeds} | {dd} | {dt} | ({best[0]:g}, {best[1]:g}) | "
                f"{dev[bi][bj]:.4f} | {test[bi][bj]:.4f} | {delta} |"
            )
            details += [
                f"### {task}, R = {red:g}: dev (test) {cell[0]['metric_name']}, rows λ, columns μ",
                "",
                "| λ \\ μ | " + " | ".join(f"{m:g}" for m in mus) + " |",
                "|---|" + "---|" * len(mus),
            ]
            for i, lam in enumerate(lams):
                details.append(
                    f"| {lam:g} | "
                    + " | ".join(
                        f"{dev[i][j]:.4f} ({test[i][j]:.4f})" if dev[i][j] == dev[i][j] else "–"
                        for j in range(len(mus))
                    )
                    + " |"
                )
            details.append("")
            marks = {(bi, bj): "best"}
            if d:
                marks[d] = "paper" if d != (bi, bj) else "best=paper"
            panels.append(
                {
                    "title": f"R = {red:g} (dev; test below)",
                    "rows": [f"{x:g}" for x in lams],
                    "cols": [f"{x:g}" for x in mus],
                    "values": dev,
                    "labels": [
                        [
                            f"{dev[i][j]:.3f}\n({test[i][j]:.3f})" if dev[i][j] == dev[i][j] else ""
                            for j in range(len(mus))
                        ]
                        for i in range(len(lams))
                    ],
                    "marks": marks,
                }
            )
        png = out / f"sensitivity_{task}.png"
        title = f"{task}: K-prune dev metric by λ and μ"
        heatmap_plot(panels, png, title, ("μ", "λ"), span=0.1)
        paths.append(png)
        details.append(f"![{task}](sensitivity_{task}.png)\n")
    busy = [r for r in rows if _f(r["load_1m"]) > _f(r["threads"]) + 1.0]
    quiet = [r for r in rows if r not in busy] or rows
    shared = {(r["task"], r["seed"]): _f(r["shared_seconds"]) for r in rows}
    if shared:
        s_mean = sum(shared.values()) / len(shared)
        p_med = statistics.median(_f(r["prune_seconds"]) for r in quiet)
        lines += [
            "",
            f"Cost: {len(rows)} settings; the shared part (sample + iteration-0 measurement) "
            f"took {s_mean:.1f} s per task and seed, once; each setting's loop took "
            f"{p_med:.1f} s (median over the {len(quiet)} settings that ended with the cores "
            "to themselves; evaluation not included). A full run is both.",
        ]
        if busy:
            lines.append(
                f"{len(busy)} of {len(rows)} settings ended with a 1-minute load average above "
                "the thread count + 1 (something else shared the cores): their seconds are "
                "inflated and left out of the median, their metrics are not affected."
            )
    notes = out / "sensitivity_notes.md"
    lines += ["", *details]
    if notes.exists():
        lines += ["## Notes", "", notes.read_text()]
    md = out / "sensitivity.md"
    write_text(md, "\n".join(lines) + "\n")
    return [md, *paths]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise KPruneError(f"sensitivity: cannot read {text!r} as numbers ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default="data/tasks")
    p.add_argument("--out", default="docs", help="folder of sensitivity.csv/.md and plots")
    p.add_argument("--tasks", default="rt,vader-movie,trec6,sms-spam", help="comma-separated")
    p.add_argument("--reductions", default="0.6,0.8", help="comma-separated")
    p.add_argument("--lams", default=",".join(map(str, LAMS)), help="comma-separated λ")
    p.add_argument("--mus", default=",".join(map(str, MUS)), help="comma-separated μ")
    p.add_argument("--seeds", default="0", help="comma-separated sample seeds")
    p.add_argument("--tokens", type=int, default=32_000, help="sample tokens (the grid's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="rewrite the report only")
    args = p.parse_args(argv)

    def run() -> None:
        out = Path(args.out)
        csv_path = out / "sensitivity.csv"
        if not args.report_only:
            settings = [
                (r, lam, mu)
                for r in _floats(args.reductions)
                for lam in _floats(args.lams)
                for mu in _floats(args.mus)
            ]
            for r, _, mu in settings:
                if not 0 <= r < 1 or mu < 0:
                    raise KPruneError(f"sensitivity: reduction {r} or mu {mu} out of range")
            for seed in (int(s) for s in _floats(args.seeds)):
                for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
                    sweep_task(task, seed, settings, args, csv_path)
        rows = read_rows(csv_path)
        if not rows:
            raise KPruneError(f"sensitivity: no rows in {csv_path}; run without --report-only")
        paths = write_report(rows, out)
        print(f"sensitivity: {len(rows)} rows -> " + ", ".join(str(x) for x in paths))

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
