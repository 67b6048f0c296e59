"""How many sample tokens K-prune needs: the default method at several sample sizes, four
tasks, R = 0.6 and 0.8, seeds 0-2; metric (dev and test) and pruning time against tokens.

Each run is a row of the benchmark grid (`python -m bench`'s worker: one process per run,
timed, evaluated on dev and test), appended to docs/tokens.csv as it finishes (resumable: a
finished row of this code's score scale is not run again). The grid's own K-prune rows at its
sample size (docs/benchmarks.csv) are the same runs: they are copied in instead of run again.
Order: seed 0 at every size first (a stopped study still spans the sizes), then seeds 1, 2.
docs/tokens.md (mean ± std over seeds, the smallest size within the seeds' spread of the
largest) and docs/plots/tokens_<task>.png are rewritten from the CSV.

  python -m bench.tokens                                   # the whole study
  python -m bench.tokens --tasks rt --seeds 0 --tokens 8000,32000
  python -m bench.tokens --report-only
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from bench.rows import (
    COLUMNS,
    TEACHERS,
    TEACHERS_HELP,
    append_row,
    is_busy,
    is_stale,
    read_rows,
    tokens_asked,
)
from kprune.entry import run_main
from kprune.errors import KPruneError

TOKENS = (8_000, 16_000, 32_000, 64_000, 100_000)
REDUCTIONS = (0.6, 0.8)
METHOD = "kprune"


def copy_grid_rows(grid_csv: Path, csv_path: Path, tasks, reductions, seeds) -> int:
    """Copy the grid's current-scale K-prune rows of the study's cells into ``csv_path``
    (those it does not hold yet); returns how many."""
    have = {
        (r["task"], float(r["reduction"]), int(r["seed"]), tokens_asked(r))
        for r in read_rows(csv_path)
        if not is_stale(r)
    }
    copied = 0
    for r in read_rows(grid_csv):
        key = (r["task"], float(r["reduction"]), int(r["seed"]), tokens_asked(r))
        if (
            r["method"] == METHOD
            and not is_stale(r)
            and key[0] in tasks
            and key[1] in reductions
            and key[2] in seeds
            and key not in have
        ):
            append_row(csv_path, {**r, "same_run_as": r.get("same_run_as") or ""}, COLUMNS)
            have.add(key)
            copied += 1
    return copied


def whole_split(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Per task whose training split a sample size exhausts: (the smallest asked size known
    to draw the whole split, its token count). A size that asks for more examples than the
    split holds takes all of them (``kprune.data.sample.choose_examples``), whatever the seed; seen
    when two runs of one (task, R) at other seeds or other sizes drew the same number of
    tokens and got the same metric (two different samples would not)."""
    runs: dict[tuple, set[tuple[int, int]]] = {}
    for r in rows:
        if r["method"] == METHOD and not is_stale(r) and not r.get("same_run_as"):
            key = (r["task"], r["reduction"], int(float(r["tokens"])), r["metric"])
            runs.setdefault(key, set()).add((tokens_asked(r), int(r["seed"])))
    out: dict[str, tuple[int, int]] = {}
    for (task, _, got, _), seen in runs.items():
        smallest = min(asked for asked, _ in seen)
        if len(seen) > 1 and (task not in out or smallest < out[task][0]):
            out[task] = (smallest, got)
    return out


def copy_whole_split_runs(csv_path: Path, tasks, reductions, seed: int, size: int) -> int:
    """Rows for the (task, R) cells at ``seed`` and ``size`` whose sample is the whole
    training split, copied from a finished run on that same sample instead of run again:
    the sample does not depend on the seed then, and the default method draws nothing else
    at random. Marked in ``same_run_as``; returns how many."""
    rows = [r for r in read_rows(csv_path) if r["method"] == METHOD and not is_stale(r)]
    exhausted = whole_split(rows)
    copied = 0
    for task in tasks:
        if task not in exhausted or size < exhausted[task][0]:
            continue
        got = exhausted[task][1]
        for red in reductions:
            cell = [r for r in rows if r["task"] == task and float(r["reduction"]) == red]
            if any(int(r["seed"]) == seed and tokens_asked(r) == size for r in cell):
                continue
            same = [r for r in cell if int(float(r["tokens"])) == got and not r.get("same_run_as")]
            if not same:
                continue
            src = same[0]
            twin = f"seed {src['seed']} at {tokens_asked(src)} tokens (the whole split)"
            append_row(
                csv_path,
                {**src, "seed": seed, "tokens_asked": size, "same_run_as": twin},
                COLUMNS,
            )
            copied += 1
    return copied


