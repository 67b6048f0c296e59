"""SparseBERT rows of the benchmark: metric, nonzero encoder weights, FLOPs, training time and
CPU latency (sparse kernels) of each sparsify method, beside K-prune.

One row per (task, method, sparsity, reduction, seed) is appended to docs/sparse.csv as it
finishes (resumable: a finished row of this code is not run again); docs/sparse.md and
docs/plots/sparse_<task>.png are rewritten from the CSV and the K-prune rows of
docs/benchmarks.csv. Runs go in the order that answers the first question first: SparseBERT
at 0.9 and K-prune + SparseBERT on every task, then the other sparsities, then the ablations.
Latency: the sparse model with CSR kernels (kprune.sparse.kernels) and with ordinary dense
matmuls, against the dense teacher, in torch, length 128, ``--threads`` threads; time it with
the cores to itself, or train on busy cores and ``--retime`` later (each row's model is kept
under ``--store``).

  python -m bench.sparse                                  # the whole plan
  python -m bench.sparse --tasks rt --plan sparsebert:0.9
  python -m bench.sparse --tasks trec6 --plan sparsebert:0.9 --set logit_weight=0.17
  python -m bench.sparse --retime                         # every kept row's latency again
  python -m bench.sparse --retime --tasks trec6 --plan kprune+sparsebert:0.8:0.6  # one row
  python -m bench.sparse --report-only
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.models import BATCHES, cached_kprune, cached_onnx, latencies
from bench.rows import append_row, is_busy, is_stale, read_rows, utc_stamp, write_rows
from kprune.atomic import write_text
from kprune.data.tasks import REGISTRY
from kprune.entry import run_main
from kprune.errors import KPruneError
from kprune.report import COMBINED, sparse_summary

TASKS = tuple(REGISTRY)
# method:sparsity[:reduction], in the order they run
PLAN = (
    "sparsebert:0.9",
    f"{COMBINED}:0.8:0.6",
    "sparsebert:0.8",
    "sparsebert:0.95",
    "sparsebert-from-teacher:0.9",
    "sparsebert-no-kd:0.9",
    "sparsebert-logits-kd:0.9",
)
ABLATION_PLOT, LATENCY_PLOT = "sparse_ablations.png", "sparse_latency.png"  # under plots/
COLUMNS = [
    "task",
    "method",
    "sparsity",
    "reduction",
    "seed",
    "metric_name",
    "dev",
    "test",
    "dense_dev",
    "dense_test",
    "nonzero_params",
    "matrix_params",
    "flops_kept",
    "train_seconds",
    "epochs",
    "knobs",
    "latency_ms_b1",
    "latency_ms_b32",
    "dense_kernel_ms_b1",
    "dense_kernel_ms_b32",
    "dense_latency_ms_b1",
    "dense_latency_ms_b32",
    "ort_ms_b1",
    "ort_ms_b32",
    "dense_ort_ms_b1",
    "dense_ort_ms_b32",
    "kernel",
    "dev_curve",
    "code_digest",
    "finished_at",
    "threads",
    "load_1m",
    "retimed_at",
]


def parse_plan(text: str) -> list[tuple[str, float, float]]:
    """``method:sparsity[:reduction]`` items -> (method, sparsity, reduction or 0)."""
    from kprune.pruning.methods import SPARSIFY_METHODS

    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            method, sparsity = parts[0], float(parts[1])
            reduction = float(parts[2]) if len(parts) > 2 else 0.0
        except (IndexError, ValueError):
            raise KPruneError(
                f"--plan item {item!r} is not METHOD:SPARSITY[:REDUCTION], e.g. sparsebert:0.9"
            ) from None
        if method not in SPARSIFY_METHODS and method != COMBINED:
            raise KPruneError(f"--plan method {method!r} is not a sparsify method")
        if (method == COMBINED) != (reduction > 0):
            raise KPruneError(f"--plan item {item!r}: only {COMBINED} takes a reduction")
        out.append((method, sparsity, reduction))
    return out


# knobs with a flag or a plan field of their own, not settable through --set
_OWN_FLAGS = ("method", "sparsity", "seed", "epochs")


def _knob_types() -> dict:
    """Each SparsifyConfig knob's name -> its value type (the default's), for --set and the
    ``knobs`` column alike."""
    import dataclasses

    from kprune.config import SparsifyConfig

    return {f.name: type(f.default) for f in dataclasses.fields(SparsifyConfig)}


def parse_knobs(items: list[str] | None, methods: list[str]) -> str:
    """``--set KEY=VALUE`` items -> the row's ``knobs`` text ("k=v;k=v", sorted, values in
    their knob's type; empty for none). Refused: a name that is not a sparsify knob, one that
    has its own flag, a value of the wrong type or holding the column's separator ';', and a
    knob a planned method sets itself (the method would silently win)."""
    from kprune.config import SparsifyConfig
    from kprune.pruning.methods import SPARSIFY_METHODS

    kinds = _knob_types()
    knobs = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in kinds or name in _OWN_FLAGS:
            settable = ", ".join(n for n in kinds if n not in _OWN_FLAGS)
            raise KPruneError(f"--set {item!r} is not KNOB=VALUE with a knob of: {settable}")
        if ";" in text:
            raise KPruneError(f"--set {item!r}: a value may not hold ';'; rename the folder")
        kind = kinds[name]
        try:
            knobs[name] = kind(text)
        except ValueError:
            kind_name = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise KPruneError(f"--set {item!r}: {name} takes {kind_name}") from None
        for m in methods:
            if name in SPARSIFY_METHODS[m].overrides:
                raise KPruneError(f"--set {name}: method {m} sets it itself; plan another method")
    SparsifyConfig(**knobs)  # the config's own bounds, in its one-line error
    return ";".join(f"{k}={knobs[k]}" for k in sorted(knobs))


def knobs_of(text: str) -> dict:
    """The SparsifyConfig keyword arguments of a row's ``knobs`` text."""
    kinds = _knob_types()
    pairs = (kv.split("=", 1) for kv in str(text or "").split(";") if kv)
    return {k: kinds[k](v) for k, v in pairs}


