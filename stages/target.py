"""Stage target: the fastest model within ``target.max_drop`` points of the teacher's dev
metric on the runtime of the ``latency`` section -> folder (``kprune.target.compress``: the
pruned model, its ONNX graphs, trace.csv, trace.png, target.json).

Searched when ``compress.target`` is true; otherwise the folder holds only a target.json that
says nothing was searched. It times every candidate: run it with the cores to itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from kprune.atomic import atomic_path, write_json
from kprune.config import PruneConfig, TargetConfig, prune_config, section
from kprune.data.tasks import load_task
from kprune.target import compress
from kprune.target.trace import SUMMARY
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="the teacher folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="output folder")


def make(
    teacher: str,
    task_name: str,
    data_dir: str | None,
    out: str,
    cfg: PruneConfig,
    target: TargetConfig,
    metric: str = "",
    device: str = "auto",
) -> dict:
    """Search into folder ``out`` (the dev ``metric``: empty, the task's own); returns the
    summary written to its target.json."""
    task = load_task(task_name, data_dir, metric=metric or None)
    compress(teacher, task, out, cfg, target, device, progress=True)
    return json.loads((Path(out) / SUMMARY).read_text())


def not_asked(out: str) -> dict:
    """The folder of a pipeline that did not ask for a target: a target.json saying so."""
    record = {"searched": False, "why": "compress.target is false in params.yaml"}
    with atomic_path(Path(out), is_dir=True) as tmp:
        write_json(tmp / SUMMARY, record)
    return record


def run(args) -> None:
    if not section(args.params, "compress").target:
        record = not_asked(args.out)
        print(f"target: not searched ({record['why']}) -> {args.out}")
        return
    record = make(
        args.teacher,
        args.task,
        args.data_dir,
        args.out,
        prune_config(args.params),
        section(args.params, "target"),
        section(args.params, "evaluate").metric,
        args.device,
    )
    c = record["chosen"]
    print(
        f"target: R = {c['reduction']:.3f} ({c['mode']}), recipe {c['recipe']}, dev "
        f"{record['metric']} {c['metric']:.4f} (drop {c['drop']:.2f} of {record['max_drop']:g} "
        f"points{'' if record['passed'] else ', NOT within'}), {c['speedup']:.2f}x -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
