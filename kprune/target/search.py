"""The search for the fastest model within a metric tolerance, on the runtime it will serve on.

Shared by every candidate (measured once): the teacher's dev metric (the reference of the
tolerance) and its torch latency (the reference of the speed-up), the pruning sample with the
teacher's logits, the FLOPs model, K-prune's iteration-0 knowledge and, under a latency
budget, the latency table.

The reduction ``x`` (the FLOPs removed, or under a latency budget the predicted latency
removed: a speed-up of 1 / (1 - x)) is searched in two stages:

1. **estimate**: bisection over [0, max_reduction] with one-shot K-prune (one search on the
   shared scores, then the sublayer tuning with those masks), ``estimate_steps`` candidates;
2. **confirm**: the paper's iterative K-prune from the highest passing estimate upward by the
   bisection's last bracket, ``confirm_prunes`` candidates (downward while nothing passes).

One-shot is never better than iterative pruning at the same reduction in kprune's benchmarks
(docs/benchmarks.md), so the estimate's passing point is a floor the confirmation starts from.
A candidate passes when its dev metric *on the runtime* (the int8 graph for ``ort-int8``) is
within the tolerance; the fastest few passing ones are timed again side by side before the
fastest is chosen. For ``ort-int8`` every candidate is judged with the first recipe
(dynamic); afterwards the other recipes (static, fp32 fallback of single operators measured
one by one, then cumulatively in order of what each recovers) are tried on the fastest
failing iterative candidate above the chosen one, or on the closest one when none passes,
stopping at the first that passes. The test split is never read.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from kprune.config import PruneConfig, TargetConfig
from kprune.data.sample import SampleData, task_sample
from kprune.data.tasks import TaskData
from kprune.deploy.latency import graph_latency_ms, latency_ms, onnx_file
from kprune.deploy.quantize import Recipe, calibration_feeds, quantizable_nodes, quantize
from kprune.deploy.runtime import Runtime
from kprune.errors import KPruneError
from kprune.models.loading import frozen
from kprune.pruning.assemble import choose_masks, prune_and_tune
from kprune.pruning.flops import flops_of
from kprune.pruning.knowledge import MeasureSpec
from kprune.pruning.score_tables import measure_knowledge
from kprune.pruning.surgery import prune_model
from kprune.train.evaluation import evaluate_model

FP32 = "fp32"
FINAL_TOP = 4  # passing candidates timed again side by side before the choice
# how the chosen candidate is picked; a new rule makes measured rows of the old one stale
CHOICE = "side-by-side"


@dataclass
class Candidate:
    """One tried model: a row of the trace."""

    stage: str  # teacher, estimate, confirm or recipe
    reduction: float
    budget: str
    mode: str  # oneshot, iterative, or "" for the teacher
    runtime: str
    recipe: str  # fp32, dynamic, static, ...+fp32xN
    fallback: str  # the nodes kept in fp32, ';'-joined
    metric: float
    drop: float  # points: 100 x (teacher's dev metric - this one's)
    passes: bool
    latency_ms: float
    speedup: float  # over the dense teacher in torch at the same batch, length, threads
    flops_kept: float
    seconds: float
    index: int = 0
    # the passing candidates timed again side by side (round-robin) at the end: the choice
    final_ms: float = math.nan


@dataclass
class Pruned:
    """A pruned candidate kept for the recipe stage and the output."""

    model: nn.Module
    report: dict
    folder: Path  # its exported fp32 graph (ONNX runtimes) lives here
    fp32: Path | None = None
    graphs: dict[str, Path] = field(default_factory=dict)  # recipe name -> int8 graph


@dataclass
class Outcome:
    """What the search found: every candidate, the chosen one (the fastest passing, or the
    closest when none passes) and the shared costs."""

    candidates: list[Candidate]
    chosen: Candidate
    passed: bool
    teacher_metric: float
    metric_name: str
    dense_torch_ms: float
    seconds: dict[str, float]
    pruned: Pruned  # the chosen candidate's model and graphs


class TargetSearch:
    """One search: build it with the teacher and the task, then ``run()``."""

    def __init__(
        self,
        teacher: nn.Module,
        tokenizer,
        task: TaskData,
        prune_config: PruneConfig,
        target: TargetConfig,
        work: Path,
        device: torch.device,
        progress: bool = True,
    ):
        self.cfg = prune_config.resolved()
        if self.cfg.method.scorer is not None:
            raise KPruneError(
                f"kprune compress searches K-prune's reduction; method {self.cfg.method.name} "
                "is a baseline: use kprune prune for it"
            )
        self.teacher, self.tokenizer, self.task = teacher, tokenizer, task
        self.target, self.work, self.device, self.progress = target, work, device, progress
        self.rt: Runtime = self.cfg.latency.resolved()
        self.metric_name = task.spec.metric
        self.candidates: list[Candidate] = []
        self.pruned: dict[tuple[float, str], Pruned] = {}
        self.seconds: dict[str, float] = {}
        self._feeds = None

    # -- shared -------------------------------------------------------------------------
    def _shared(self) -> None:
        t = time.perf_counter()
        self.teacher_metric = self._dev_metric(self.teacher)
        torch_rt = Runtime("torch", self.rt.batch, self.rt.seq_len, self.rt.threads)
        self.dense_torch_ms = latency_ms(self.teacher.cpu(), torch_rt, self.target.repeats)
        self.seconds["teacher"] = time.perf_counter() - t
        row = Candidate(
            stage="teacher",
            reduction=0.0,
            budget="",
            mode="",
            runtime=torch_rt.key,
            recipe=FP32,
            fallback="",
            metric=round(self.teacher_metric, 6),
            drop=0.0,
            passes=True,
            latency_ms=round(self.dense_torch_ms, 4),
            speedup=1.0,
            flops_kept=1.0,
            seconds=round(self.seconds["teacher"], 2),
        )
        self.candidates.append(row)
        t = time.perf_counter()
        model = frozen(self.teacher, self.device)
        self.data: SampleData = task_sample(
            model, self.tokenizer, self.task, self.cfg.sample, self.device, teacher_logits=True
        )
        self.flops = flops_of(model, self.data)
        spec = MeasureSpec.of(self.cfg, self.task.spec.kind)
        self.initial = measure_knowledge(
            model,
            self.data,
            spec,
            self.cfg.sample.batch_size,
            self.device,
            self.cfg.measure.dtype,
        )
        self.seconds["sample_and_scores"] = time.perf_counter() - t

    def _dev_metric(self, model: nn.Module) -> float:
        scores = evaluate_model(
            model, self.tokenizer, self.task, "dev", self.cfg.sample.max_length, self.device
        )
        return float(scores[self.metric_name])

    def _config_at(self, x: float, mode: str) -> PruneConfig:
        if self.cfg.search.budget == "latency":
            return self.cfg.replace(mode=mode, speedup=1 / (1 - x), latency_ms=0.0)
        return self.cfg.replace(mode=mode, reduction=x)

    # -- candidates -----------------------------------------------------------------------
    def _prune(self, x: float, mode: str) -> Pruned:
        config = self._config_at(x, mode)
        model = copy.deepcopy(self.teacher)
        masks, seconds = None, {}
        if mode == "oneshot":
            masks, seconds = choose_masks(config, self.flops, self.initial)
        model, masks, report, _ = prune_and_tune(
            model,
            self.data,
            self.task.spec.kind,
            config,
            self.device,
            masks,
            seconds,
            initial=self.initial,
            progress=False,
        )
        model = prune_model(model, masks).cpu().eval()
        model.kprune_masks = masks
        folder = Path(tempfile.mkdtemp(prefix=f"{mode}-{x:.4f}-", dir=self.work))
        return Pruned(model, report, folder)

    def _graph(self, pruned: Pruned, recipe: Recipe) -> Path:
        """The graph of ``pruned`` for the runtime under ``recipe`` (built once)."""
        if pruned.fp32 is None:
            pruned.fp32 = onnx_file(pruned.model, pruned.folder, int8=False)
        if self.rt.name != "ort-int8":
            return pruned.fp32
        if recipe.name not in pruned.graphs:
            if recipe.kind == "static" and self._feeds is None:
                from kprune.deploy.export import OrtModel

                names = OrtModel(pruned.fp32).input_names
                pad = self.tokenizer.pad_token_id or 0
                self._feeds = calibration_feeds(self.data, pad, names)
            path = pruned.folder / f"model.{len(pruned.graphs)}.int8.onnx"
            pruned.graphs[recipe.name] = quantize(pruned.fp32, path, recipe, self._feeds)
        return pruned.graphs[recipe.name]

    def _judge(
        self, pruned: Pruned, x: float, mode: str, stage: str, recipe: Recipe, t0: float
    ) -> Candidate:
        from kprune.deploy.export import OrtModel

        vocab = pruned.model.config.vocab_size
        if self.rt.name == "torch":
            metric = self._dev_metric(pruned.model)
            ms = latency_ms(pruned.model, self.rt, self.target.repeats)
            recipe_name = FP32
        else:
            graph = self._graph(pruned, recipe)
            metric = self._dev_metric(OrtModel(graph, threads=self.rt.threads))
            ms = graph_latency_ms(graph, self.rt, vocab, self.target.repeats)
            recipe_name = recipe.name if self.rt.name == "ort-int8" else FP32
        drop = 100 * (self.teacher_metric - metric)
        cand = self._record(
            stage,
            x,
            mode,
            t0,
            recipe=recipe_name,
            fallback=";".join(recipe.fallback) if recipe_name != FP32 else "",
            metric=round(metric, 6),
            drop=round(drop, 4),
            passes=drop <= self.target.max_drop + 1e-9,
            latency_ms=round(ms, 4),
            speedup=round(self.dense_torch_ms / ms, 4),
            flops_kept=round(float(pruned.report.get("flops_kept", 1.0)), 4),
        )
        if self.progress:
            verdict = "passes" if cand.passes else "fails"
            tqdm.write(
                f"  {stage:8s} R={x:.3f} {mode:9s} {cand.recipe:16s} {self.metric_name} "
                f"{metric:.4f} (drop {drop:+.2f}) {ms:.2f} ms {cand.speedup:.2f}x: {verdict}"
            )
        return cand

    def _try(self, x: float, mode: str, stage: str) -> Candidate:
        t0 = time.perf_counter()
        try:
            pruned = self._prune(x, mode)
        except KPruneError as exc:  # a latency target below the empty model: infeasible
            if self.cfg.search.budget != "latency":
                raise
            if self.progress:
                tqdm.write(f"  {stage:8s} R={x:.3f} {mode}: {exc}")
            return self._infeasible(x, mode, stage, t0)
        self.pruned[(round(x, 4), mode)] = pruned
        first = self.target.recipes[0]
        recipe = Recipe("dynamic" if first == "fallback" else first)
        return self._judge(pruned, x, mode, stage, recipe, t0)

    def _infeasible(self, x: float, mode: str, stage: str, t0: float) -> Candidate:
        nan = math.nan
        return self._record(
            stage, x, mode, t0, recipe="", fallback="", metric=nan, drop=math.inf,
            passes=False, latency_ms=nan, speedup=nan, flops_kept=nan,
        )  # fmt: skip

    def _record(self, stage: str, x: float, mode: str, t0: float, **measured) -> Candidate:
        """A trace row of a candidate at reduction ``x`` started at ``t0``, appended."""
        cand = Candidate(
            stage=stage,
            reduction=round(x, 4),
            budget=self.cfg.search.budget,
            mode=mode,
            runtime=self.rt.key,
            seconds=round(time.perf_counter() - t0, 2),
            index=len(self.candidates),
            **measured,
        )
        self.candidates.append(cand)
        return cand

    # -- stages -------------------------------------------------------------------------
    def _estimate(self) -> tuple[float, float]:
        """Bisection with one-shot prunes: (highest passing, lowest failing) reductions."""
        lo, hi = 0.0, self.target.max_reduction
        for _ in range(self.target.estimate_steps):
            x = (lo + hi) / 2
            if self._try(x, "oneshot", "estimate").passes:
                lo = x
            else:
                hi = x
        return lo, hi

    def _confirm(self, lo: float, hi: float) -> None:
        """Iterative prunes from the estimate: up by the bracket while they pass, down while
        nothing has passed."""
        step = max(hi - lo, 0.01)
        x = lo if lo > 0 else hi / 2
        for _ in range(self.target.confirm_prunes):
            cand = self._try(x, "iterative", "confirm")
            if cand.passes:
                if x + step >= self.target.max_reduction or self._failed_above(x):
                    break
                x = min(x + step, self.target.max_reduction)
            else:
                if any(c.passes and c.mode == "iterative" for c in self.candidates):
                    break
                x = max(x - step, 0.0)
                if x <= 0:
                    break

    def _failed_above(self, x: float) -> bool:
        return any(
            c.mode == "iterative" and c.reduction > x and not c.passes for c in self.candidates
        )

    def _recipes(self) -> None:
        """For int8: the other recipes on the candidate just above the chosen one (or the
        closest when nothing passes), stopping at the first that passes."""
        if self.rt.name != "ort-int8" or len(self.target.recipes) < 2:
            return
        prunes = [c for c in self.candidates if c.mode in ("iterative", "oneshot") and c.recipe]
        best = self._best()
        if best is not None:
            above = [c for c in prunes if not c.passes and c.speedup > best.speedup]
            if not above:
                return
            target = min(above, key=lambda c: c.drop)
        elif prunes:
            target = min(prunes, key=lambda c: c.drop)
        else:
            return
        pruned = self.pruned[(target.reduction, target.mode)]
        x, mode = target.reduction, target.mode
        base_kind = "dynamic"
        for name in self.target.recipes[1:]:
            if name == "static":
                t0 = time.perf_counter()
                cand = self._judge(pruned, x, mode, "recipe", Recipe("static"), t0)
                if cand.passes:
                    return
                if cand.drop < target.drop:
                    base_kind = "static"
            elif name == "fallback" and self._fallback(pruned, x, mode, Recipe(base_kind)):
                return

    def _fallback(self, pruned: Pruned, x: float, mode: str, base: Recipe) -> bool:
        """Operators kept in fp32 one at a time (what each recovers), then cumulatively in
        that order; True once one passes."""
        import onnx

        self._graph(pruned, base)
        nodes = quantizable_nodes(onnx.load(str(pruned.fp32), load_external_data=False))
        nodes = nodes[::-1][: self.target.fallback_trials]
        gains = []
        for node in nodes:
            t0 = time.perf_counter()
            cand = self._judge(pruned, x, mode, "recipe", base.with_fallback((node,)), t0)
            if cand.passes:
                return True
            gains.append((cand.drop, node))
        order = [node for drop, node in sorted(gains)]
        for k in range(2, len(order) + 1):
            t0 = time.perf_counter()
            if self._judge(
                pruned, x, mode, "recipe", base.with_fallback(tuple(order[:k])), t0
            ).passes:
                return True
        return False

    def _best(self) -> Candidate | None:
        passing = [c for c in self.candidates if c.passes and c.stage != "teacher"]
        if not passing:
            return None
        timed = [c for c in passing if not math.isnan(c.final_ms)]
        if timed:
            return min(timed, key=lambda c: c.final_ms)
        return max(passing, key=lambda c: c.speedup)

    def _final_timing(self, rounds: int = 3, top: int = FINAL_TOP) -> None:
        """The fastest passing candidates (by their first timing) timed again in turn,
        ``rounds`` times each, on the same cores one after the other: a candidate's timing
        during the search is one median taken minutes from the others', and at batch 1 two
        such medians differ by more than the candidates do. The median of the rounds is
        ``final_ms``, and the choice."""
        from contextlib import ExitStack

        from kprune.deploy.latency import graph_runner, median_ms, runner

        passing = [c for c in self.candidates if c.passes and c.stage != "teacher"]
        passing = sorted(passing, key=lambda c: c.latency_ms)[:top]
        if len(passing) < 2:
            return
        with ExitStack() as stack:
            calls = []
            for c in passing:
                pruned = self.pruned[(c.reduction, c.mode)]
                if self.rt.name == "torch":
                    calls.append(stack.enter_context(runner(pruned.model, self.rt)))
                else:
                    graph = self._graph(pruned, self._recipe_of(c))
                    vocab = pruned.model.config.vocab_size
                    calls.append(stack.enter_context(graph_runner(graph, self.rt, vocab)))
            times: list[list[float]] = [[] for _ in passing]
            for _ in range(rounds):
                for i, forward in enumerate(calls):
                    times[i].append(median_ms(forward, self.target.repeats, warmup=2))
        for c, ms in zip(passing, times, strict=True):
            c.final_ms = round(statistics.median(ms), 4)
        if self.progress:
            tqdm.write(
                "  final    "
                + ", ".join(f"R={c.reduction:.3f} {c.mode} {c.final_ms:.2f} ms" for c in passing)
            )

    @staticmethod
    def _recipe_of(c: Candidate) -> Recipe:
        fallback = tuple(c.fallback.split(";")) if c.fallback else ()
        kind = c.recipe.split("+")[0] if c.recipe != FP32 else "dynamic"
        return Recipe(kind, fallback)

    def run(self) -> Outcome:
        t_all = time.perf_counter()
        self._shared()
        t = time.perf_counter()
        lo, hi = self._estimate()
        self.seconds["estimate"] = time.perf_counter() - t
        t = time.perf_counter()
        self._confirm(lo, hi)
        self.seconds["confirm"] = time.perf_counter() - t
        t = time.perf_counter()
        self._recipes()
        self.seconds["recipes"] = time.perf_counter() - t
        t = time.perf_counter()
        self._final_timing()
        self.seconds["final_timing"] = time.perf_counter() - t
        self.seconds["total"] = time.perf_counter() - t_all
        best = self._best()
        passed = best is not None
        if best is None:
            tried = [
                c for c in self.candidates if c.stage != "teacher" and not math.isnan(c.metric)
            ]
            if not tried:
                raise KPruneError("no candidate could be pruned; raise --max-reduction")
            best = min(tried, key=lambda c: (c.drop, -c.speedup))
        pruned = self.pruned[(best.reduction, best.mode)]
        return Outcome(
            candidates=self.candidates,
            chosen=best,
            passed=passed,
            teacher_metric=self.teacher_metric,
            metric_name=self.metric_name,
            dense_torch_ms=self.dense_torch_ms,
            seconds={k: round(v, 2) for k, v in self.seconds.items()},
            pruned=pruned,
        )

    def chosen_graph(self, outcome: Outcome) -> Path | None:
        """The chosen candidate's graph on the runtime (None for torch)."""
        if self.rt.name == "torch":
            return None
        return self._graph(outcome.pruned, self._recipe_of(outcome.chosen))