def _run_id(r: dict) -> tuple:
    return (r["task"], r["method"], float(r["reduction"]), int(r["seed"]), r["finished_at"])


def summary(rows: list[dict], copied: list[dict] = ()) -> list[dict]:
    """Per (task, reduction, tokens asked): the seeds' mean and std of test and dev, and the
    median pruning seconds of the study's own runs timed on quiet cores. A whole-split copy
    is not a run of its own, and rows copied from the grid (``copied``: its rows) ran at other
    times, on machines whose speed differs (the grid's 32K rows ran on a faster CPU): both
    count for the metric, not the time."""
    elsewhere = {_run_id(r) for r in copied}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] == METHOD and not is_stale(r):
            groups.setdefault((r["task"], float(r["reduction"]), tokens_asked(r)), []).append(r)
    out = []
    for (task, red, tokens), part in sorted(groups.items()):

        def stat(col: str, part=part) -> tuple[float, float]:
            xs = [float(r[col]) for r in part if r.get(col) not in (None, "")]
            if not xs:
                return float("nan"), float("nan")
            return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

        quiet = [
            float(r["prune_seconds"])
            for r in part
            if not is_busy(r) and _run_id(r) not in elsewhere and not r.get("same_run_as")
        ]
        test, test_sd = stat("metric")
        dev, dev_sd = stat("dev_metric")
        out.append(
            {
                "task": task,
                "reduction": red,
                "tokens": tokens,
                "seeds": sorted(int(r["seed"]) for r in part),
                "test": test,
                "test_std": test_sd,
                "dev": dev,
                "dev_std": dev_sd,
                "seconds": statistics.median(quiet) if quiet else float("nan"),
                "metric_name": part[0]["metric_name"],
                "dense_metric": float(part[0]["dense_metric"]),
            }
        )
    return out


def enough(cells: list[dict], split: str = "dev") -> int | None:
    """The smallest sample size whose mean ``split`` metric is within the seeds' spread (one
    std, at least 0.005) of the largest size's; None with fewer than two sizes."""
    cells = sorted(cells, key=lambda c: c["tokens"])
    if len(cells) < 2:
        return None
    top = cells[-1]
    spread = max(top[f"{split}_std"], 0.005)
    return next(c["tokens"] for c in cells if c[split] >= top[split] - spread)