def _key(task, method, sparsity, reduction, seed, epochs, knobs="") -> tuple:
    return (
        task,
        method,
        round(float(sparsity), 4),
        round(float(reduction or 0), 4),
        int(seed),
        round(float(epochs), 3),
        str(knobs or ""),
    )


KEY = ("task", "method", "sparsity", "reduction", "seed", "epochs", "knobs")


def _row_key(row: dict) -> tuple:
    return _key(*(row.get(c) for c in KEY))


def row_epochs(row: dict) -> float:
    """The training epochs of a row (rows from before that column: the config's default)."""
    from kprune.config import SparsifyConfig

    return float(row.get("epochs") or SparsifyConfig().epochs)


def label(row: dict) -> str:
    """The row's method, with its epochs where they are not the default's and the knobs it
    set."""
    from kprune.config import SparsifyConfig

    epochs = row_epochs(row)
    text = row["method"] + ("" if epochs == SparsifyConfig().epochs else f" ({epochs:g} ep)")
    return text + (f" [{row['knobs']}]" if row.get("knobs") else "")


def longest_seed0(rows: list[dict], task: str, keep=lambda row: True) -> tuple[list[dict], float]:
    """The task's seed-0 rows that ``keep`` admits and were trained for the longest epochs
    among them (the shorter runs belong to the epochs study in docs/sparsebert.md), and those
    epochs (0 if none)."""
    mine = [r for r in rows if r["task"] == task and str(r["seed"]) == "0" and keep(r)]
    longest = max((row_epochs(r) for r in mine), default=0)
    return [r for r in mine if row_epochs(r) == longest], longest


def _epochs(args) -> float:
    """The training epochs of this invocation's rows (--epochs, or the config's default)."""
    from kprune.config import SparsifyConfig

    return float(args.epochs or SparsifyConfig().epochs)


