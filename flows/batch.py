"""Compress many checkpoints x reductions concurrently, from a YAML list.

    python -m flows.batch batch.yaml                     # local threads
    python -m flows.batch batch.yaml --dask tcp://host:8786   # tasks on a Dask cluster
    python -m flows.batch batch.yaml --serve "0 3 * * *"      # a deployment on a cron schedule

batch.yaml:
    reductions: [0.4, 0.6]            # default for every checkpoint
    # (params.yaml compress.sparsify: true adds SparseBERT on each teacher and pruned model;
    # compress.target: true, the search for the fastest model within target.max_drop)
    checkpoints:
      - {checkpoint: data/teachers/minilm-l6/rt, task: rt}
      - {checkpoint: data/teachers/minilm-l6/trec6, task: trec6, reductions: [0.5]}

A failing checkpoint is retried (task retries), then reported; it does not stop the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows import settings
from flows import tasks as t
from flows.chain import measure_chain, reduction_chain, sparse_chain
from flows.compress import (
    format_sparse,
    format_table,
    format_target,
    sparse_row,
    summary_row,
    target_summary,
    task_files,
)
from flows.guard import flow_main
from kprune.config import from_mapping, prune_config, section, validate_params
from kprune.errors import KPruneError, first_line


@dataclass(frozen=True)
class Item:
    checkpoint: str
    task: str
    reductions: tuple[float, ...] = ()


@dataclass(frozen=True)
class BatchSpec:
    checkpoints: tuple[dict, ...] = ()
    reductions: tuple[float, ...] = (0.6,)


def read_batch(path: str) -> list[Item]:
    p = Path(path)
    if not p.is_file():
        raise KPruneError(f"batch file {p} does not exist; see `python -m flows.batch --help`")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise KPruneError(f"batch file {p} is not valid YAML ({exc})".splitlines()[0]) from None
    spec = from_mapping(BatchSpec, data if isinstance(data, dict) else {}, "batch")
    if not spec.checkpoints:
        raise KPruneError(f"batch file {p} lists no checkpoints")
    items = []
    for i, entry in enumerate(spec.checkpoints):
        item = from_mapping(Item, entry if isinstance(entry, dict) else {}, f"checkpoints[{i}]")
        items.append(Item(item.checkpoint, item.task, item.reductions or spec.reductions))
    return items


def _submit(task, *args):
    return task.submit(*args)


@flow(name="kprune-batch", task_runner=ThreadPoolTaskRunner(max_workers=4))
def batch(
    items: list[Item],
    params: str = "params.yaml",
    data_dir: str | None = None,
    device: str = "auto",
) -> dict:
    """Submit every checkpoint's chain of tasks (with SparseBERT when compress.sparsify is
    set); collect rows and failures."""
    cfg, ev, ex = prune_config(params), section(params, "evaluate"), section(params, "export")
    sparse_cfg = section(params, "sparsify") if section(params, "compress").sparsify else None
    # checkpoints run concurrently: a timing beside other tasks would time their load too, so
    # the evaluations leave it out and each pruned model is timed after everything else
    untimed = dataclasses.replace(ev, latency=False)
    store = str(settings.FLOW_DATA)  # the flow's, not a Dask worker's
    chains = []
    for item in items:
        ckpt = str(Path(item.checkpoint).resolve())
        files = task_files(item.task, data_dir)
        measured = measure_chain(_submit, ckpt, item.task, files, data_dir, cfg, device)
        sample, rep, pred = measured
        per_r = []
        for r in item.reductions:
            at_r = cfg.replace(reduction=r)
            masks, pruned, evaluation, exported = reduction_chain(
                _submit, ckpt, item.task, files, data_dir, measured, at_r, untimed, ex, device
            )
            per_r.append((r, masks, pruned, evaluation, exported))
        sparse = {}
        if sparse_cfg is not None:
            pruned_by_r = {r: pruned for r, _, pruned, _, _ in per_r}
            sparse = sparse_chain(
                _submit, ckpt, item.task, files, data_dir, pruned_by_r, sparse_cfg, device
            )
        chains.append((item, sample, rep, pred, per_r, sparse))
    for _, _, _, _, per_r, sparse in chains:  # every task first: nothing computes after
        for *_, exported in per_r:
            exported.wait()
        for fut in sparse.values():
            fut.wait()
    results: dict = {"ok": {}, "failed": {}, "sparse": {}, "target": {}}
    target_cfg = section(params, "target") if section(params, "compress").target else None
    for item, sample, rep, pred, per_r, sparse in chains:
        key = f"{item.checkpoint} ({item.task})"
        ckpt = str(Path(item.checkpoint).resolve())
        rows, errors = [], []
        for r, masks, pruned, evaluation, exported in per_r:
            if exported.state.is_completed():
                timed = None
                if ev.latency:  # one at a time, on cores nothing else uses
                    timed = t.timing.submit(ckpt, pruned.result(), ev, store)
                    timed.wait()
                rows.append(
                    summary_row(
                        r,
                        evaluation.result(),
                        pruned.result(),
                        masks.result(),
                        rep.result(),
                        pred.result(),
                        None,
                        None,
                        exported.result(),
                        timed.result() if timed is not None else None,
                    )
                )
            else:
                chain = [exported, evaluation, pruned, masks, pred, rep, sample]
                errors.append(f"r={r}: {_reason(chain)}")
        for r, fut in sparse.items():
            if fut.state.is_completed():
                results["sparse"].setdefault(key, []).append(sparse_row(r, fut.result()))
            else:
                errors.append(f"sparsify{'' if r is None else f' r={r}'}: {_reason([fut])}")
        if target_cfg is not None:  # it times its candidates: one search at a time, last
            found = t.target.submit(
                ckpt, item.task, task_files(item.task, data_dir), data_dir, cfg, target_cfg,
                ev.metric, device, store,
            )  # fmt: skip
            found.wait()
            if found.state.is_completed():
                results["target"][key] = target_summary(found.result())
            else:
                errors.append(f"target: {_reason([found])}")
        if rows:
            results["ok"][key] = rows
        if errors:
            results["failed"][key] = errors
    return results


def _reason(futures) -> str:
    """The first failed upstream state's message."""
    for fut in reversed(futures):
        state = fut.state
        if state.is_failed() or state.is_crashed():
            try:
                fut.result(raise_on_failure=True)
            except Exception as exc:
                return first_line(exc)
    return "did not complete"


