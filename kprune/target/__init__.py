"""Compression to a target: the fastest model whose dev metric stays within a tolerance of
the teacher's, on the runtime it will serve on (``kprune compress``).

    from kprune.target import compress
    outcome = compress("teacher/", "rt", out="small/", max_drop=1.0, runtime="ort-int8")

The search is in ``kprune.target.search``; the trace, its Pareto front and the summary in
``kprune.target.trace``.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path

from kprune.atomic import atomic_path
from kprune.config import PruneConfig, TargetConfig
from kprune.data.tasks import TaskData, load_task
from kprune.device import resolve_device
from kprune.target.search import FP32, Outcome, TargetSearch

MODEL_DIR = "model"


def compress(
    teacher: str | Path,
    task: TaskData | str,
    out: str | Path,
    config: PruneConfig | None = None,
    target: TargetConfig | None = None,
    device: str = "auto",
    progress: bool = True,
    **knobs,
) -> Outcome:
    """Search the fastest model within ``target.max_drop`` points of ``teacher``'s dev metric
    on ``config.latency``'s runtime and write it to ``out``: the pruned folder (``model/``),
    for ONNX Runtime its graph (``model.onnx``, and ``model.int8.onnx`` under the chosen
    recipe), the trace (``trace.csv``, ``trace.png``) and the summary (``target.json``).
    ``knobs``: target knobs (``max_drop``, ...) or pruning knobs (``tokens``, ``runtime``,
    ...) by name. When no candidate passes, the closest one is written, with its drop."""
    from kprune.models.checkpoint import check_task_fits, load_model, save_pruned
    from kprune.models.loading import load_tokenizer
    from kprune.plots import pareto_plot
    from kprune.target.trace import PLOT, summary, trace_frame, write_summary, write_trace

    names = {f.name for f in dataclasses.fields(TargetConfig)}
    target = dataclasses.replace(
        target or TargetConfig(), **{k: v for k, v in knobs.items() if k in names}
    )
    config = (config or PruneConfig()).replace(**{k: v for k, v in knobs.items() if k not in names})
    task = load_task(task) if isinstance(task, str) else task
    model = load_model(teacher)
    tokenizer = load_tokenizer(str(teacher))
    check_task_fits(model, task)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compress-", dir=out.parent) as work:
        search = TargetSearch(
            model, tokenizer, task, config, target, Path(work), resolve_device(device), progress
        )
        outcome = search.run()
        graph = search.chosen_graph(outcome)
        with atomic_path(out, is_dir=True) as tmp:
            chosen = outcome.chosen
            report = copy.deepcopy(outcome.pruned.report)
            report.update(teacher=str(teacher), target=dataclasses.asdict(chosen))
            save_pruned(outcome.pruned.model, tmp / MODEL_DIR, tokenizer=tokenizer, report=report)
            if graph is not None:
                shutil.copyfile(outcome.pruned.fp32, tmp / "model.onnx")
                if chosen.recipe != FP32:
                    shutil.copyfile(graph, tmp / "model.int8.onnx")
            write_trace(outcome, tmp)
            record = summary(outcome, dataclasses.asdict(target), dataclasses.asdict(search.rt))
            record["teacher"] = str(teacher)
            write_summary(record, tmp)
            pareto_plot(
                trace_frame(outcome),
                outcome.teacher_metric,
                target.max_drop,
                outcome.metric_name,
                search.rt.key,
                tmp / PLOT,
            )
    return outcome