def _model_dir(args, task, method, sparsity, reduction, seed, epochs, knobs="") -> Path:
    """Where a row's sparse model is kept, so that its latency can be measured again."""
    name = f"{task}-{method}-s{sparsity}-R{reduction}-seed{seed}-e{float(epochs):g}"
    if knobs:
        name += "-" + str(knobs).replace(";", "-")
    return Path(args.store) / "models" / name


def curve(report: dict) -> list[list[float]]:
    """[fraction of training, sparsity, dev metric] after each epoch of a sparsify report
    (older reports lack the sparsity: the schedule's value at the last mask raise)."""
    from kprune.sparse.schedule import cubic_sparsity, update_steps

    cfg, total, m = report["config"], report["steps"], report["metric"]
    raises = update_steps(total, cfg["mask_updates"]) if report["sparsity"] > 0 else []
    out = []
    for h in report["history"]:
        done = [u for u in raises if u <= h["step"]]
        s = h.get("sparsity", cubic_sparsity(done[-1], total, report["sparsity"]) if done else 0)
        out.append([round(h["step"] / total, 4), round(s, 4), h["dev"][m]])
    return out


def fill_curves(args, csv_path: Path) -> int:
    """Give rows written before the dev_curve column theirs, from their kept model's
    report.json; returns how many."""
    rows, filled = read_rows(csv_path), 0
    for r in rows:
        keep = _model_dir(args, *(r.get(c) for c in KEY))
        if not r.get("dev_curve") and (keep / "report.json").is_file():
            r["dev_curve"] = json.dumps(curve(json.loads((keep / "report.json").read_text())))
            filled += 1
    if filled:
        write_rows(csv_path, rows, COLUMNS)
    return filled


def timings(args, keep: Path, teacher: Path) -> dict:
    """A row's latency columns, from its kept model folder ``keep``: the sparse model with
    ordinary dense matmuls (for K-prune + SparseBERT: the pruned architecture's speed), with
    CSR kernels, and in ONNX Runtime (fp32, fused graph: dense initializers, so zeros cost
    what other weights cost); the dense teacher in torch and in ONNX Runtime; with the threads
    and the 1-minute load they were measured under."""
    import torch

    from kprune.deploy.export import OrtModel
    from kprune.models.checkpoint import load_model
    from kprune.sparse.kernels import use_sparse_kernels

    graphs = {
        "ort": cached_onnx(keep, keep / "onnx" / "model.onnx"),
        "dense_ort": cached_onnx(
            teacher, Path(args.store) / f"{teacher.name}-dense" / "model.onnx"
        ),
    }
    model = load_model(keep)
    with torch.no_grad():
        ms = {
            "dense_kernel": latencies(model, args.repeats, args.threads),
            "latency": latencies(use_sparse_kernels(model, "csr"), args.repeats, args.threads),
            "dense_latency": latencies(load_model(teacher), args.repeats, args.threads),
        }
        for name, path in graphs.items():
            session = OrtModel(path, threads=args.threads)
            session.config = model.config  # latency_ms draws token ids from the vocabulary
            ms[name] = latencies(session, args.repeats, args.threads)
    row = {"kernel": "csr", "threads": args.threads, "load_1m": round(os.getloadavg()[0], 2)}
    for name, by_batch in ms.items():
        for b in BATCHES:
            row[f"{name}_ms_b{b}"] = by_batch[b]
    return row