def format_results(results: dict) -> str:
    lines = []
    for key, rows in results["ok"].items():
        lines.append(format_table(rows, key))
        if results.get("sparse", {}).get(key):
            lines.append(format_sparse(results["sparse"][key]))
    for key, record in results.get("target", {}).items():
        lines.append(f"{key} {format_target(record)}")
    for key, errors in results["failed"].items():
        lines.append(f"FAILED {key}: " + "; ".join(errors))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("batch_file", help="YAML list of checkpoints (see above)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dask", metavar="ADDRESS", help="run tasks on this Dask scheduler")
    p.add_argument("--workers", type=int, default=4, help="local concurrent tasks (threads)")
    p.add_argument("--serve", metavar="CRON", help="serve as a deployment on this cron schedule")
    args = p.parse_args(argv)

    def run() -> int:
        validate_params(args.params)
        items = read_batch(args.batch_file)
        runner = ThreadPoolTaskRunner(max_workers=args.workers)
        if args.dask:
            from prefect_dask import DaskTaskRunner

            runner = DaskTaskRunner(address=args.dask)
        job = batch.with_options(task_runner=runner)
        if args.serve:
            job.serve(
                name="kprune-batch",
                cron=args.serve,
                parameters={
                    "items": items,
                    "params": args.params,
                    "data_dir": args.data_dir,
                    "device": args.device,
                },
            )
            return 0
        results = job(items, args.params, args.data_dir, args.device)
        print(format_results(results))
        return 1 if results["failed"] else 0

    return flow_main(run)


if __name__ == "__main__":
    sys.exit(main())