def write_report(rows: list[dict], out: Path, copied: list[dict] = ()) -> list[Path]:
    """tokens.md and one plot per task (metric against tokens, one line per R); ``copied``:
    the grid's rows, left out of the time column."""
    from kprune.atomic import write_text
    from kprune.plots import metric_vs_flops_plot

    cells = summary(rows, copied)
    lines = [
        "# Sample size: how many tokens K-prune needs",
        "",
        "Generated by `python -m bench.tokens` from `tokens.csv` beside this file. The default "
        "method (iterative K-prune, paper defaults), one run per seed; mean ± std over the "
        "seeds listed; seconds: median pruning time of the study's own runs that ended with the "
        "cores to themselves (evaluation not included; runs copied from the grid ran "
        "on other machines, so they give the metric, not the time: – where only "
        "they exist). *Enough*: the smallest size whose mean dev "
        "metric is within one std (at least 0.005) of the largest size's.",
        "",
        "| task | R | tokens | seeds | dev | test | prune s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        secs = "–" if math.isnan(c["seconds"]) else f"{c['seconds']:.0f}"
        lines.append(
            f"| {c['task']} | {c['reduction']:g} | {c['tokens']:,} | {c['seeds']} "
            f"| {c['dev']:.4f} ± {c['dev_std']:.4f} | {c['test']:.4f} ± {c['test_std']:.4f} "
            f"| {secs} |"
        )
    for task, (size, got) in sorted(whole_split(rows).items()):
        lines += [
            "",
            f"{task}: {size:,} tokens and more draw the whole training split ({got:,} tokens), "
            "the same sample whatever the seed, so their std is 0; seeds not run there are "
            "copies of a run on it (`same_run_as` in the CSV).",
        ]
    lines += ["", "| task | R | enough on dev | largest size run |", "|---|---|---|---|"]
    paths = []
    for task in sorted({c["task"] for c in cells}):
        mine = [c for c in cells if c["task"] == task]
        for red in sorted({c["reduction"] for c in mine}):
            at = [c for c in mine if c["reduction"] == red]
            got = enough(at)
            lines.append(
                f"| {task} | {red:g} | {f'{got:,}' if got else '–'} "
                f"| {max(c['tokens'] for c in at):,} |"
            )
        path = out / "plots" / f"tokens_{task}.png"
        metric_vs_flops_plot(
            [
                {
                    "method": f"R = {c['reduction']:g}",
                    "tokens_k": c["tokens"] / 1000,
                    "metric": c["test"],
                    "metric_std": c["test_std"],
                    "dense_metric": c["dense_metric"],
                }
                for c in mine
            ],
            mine[0]["metric_name"],
            path,
            f"{task}: test metric against sample size (mean ± std over seeds)",
            x="tokens_k",
            xlabel="sample tokens (thousands)",
        )
        paths.append(path)
    lines += [""] + [f"![{p.stem}](plots/{p.name})" for p in paths]
    notes = out / "tokens_notes.md"
    if notes.exists():
        lines += ["", "## Notes", "", notes.read_text()]
    md = out / "tokens.md"
    write_text(md, "\n".join(lines) + "\n")
    return [md, *paths]


def _items(text: str, cast) -> tuple:
    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise KPruneError(f"tokens: cannot read {text!r} ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.tokens",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--params", default="params.yaml", help="the bench section's threads etc.")
    p.add_argument("--tasks", default="rt,vader-movie,trec6,sms-spam")
    p.add_argument("--reductions", default=",".join(map(str, REDUCTIONS)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="sample sizes")
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default="data/tasks")
    p.add_argument("--out", default="docs", help="folder of tokens.csv/.md and plots")
    p.add_argument("--grid", default="docs/benchmarks.csv", help="rows to copy in, not rerun")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    def run() -> None:
        from bench.grid import run_bench
        from kprune.config import BenchConfig, load_section

        out = Path(args.out)
        csv_path = out / "tokens.csv"
        tasks, seeds = _items(args.tasks, str), _items(args.seeds, int)
        reductions, sizes = _items(args.reductions, float), _items(args.tokens, int)
        if any(t <= 0 for t in sizes) or any(not 0 < r < 1 for r in reductions):
            raise KPruneError("tokens: sizes must be positive and reductions in (0, 1)")
        if not args.report_only:
            base = load_section(args.params, "bench", BenchConfig)
            copy_grid_rows(Path(args.grid), csv_path, tasks, reductions, seeds)
            dense: dict[str, dict] = {}
            for seed in seeds:
                for size in sizes:
                    cfg = replace(
                        base,
                        tasks=tasks,
                        methods=(METHOD,),
                        reductions=reductions,
                        seeds=(seed,),
                        tokens=size,
                    )
                    copy_whole_split_runs(csv_path, tasks, reductions, seed, size)
                    run_bench(cfg, args.teachers, args.data_dir, out, csv_path, dense)
        rows = read_rows(csv_path)
        if not rows:
            raise KPruneError(f"tokens: no rows in {csv_path}; run without --report-only")
        paths = write_report(rows, out, read_rows(Path(args.grid)))
        print(f"tokens: {len(rows)} rows -> " + ", ".join(str(x) for x in paths))

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