def run_one(
    args, task: str, method: str, sparsity: float, reduction: float, seed: int, knobs: str = ""
) -> dict:
    """Train one sparse model, keep it, and measure it; returns its row."""
    from flows.keys import code_digest
    from kprune.config import SparsifyConfig
    from kprune.data.tasks import load_task
    from kprune.sparse.sparsebert import save_sparse, sparsify

    teacher = Path(args.teachers) / task
    start = None
    if reduction:
        start = cached_kprune(
            args.store, args.teachers, task, reduction, args.tokens, seed, args.data_dir,
            args.device,
        )  # fmt: skip
    name = "sparsebert" if start is not None else method
    cfg = SparsifyConfig(
        method=name, sparsity=sparsity, seed=seed, epochs=_epochs(args), **knobs_of(knobs)
    )
    model, report = sparsify(
        teacher, load_task(task, args.data_dir), cfg, start, device=args.device
    )
    keep = _model_dir(args, task, method, sparsity, reduction, seed, cfg.epochs, knobs)
    save_sparse(model, keep, report)
    s = sparse_summary(report)
    return {
        "task": task,
        "method": s["method"],
        "sparsity": sparsity,
        "reduction": reduction,
        "seed": seed,
        "metric_name": s["metric"],
        "dev": s["metric_after"],
        "test": s["test_after"],
        "dense_dev": s["metric_before"],
        "dense_test": s["test_before"],
        "nonzero_params": s["matrix_nonzero"],
        "matrix_params": s["matrix_params"],
        "flops_kept": s["flops_kept"],
        "train_seconds": s["train_seconds"],
        "epochs": cfg.epochs,
        "knobs": knobs,
        "dev_curve": json.dumps(curve(report)),
        "code_digest": code_digest()[:12],
        "finished_at": utc_stamp(),
        **timings(args, keep, teacher),
    }


def retime(args, csv_path: Path, wanted=lambda row: True) -> int:
    """Measure again the latency of every ``wanted`` row whose model is kept (run it with the
    cores to itself: rows trained while other work ran have inflated times, and the 1-minute
    load at a row's end does not always show it) and stamp it ``retimed_at``; returns the
    rows retimed."""

    rows, done = read_rows(csv_path), 0
    for r in rows:
        if not wanted(r):
            continue
        keep = _model_dir(args, *(r.get(c) for c in KEY))
        if not keep.is_dir():
            print(f"{r['task']} {r['method']} {r['sparsity']}: no kept model at {keep}; skipped")
            continue
        r.update(timings(args, keep, Path(args.teachers) / r["task"]))
        r["retimed_at"] = utc_stamp()
        write_rows(csv_path, rows, COLUMNS)
        done += 1
    return done


def kprune_points(bench_csv: Path, teachers_root: Path, dims_of) -> list[dict]:
    """K-prune's seed-0 rows of the grid with their nonzero encoder weights (every kept
    unit's weights; a structurally pruned model has no zeros of its own)."""
    import json

    points = []
    for r in read_rows(bench_csv):
        if r["method"] != "kprune" or str(r["seed"]) != "0" or is_stale(r):
            continue
        if not r.get("heads_kept") or not (Path(teachers_root) / r["task"]).is_dir():
            continue
        head_dim, hidden = dims_of(r["task"])
        heads, neurons = json.loads(r["heads_kept"]), json.loads(r["neurons_kept"])
        nonzero = 4 * head_dim * hidden * sum(heads) + 2 * hidden * sum(neurons)
        points.append({**r, "nonzero_params": nonzero})
    return points


def teacher_dims(teachers: Path, task: str) -> tuple[int, int]:
    """(head dim, hidden) of a task's teacher."""
    import json

    c = json.loads((teachers / task / "config.json").read_text())
    hidden = c.get("hidden_size") or c["dim"]
    return hidden // (c.get("num_attention_heads") or c["n_heads"]), hidden


def dense_matrix_params(rows: list[dict]) -> float:
    """The dense encoder's matrix weights: the largest matrix_params of the rows (a student
    at reduction 0 keeps every matrix; a K-prune student has fewer); NaN if none says."""
    sizes = [float(r["matrix_params"]) for r in rows if r.get("matrix_params")]
    return max(sizes, default=float("nan"))


def write_report(
    rows: list[dict], out_md: Path, bench_csv: Path, plots: Path, teachers: Path
) -> None:
    """docs/sparse.md: the table of every row and, per task, metric against nonzero encoder
    weights for K-prune (grid rows), SparseBERT and the combination."""
    from kprune.plots import metric_vs_flops_plot

    dense_m = dense_matrix_params(rows) / 1e6
    lines = [
        "# SparseBERT beside K-prune",
        "",
        "Generated by `python -m bench.sparse` from `sparse.csv` beside this file. Test split "
        "(dev in brackets); nonzero: weights of the encoder's attention and FFN matrices that "
        f"are not zero ({dense_m:.1f} M when dense); latency: median ms of one forward pass, "
        "length 128, of the sparse model in torch with CSR kernels / in torch with ordinary "
        "dense matmuls (for K-prune + SparseBERT: the pruned architecture) / in ONNX Runtime "
        "(fp32, fused graph), then of the dense teacher in torch / in ONNX Runtime. "
        "Rows timed with a 1-minute load above threads + 1 are marked *busy* "
        "(`--retime` measures them again from their kept models; `--tasks`/`--plan` pick "
        "which); rows so measured again, with the cores to themselves, are marked *retimed*.",
        "",
        "| task | method | sparsity | R | seed | test (dev) | dense test | nonzero M | FLOPs kept "
        "| train s | ms b1 csr / dense-kernel / ORT; teacher / teacher ORT "
        "| ms b32 csr / dense-kernel / ORT; teacher / teacher ORT |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(r: dict, b: int) -> str:
        def cells(*names: str) -> str:
            return " / ".join(
                f"{float(r[c]):.1f}" if r.get(c) else "–" for c in (f"{n}_ms_b{b}" for n in names)
            )

        return f"{cells('latency', 'dense_kernel', 'ort')}; {cells('dense_latency', 'dense_ort')}"

    for r in sorted(rows, key=lambda r: (r["task"], label(r), float(r["sparsity"]))):
        lines.append(
            f"| {r['task']} | {label(r)} | {r['sparsity']} | {r['reduction']} | {r['seed']} "
            f"| {float(r['test']):.4f} ({float(r['dev']):.4f}) | {float(r['dense_test']):.4f} "
            f"| {int(float(r['nonzero_params'])) / 1e6:.2f} | {float(r['flops_kept']):.3f} "
            f"| {float(r['train_seconds']):.0f} | {ms(r, 1)} | {ms(r, 32)}"
            f"{' busy' if is_busy(r) else ''}{' retimed' if r.get('retimed_at') else ''} |"
        )
    points = kprune_points(bench_csv, teachers, lambda t: teacher_dims(teachers, t))
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task and str(r["seed"]) == "0"]
        pts = [
            {
                "method": label(r),
                "nonzero_m": int(float(r["nonzero_params"])) / 1e6,
                "metric": float(r["test"]),
                "dense_metric": float(r["dense_test"]),
            }
            for r in mine
            if r["method"] in ("sparsebert", COMBINED)
        ]
        pts += [
            {
                "method": "kprune",
                "nonzero_m": p["nonzero_params"] / 1e6,
                "metric": float(p["metric"]),
                "dense_metric": float(p["dense_metric"]),
            }
            for p in points
            if p["task"] == task
        ]
        if pts:
            path = plots / f"sparse_{task}.png"
            metric_vs_flops_plot(
                pts,
                mine[0]["metric_name"],
                path,
                f"{task}: metric against nonzero encoder weights",
                x="nonzero_m",
                xlabel="nonzero encoder matrix weights (M)",
            )
            lines += ["", f"![{task}](plots/{path.name})"]
    ablations = ablation_plot_of(rows, plots / ABLATION_PLOT)
    if ablations:
        lines += [
            "",
            "The recipe against each ablation, test and dev (dashed: the dense teacher):",
            "",
            f"![ablations](plots/{ablations.name})",
        ]
    curves = curves_plot_of(rows, plots / "sparse_curves.png")
    if curves:
        lines += [
            "",
            "Dev metric after each epoch against the fraction of training done (dashed, right "
            "axis: the sparsity reached):",
            "",
            f"![curves](plots/{curves.name})",
        ]
    speed = latency_plot_of(rows, plots / LATENCY_PLOT)
    if speed:
        lines += [
            "",
            "The recipe's latency with CSR kernels divided by the dense teacher's, timed in the "
            "same row (dashed: equal time; rows marked *busy* above are less reliable):",
            "",
            f"![latency](plots/{speed.name})",
        ]
    write_text(out_md, "\n".join(lines) + "\n")


def ablation_plot_of(rows: list[dict], path: Path) -> Path | None:
    """Per task, the test and dev metric of the recipe (``sparsebert``) and each ablation at
    the sparsity the ablations ran at, seed 0, the task's longest training, no extra knobs,
    against the dense teacher: what each part of the method buys. None where no task has
    the recipe and an ablation at one sparsity."""
    from kprune.plots import bars_plot
    from kprune.pruning.methods import SPARSIFY_METHODS

    methods = list(SPARSIFY_METHODS)  # the recipe first, then the ablations
    panels = []
    for task in sorted({r["task"] for r in rows}):
        mine, _ = longest_seed0(rows, task, lambda r: r["method"] in methods and not r.get("knobs"))
        cells = {(r["method"], float(r["sparsity"])): r for r in mine}
        ablated = sorted({s for m, s in cells if m != methods[0] and (methods[0], s) in cells})
        if not ablated:
            continue
        sparsity = ablated[-1]
        shown = [m for m in methods if (m, sparsity) in cells]
        first = cells[(methods[0], sparsity)]
        panels.append(
            {
                "title": f"{task}: {first['metric_name']} at sparsity {sparsity:g}",
                "groups": shown,
                "series": [
                    {"label": split, "values": [float(cells[(m, sparsity)][split]) for m in shown]}
                    for split in ("test", "dev")
                ],
                "ref": {
                    "dense test": float(first["dense_test"]),
                    "dense dev": float(first["dense_dev"]),
                },
            }
        )
    if not panels:
        return None
    bars_plot(
        panels,
        path,
        "SparseBERT: the recipe against each ablation (seed 0)",
        "metric",
        columns=2,
    )
    return path


def latency_panels(rows: list[dict]) -> list[dict]:
    """The recipe's speed against the dense model, per batch size and per way of running the
    teacher (torch, ONNX Runtime): one line per task of CSR time / the teacher's time in the
    same row (the same cores at the same moment) against sparsity; seed 0, the task's longest
    training, no extra knobs. Below 1 the sparse model is the faster."""
    series: dict[tuple[int, str], list[dict]] = {}
    for task in sorted({r["task"] for r in rows}):
        mine, _ = longest_seed0(
            rows, task, lambda r: r["method"] == "sparsebert" and not r.get("knobs")
        )
        for b in BATCHES:
            for teacher, column in (("torch", "dense_latency"), ("ONNX Runtime", "dense_ort")):
                points = sorted(
                    (
                        float(r["sparsity"]),
                        float(r[f"latency_ms_b{b}"]) / float(r[f"{column}_ms_b{b}"]),
                    )
                    for r in mine
                    if r.get(f"latency_ms_b{b}") and r.get(f"{column}_ms_b{b}")
                )
                if points:
                    series.setdefault((b, teacher), []).append(
                        {"label": task, "x": [x for x, _ in points], "y": [y for _, y in points]}
                    )
    return [
        {"title": f"batch {b}: CSR against the teacher in {teacher}", "lines": lines, "hline": 1.0}
        for (b, teacher), lines in series.items()
    ]


def latency_plot_of(rows: list[dict], path: Path) -> Path | None:
    """``latency_panels`` drawn, or None where no row has the timings."""
    from kprune.plots import curves_plot

    panels = latency_panels(rows)
    if not panels:
        return None
    curves_plot(
        panels,
        path,
        "SparseBERT with CSR kernels: time relative to the dense teacher (below 1: faster)",
        ("sparsity", "CSR time / teacher time", ""),
        columns=2,
    )
    return path


def curves_plot_of(rows: list[dict], path: Path) -> Path | None:
    """Per task, the dev curve of every seed-0 row trained for the task's longest epochs
    (``longest_seed0``), with the sparsity schedule drawn once per sparsity; None if no row
    has a curve."""
    from kprune.plots import curves_plot

    panels = []
    for task in sorted({r["task"] for r in rows}):
        mine, longest = longest_seed0(rows, task, lambda r: bool(r.get("dev_curve")))
        lines, twins = [], {}
        for r in sorted(mine, key=lambda r: (label(r), float(r["sparsity"]))):
            pts = json.loads(r["dev_curve"])
            name = f"{label(r)} {float(r['sparsity']):g}"
            lines.append({"label": name, "x": [p[0] for p in pts], "y": [p[2] for p in pts]})
            twins.setdefault(
                f"s={float(r['sparsity']):g}",
                {"x": [p[0] for p in pts], "y": [p[1] for p in pts]},
            )
        if lines:
            twin = [{"label": k, **v} for k, v in sorted(twins.items())]
            panels.append({"title": f"{task} ({longest:g} epochs)", "lines": lines, "twin": twin})
    if not panels:
        return None
    curves_plot(
        panels,
        path,
        "SparseBERT: dev metric during training (seed 0)",
        ("fraction of training", "dev metric", "sparsity (dashed)"),
        columns=2,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.sparse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tasks", help=f"comma-separated (default: {','.join(TASKS)})")
    p.add_argument(
        "--plan",
        help=f"METHOD:SPARSITY[:R],... run in order (default: {','.join(PLAN)}); with --retime "
        "and --tasks: which rows to retime",
    )
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=float, help="override sparsify.epochs")
    p.add_argument(
        "--set",
        action="append",
        metavar="KNOB=VALUE",
        help="another sparsify knob for every planned row (repeatable), e.g. logit_weight=0.17; "
        "the rows carry it in their knobs column and label",
    )
    p.add_argument("--tokens", type=int, default=32_000, help="K-prune sample of the combination")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--teachers", default="data/teachers")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--store", default="data/sparse-bench", help="cached K-prune models")
    p.add_argument("--out", default="docs/sparse", help="writes OUT.csv and OUT.md")
    p.add_argument("--benchmarks", default="docs/benchmarks.csv", help="K-prune grid rows")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--retime",
        action="store_true",
        help="only measure again the latency of every row whose model is kept (quiet cores); "
        "--tasks and --plan, when given, narrow it to their rows",
    )
    args = p.parse_args(argv)

    def go() -> None:
        csv_path, md = Path(f"{args.out}.csv"), Path(f"{args.out}.md")
        plan = parse_plan(args.plan or ",".join(PLAN))
        tasks = (args.tasks or ",".join(TASKS)).split(",")
        knobs = parse_knobs(args.set, [("sparsebert" if r else m) for m, _, r in plan])
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.retime:
            cells = {(m, round(s, 6), round(r, 6)) for m, s, r in plan}

            def wanted(row: dict) -> bool:
                cell = (row["method"], round(float(row["sparsity"]), 6))
                cell += (round(float(row["reduction"] or 0), 6),)
                return (not args.tasks or row["task"] in tasks) and (not args.plan or cell in cells)

            print(f"sparse: {retime(args, csv_path, wanted)} rows retimed")
        elif not args.report_only:
            for method, sparsity, reduction in plan:
                for task in tasks:
                    for seed in seeds:
                        done = {_row_key(r) for r in read_rows(csv_path)}
                        key = _key(task, method, sparsity, reduction, seed, _epochs(args), knobs)
                        if key in done:
                            continue
                        row = run_one(args, task, method, sparsity, reduction, seed, knobs)
                        append_row(csv_path, row, COLUMNS)
                        print(
                            f"{task:12s} {method:24s} s={sparsity} R={reduction} "
                            f"test={row['test']:.4f} nonzero={row['nonzero_params']} "
                            f"{row['train_seconds']:.0f} s",
                            flush=True,
                        )
        fill_curves(args, csv_path)
        rows = read_rows(csv_path)
        if rows:
            plots = md.parent / "plots"
            write_report(rows, md, Path(args.benchmarks), plots, Path(args.teachers))
        print(f"sparse: {len(rows)} rows -> {md}")

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
