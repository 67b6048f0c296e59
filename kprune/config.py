"""The one configuration: a typed section per params.yaml section, each knob's default, help,
allowed values and bounds written once, here, and the params file read and validated here.
``kprune``'s flags, the DVC stages, the flows, the benchmark tools and the library all read
them from these classes. A pruning run is configured by five of them (method, sample, measure,
search, prune_tune), gathered in ``PruneConfig``:

    PruneConfig(reduction=0.6, tokens=32_000)          # knobs by name, routed to their section
    PruneConfig(search=SearchConfig(reduction=0.6))    # or whole sections
    PruneConfig(method="kprune-no-kpms").resolved()    # the method's knob changes applied
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kprune.data.tasks import DEFAULT_TASKS, METRIC_CHOICES, REGISTRY
from kprune.deploy.runtime import RUNTIME_HELP, RUNTIMES, Runtime
from kprune.errors import KPruneError
from kprune.pruning.methods import METHODS, SPARSIFY_METHODS

# examples x padded length per backward pass of the measurement (memory only)
PASS_TOKENS = 1024
PRED_FORMS = ("paper", "fisher")  # predictive knowledge a user may choose
REP_FORMS = ("paper", "exact")
BUDGETS = (
    "flops",
    "latency",
)  # what the search's budget counts  # exact: whole-head removal error (about d_h x paper)


def knob(
    default: Any, help: str, choices: tuple = (), flag: str | None = None, name: str | None = None
) -> Any:
    """A config field with its help text, allowed values, (if not --name) CLI flag and (if
    not the field's) flat knob name."""
    meta = {"help": help, "choices": choices, "flag": flag, "knob": name}
    return field(default=default, metadata=meta)


def _knob_name(f: dataclasses.Field) -> str:
    return f.metadata.get("knob") or f.name


class _Section:
    """Checks every field with ``choices`` (each item of a tuple-valued one) and a section's
    own bounds (``_check``)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = f.metadata.get("choices")
            value = getattr(self, f.name)
            items = value if isinstance(value, tuple) else (value,)
            if allowed and any(v not in allowed for v in items):
                self._fail(f.name, f"must be one of {', '.join(allowed)}, got {value!r}")
        self._check()

    def _fail(self, name: str, problem: str) -> None:
        raise KPruneError(
            f"{self.NAME}.{name} {problem}; set it in params.yaml ({self.NAME}: {name}) or with "
            f"{_flag(next(f for f in dataclasses.fields(self) if f.name == name))}"
        )

    def _check(self) -> None:
        pass

    def _at_least(self, minimum: float, *names: str, strict: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value < minimum or (strict and value == minimum):
                self._fail(name, f"must be {'>' if strict else '>='} {minimum}, got {value}")


@dataclass(frozen=True)
class MethodConfig(_Section):
    NAME = "method"
    name: str = knob(
        "kprune",
        "the method: "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values())
        + ". A kprune-* ablation is K-prune with the knob it names changed (it overrides that "
        "knob's setting); a baseline ignores the measure, search and prune_tune knobs other "
        "than reduction",
        tuple(METHODS),
        flag="--method",
        name="method",
    )

    @property
    def scorer(self) -> str | None:
        """The baseline's scorer (kwon, magnitude, random), or None for a K-prune variant."""
        return METHODS[self.name].scorer


@dataclass(frozen=True)
class SampleConfig(_Section):
    NAME = "sample"
    tokens: int = knob(100_000, "sample size in tokens, drawn from the training split")
    seed: int = knob(0, "seed of the sample")
    batch_size: int = knob(32, "examples per batch of the sample")
    max_length: int = knob(128, "longest sequence of the sample and of the evaluation")

    def _check(self) -> None:
        self._at_least(1, "tokens", "batch_size")
        self._at_least(8, "max_length")


@dataclass(frozen=True)
class MeasureConfig(_Section):
    NAME = "measure"
    gamma: float = knob(2.0, "temperature of the KL divergence (predictive knowledge only)")
    pred_form: str = knob(
        "paper",
        "predictive knowledge: the paper's KL gradient or per-example Fisher",
        PRED_FORMS,
    )
    rep_form: str = knob(
        "paper",
        "representational knowledge of a head: the paper's (mean of its context dims' "
        "removal errors) or exact (whole-head removal error, about d_h times larger)",
        REP_FORMS,
    )
    dtype: str = knob(
        "float32",
        "precision of the measurement passes (bfloat16: faster only where a bf16 matmul "
        "beats float32, e.g. AMX CPUs and GPUs; slower on some AVX-512 CPUs: compare with "
        "python -m bench.profile --dtype bfloat16; the tuning stays float32)",
        ("float32", "bfloat16"),
        flag="--measure-dtype",
    )
    pass_tokens: int = knob(
        PASS_TOKENS,
        "examples x padded length per backward pass of the measurement: lower bounds peak "
        "memory, higher can be faster on a GPU; 0 = whole batches; the scores are the same",
    )

    def _check(self) -> None:
        self._at_least(0, "gamma", strict=True)
        self._at_least(0, "pass_tokens")


@dataclass(frozen=True)
class SearchConfig(_Section):
    NAME = "search"
    reduction: float = knob(0.6, "fraction of FLOPs to remove, 0 <= R < 1")
    lam: float = knob(2.5e-4, "weight of representational knowledge (lambda)")
    mu: float = knob(64.0, "weight of heads against neurons (mu)")
    use_pred: bool = knob(True, "score units by predictive knowledge")
    use_rep: bool = knob(True, "score units by representational knowledge")
    strategy: str = knob(
        "kpms",
        "kpms (knowledge-preserving mask search) or uniform (the same kept fraction in "
        "every sublayer: an ablation)",
        ("kpms", "uniform"),
        flag="--search-strategy",
    )
    budget: str = knob(
        "flops",
        "what the search's budget counts: flops (the paper: the encoder's FLOPs, cut by "
        "--reduction) or latency (the model's latency on --runtime, predicted from a measured "
        "table of sublayer latencies: give --speedup or --latency-ms)",
        BUDGETS,
    )
    speedup: float = knob(
        0.0,
        "latency budget: the pruned model's speed-up over the dense model on --runtime, e.g. "
        "3 (0: not set)",
    )
    latency_ms: float = knob(
        0.0, "latency budget: the pruned model's latency in ms on --runtime (0: not set)"
    )

    def _check(self) -> None:
        if not 0 <= self.reduction < 1:
            self._fail(
                "reduction", f"must be in [0, 1) (fraction of FLOPs removed), got {self.reduction}"
            )
        self._at_least(0, "lam", "mu", "latency_ms")
        if self.speedup and self.speedup <= 1:
            self._fail("speedup", f"must be > 1 (or 0: not set), got {self.speedup}")
        targets = [n for n in ("speedup", "latency_ms") if getattr(self, n)]
        if self.budget == "latency" and len(targets) != 1:
            self._fail(
                "budget",
                "latency needs exactly one target: --speedup or --latency-ms"
                + (" (both were given)" if targets else ""),
            )
        if self.budget == "flops" and targets:
            self._fail(
                "budget",
                f"flops cuts FLOPs by --reduction and ignores --{targets[0].replace('_', '-')}; "
                "use --budget latency for a latency target",
            )
        if self.budget == "latency" and self.strategy != "kpms":
            self._fail("budget", "latency works with the kpms search strategy only")


@dataclass(frozen=True)
class LatencyConfig(_Section):
    """Where a latency budget is measured: the runtime the model will serve on."""

    NAME = "latency"
    runtime: str = knob("torch", RUNTIME_HELP, RUNTIMES)
    batch: int = knob(32, "batch size the latency is measured at")
    seq_len: int = knob(128, "sequence length (tokens) the latency is measured at")
    threads: int = knob(0, "threads of the runtime (0: every core of this machine)")
    table: str = knob(
        "",
        "a latency table file (kprune latency); empty: measured on this machine and cached "
        "in the user cache folder (~/.cache/kprune/latency)",
        flag="--latency-table",
        name="latency_table",
    )

    def _check(self) -> None:
        self._at_least(1, "batch", "seq_len")
        self._at_least(0, "threads")

    def resolved(self) -> Runtime:
        """The runtime setting, the thread count filled in."""
        return Runtime(self.runtime, self.batch, self.seq_len, self.threads or os.cpu_count() or 1)


@dataclass(frozen=True)
class PruneTuneConfig(_Section):
    NAME = "prune_tune"
    mode: str = knob(
        "iterative",
        "iterative (re-measure at every sublayer, the paper) or oneshot (measure and search once)",
        ("iterative", "oneshot"),
    )
    tune: bool = knob(True, "least-squares weight tuning of each pruned sublayer (KPWT)")
    ridge: float = knob(1e-4, "ridge of the tuning, relative to trace(H^T H)/k")
    reference_loop: bool = knob(
        False,
        "the straightforward loop (the whole sample through the whole model at every "
        "sublayer, as the authors' code): same result, about twice the time; for checking",
    )
    remeasure: str = knob(
        "sublayer",
        "re-measure the knowledge before every sublayer (the paper) or once per layer (its "
        "FFN sublayer reuses the scores measured before its attention sublayer: half the "
        "measurement passes)",
        ("sublayer", "layer"),
    )

    def _check(self) -> None:
        self._at_least(0, "ridge")


PRUNE_SECTIONS: dict[str, type] = {
    "method": MethodConfig,
    "sample": SampleConfig,
    "measure": MeasureConfig,
    "search": SearchConfig,
    "prune_tune": PruneTuneConfig,
    "latency": LatencyConfig,
}
# knob name -> its section and field (names are unique across the sections)
KNOBS: dict[str, str] = {
    _knob_name(f): name for name, cls in PRUNE_SECTIONS.items() for f in dataclasses.fields(cls)
}
FIELDS: dict[str, str] = {
    _knob_name(f): f.name for cls in PRUNE_SECTIONS.values() for f in dataclasses.fields(cls)
}


# what each iteration-0 score table depends on once the method's knob changes are applied:
# the flow's cache key; the DVC stage's params are these and the method's name, since DVC
# cannot see through the method's changes (tests check dvc.yaml)
REP_KNOBS = ("batch_size", "rep_form", "dtype")
PRED_KNOBS = ("batch_size", "seed", "gamma", "pred_form", "dtype")


@dataclass(frozen=True, init=False)
class PruneConfig:
    """Everything one pruning run is configured by; paper defaults."""

    method: MethodConfig
    sample: SampleConfig
    measure: MeasureConfig
    search: SearchConfig
    prune_tune: PruneTuneConfig
    latency: LatencyConfig

    def __init__(
        self,
        method: MethodConfig | str | None = None,
        sample: SampleConfig | None = None,
        measure: MeasureConfig | None = None,
        search: SearchConfig | None = None,
        prune_tune: PruneTuneConfig | None = None,
        latency: LatencyConfig | None = None,
        **knobs: Any,
    ) -> None:
        if isinstance(method, str):  # the knob by name: PruneConfig(method="kwon")
            method, knobs = None, {"method": method, **knobs}
        given = {
            "method": method,
            "sample": sample,
            "measure": measure,
            "search": search,
            "prune_tune": prune_tune,
            "latency": latency,
        }
        parts = {name: given[name] or cls() for name, cls in PRUNE_SECTIONS.items()}
        per_section: dict[str, dict] = {}
        for name, value in knobs.items():
            if name not in KNOBS:
                raise KPruneError(
                    f"unknown pruning knob '{name}'; known: {', '.join(sorted(KNOBS))}"
                )
            per_section.setdefault(KNOBS[name], {})[FIELDS[name]] = value
        for sec, values in per_section.items():
            parts[sec] = dataclasses.replace(parts[sec], **values)
        for name, part in parts.items():
            object.__setattr__(self, name, part)
        if self.search.budget == "latency" and self.method.scorer is not None:
            raise KPruneError(
                f"method {self.method.name} cuts FLOPs; --budget latency works with K-prune's "
                "search (kprune and its kprune-* ablations)"
            )

    def replace(self, **knobs: Any) -> PruneConfig:
        """This config with some knobs changed (by name)."""
        sections = {name: getattr(self, name) for name in PRUNE_SECTIONS}
        if "method" in knobs:  # the knob shares its section's name: given as the section
            sections["method"] = knobs.pop("method")
        return PruneConfig(**sections, **knobs)

    def knobs(self) -> dict[str, Any]:
        """Every knob by name (flat)."""
        return {k: getattr(getattr(self, sec), FIELDS[k]) for k, sec in KNOBS.items()}

    def resolved(self) -> PruneConfig:
        """This config with its method's knob changes applied (a K-prune ablation sets the
        knob it names; ``kprune`` and the baselines change nothing). Idempotent: every
        assembly step calls it on what it is given."""
        return self.replace(**METHODS[self.method.name].overrides)

    def only(self, knobs: tuple[str, ...]) -> PruneConfig:
        """A config with these knobs of this one and every other knob at its default: what a
        cached step that depends on only these knobs is keyed on."""
        mine = self.knobs()
        return PruneConfig(**{k: mine[k] for k in knobs})


@dataclass(frozen=True)
class SparsifyConfig(_Section):
    """SparseBERT: unstructured magnitude pruning while distilling (params.yaml ``sparsify``).
    The paper's settings were 12 epochs (on augmented data), batch 32, lr 3e-5 constant,
    weight decay 0.01, max length 128; the defaults keep them but the length (64, the
    teachers'), measured in docs/sparsebert.md."""

    NAME = "sparsify"
    method: str = knob(
        "sparsebert",
        "; ".join(f"{m.name}: {m.description}" for m in SPARSIFY_METHODS.values())
        + ". An ablation overrides the knobs it names",
        tuple(SPARSIFY_METHODS),
    )
    sparsity: float = knob(0.9, "fraction of each encoder matrix's weights set to zero, 0 <= s < 1")
    student: str = knob(
        "pretrained",
        "the student's initial weights: the pre-trained encoder the teacher was fine-tuned "
        "from (the paper) or the fine-tuned teacher itself",
        ("pretrained", "teacher"),
    )
    base: str = knob(
        "",
        "pre-trained encoder of a pretrained student (folder or hub name; empty: the "
        "base_model in the teacher's metrics.json)",
    )
    epochs: float = knob(
        12.0,
        "training epochs over the train split, the paper's 12 (fewer cost accuracy: trec6 at "
        "90 %: 0.847 after 12, 0.793 after 6, 0.694 after 3; docs/sparsebert.md)",
    )
    batch_size: int = knob(32, "training batch size (the paper: 32)")
    lr: float = knob(3e-5, "AdamW learning rate, constant (the paper: 3e-5)")
    weight_decay: float = knob(0.01, "AdamW weight decay of the matrices (the paper: 0.01)")
    max_length: int = knob(64, "longest training and evaluation sequence (the paper: 128)")
    mask_updates: int = knob(
        100, "times the magnitude mask is raised along the cubic schedule (the paper: ~100)"
    )
    att_weight: float = knob(1.0, "weight of the attention-score MSE summed over layers")
    hidden_weight: float = knob(1.0, "weight of the hidden-state MSE summed over layers")
    logit_weight: float = knob(1.0, "weight of the soft cross-entropy to the teacher")
    label_weight: float = knob(0.0, "weight of the task loss on the labels")
    temperature: float = knob(1.0, "temperature of the soft cross-entropy")
    seed: int = knob(0, "seed of the initial head, dropout and batch order")

    def _check(self) -> None:
        if not 0 <= self.sparsity < 1:
            self._fail("sparsity", f"must be in [0, 1), got {self.sparsity}")
        self._at_least(0, "epochs", "lr", "temperature", strict=True)
        self._at_least(1, "batch_size", "mask_updates")
        self._at_least(8, "max_length")
        self._at_least(0, "weight_decay", "att_weight", "hidden_weight", "logit_weight")
        self._at_least(0, "label_weight")
        if not (self.att_weight or self.hidden_weight or self.logit_weight or self.label_weight):
            self._fail("label_weight", "is 0 with every distillation weight 0: nothing to train")

    def resolved(self) -> SparsifyConfig:
        """With the method's knob changes applied (idempotent)."""
        return dataclasses.replace(self, **SPARSIFY_METHODS[self.method].overrides)


@dataclass(frozen=True)
class FinetuneConfig(_Section):
    """Fine-tuning of a teacher from a pre-trained encoder (params.yaml ``finetune``)."""

    NAME = "finetune"
    epochs: float = knob(3.0, "training epochs over the train split")
    batch_size: int = knob(32, "training batch size")
    lr: float = knob(5e-5, "AdamW peak learning rate (linear warm-up, then linear decay)")
    max_length: int = knob(64, "longest training and evaluation sequence")
    warmup_ratio: float = knob(0.1, "fraction of the steps spent warming up, 0 <= w < 1")
    weight_decay: float = knob(0.01, "AdamW weight decay")
    seed: int = knob(0, "seed of the head's initialisation, dropout and batch order")
    max_train_examples: int | None = knob(None, "train on the first N examples only (null: all)")
    eval_batch_size: int = knob(128, "batch size of the dev and test evaluation")

    def _check(self) -> None:
        self._at_least(0, "epochs", "lr", strict=True)
        self._at_least(1, "batch_size", "eval_batch_size")
        self._at_least(8, "max_length")
        self._at_least(0, "weight_decay")
        if not 0 <= self.warmup_ratio < 1:
            self._fail("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.max_train_examples is not None:
            self._at_least(1, "max_train_examples")


# The sections of the pipeline around a pruning run.


@dataclass(frozen=True)
class PrepareConfig(_Section):
    """The registered tasks' splits (params.yaml ``prepare``)."""

    NAME = "prepare"
    tasks: tuple[str, ...] = knob(
        DEFAULT_TASKS,
        "registered tasks to prepare (snli: after `kprune fetch --task snli`)",
        tuple(REGISTRY),
    )
    seed: int = knob(0, "seed of the stratified train/dev/test split")


@dataclass(frozen=True)
class TeacherRun:
    """One teacher of the finetune stage (params.yaml ``teachers.<key>``): the base model's
    name (its folder under data/teachers) and folder (or hub name), the task, and the
    ``finetune`` section with the knobs this teacher changes."""

    model: str
    base: str
    task: str
    finetune: FinetuneConfig


def teacher_runs(params: str | Path | dict[str, Any]) -> dict[str, TeacherRun]:
    """Every teacher of params.yaml's ``teachers`` section, validated (keys, types, bounds
    of the finetune knobs each changes)."""
    data = params if isinstance(params, dict) else read_params(params)
    entries = data.get("teachers") or {}
    if not isinstance(entries, dict):
        raise KPruneError(f"'teachers' in params must be a mapping of teachers, got {entries!r}")
    base_cfg = data.get("finetune") or {}
    runs = {}
    for key, entry in entries.items():
        where = f"teachers.{key}"
        if not isinstance(entry, dict) or not {"model", "base", "task"} <= set(entry):
            raise KPruneError(
                f"'{where}' must be a mapping with model, base and task (and any finetune "
                f"knobs it changes), got {entry!r}; fix params.yaml"
            )
        knobs = {k: v for k, v in entry.items() if k not in ("model", "base", "task")}
        for name in ("model", "base", "task"):
            if not isinstance(entry[name], str) or not entry[name]:
                raise KPruneError(f"'{where}.{name}' must be a non-empty string; fix params.yaml")
        if entry["task"] not in REGISTRY:
            raise KPruneError(
                f"'{where}.task' {entry['task']!r} is not a registered task; one of "
                f"{', '.join(REGISTRY)}"
            )
        cfg = from_mapping(FinetuneConfig, {**base_cfg, **knobs}, where)
        runs[key] = TeacherRun(entry["model"], entry["base"], entry["task"], cfg)
    return runs


def teacher_of(params: str | Path | dict[str, Any], model: str, task: str) -> TeacherRun:
    """The teachers entry of (``model``, ``task``)."""
    for run in teacher_runs(params).values():
        if (run.model, run.task) == (model, task):
            return run
    raise KPruneError(
        f"params.yaml has no teacher of {task} from {model}; add one to its teachers section"
    )


@dataclass(frozen=True)
class EvaluateConfig(_Section):
    """The evaluation of a pruned model against its teacher (params.yaml ``evaluate``)."""

    NAME = "evaluate"
    split: str = knob("dev", "split the metric is computed on", ("dev", "test"))
    metric: str = knob(
        "",
        "the task's main metric, reported and compared (empty: the registered task's own, "
        "or for your data f1 when binary and accuracy otherwise)",
        ("", *METRIC_CHOICES),
        flag="--eval-metric",
    )
    latency: bool = knob(True, "time both models on the CPU")
    threads: int = knob(2, "torch threads of the timing")
    repeats: int = knob(10, "timed repeats per batch size (the median is reported)")
    seq_len: int = knob(128, "sequence length of the timing")

    def _check(self) -> None:
        self._at_least(1, "threads", "repeats")
        self._at_least(8, "seq_len")


@dataclass(frozen=True)
class ExportConfig(_Section):
    """ONNX export (params.yaml ``export``)."""

    NAME = "export"
    int8: bool = knob(True, "also a dynamic-int8 copy of the fused graph")
    opset: int | None = knob(None, "ONNX opset (null: the exporter's default)")


@dataclass(frozen=True)
class CompressConfig(_Section):
    """What `make run` and the compress flow compress (params.yaml ``compress``)."""

    NAME = "compress"
    model: str = knob("minilm-l6", "base model of the teacher compressed (a teachers entry's)")
    task: str = knob("rt", "task whose teacher is compressed")
    reductions: tuple[float, ...] = knob((0.6,), "FLOPs reductions the flow prunes at")
    sparsify: bool = knob(False, "also SparseBERT on the teacher and on each K-prune model")
    target: bool = knob(
        False,
        "also the search for the fastest model within target.max_drop points of the teacher "
        "on the latency section's runtime (kprune compress): about three prunes' time",
    )

    def _check(self) -> None:
        for r in self.reductions:
            if not 0 <= r < 1:
                self._fail("reductions", f"must each be in [0, 1), got {r}")


@dataclass(frozen=True)
class TargetConfig(_Section):
    """Compression to a target (``kprune compress``, params.yaml ``target``): the fastest
    model on the runtime of the ``latency`` section whose dev metric is within ``max_drop``
    points of the teacher's."""

    NAME = "target"
    max_drop: float = knob(
        1.0, "tolerance: points (100 x the main metric) the dev metric may lose to the teacher"
    )
    max_reduction: float = knob(0.9, "the highest reduction the search tries")
    estimate_steps: int = knob(
        4, "bisection steps of the cheap estimate (one-shot prunes from the shared scores)"
    )
    confirm_prunes: int = knob(2, "iterative prunes that confirm and refine the estimate")
    recipes: tuple[str, ...] = knob(
        ("dynamic", "static", "fallback"),
        "int8 recipes tried in order until one passes (fallback: operators kept in fp32)",
        ("dynamic", "static", "fallback"),
    )
    fallback_trials: int = knob(
        12,
        "operators whose fp32 fallback is measured one by one (from the output back: the "
        "classifier, then the last layers)",
    )
    repeats: int = knob(10, "timed passes per latency (the median)")

    def _check(self) -> None:
        self._at_least(0, "max_drop", "estimate_steps", "confirm_prunes", "fallback_trials")
        self._at_least(1, "repeats")
        if not 0 < self.max_reduction < 1:
            self._fail("max_reduction", f"must be in (0, 1), got {self.max_reduction}")
        if self.confirm_prunes + self.estimate_steps == 0:
            self._fail("confirm_prunes", "and estimate_steps cannot both be 0")


@dataclass(frozen=True)
class BenchConfig(_Section):
    """The benchmark grid (params.yaml ``bench``)."""

    NAME = "bench"
    tasks: tuple[str, ...] = knob(DEFAULT_TASKS, "tasks of the grid", tuple(REGISTRY))
    methods: tuple[str, ...] = knob(
        tuple(METHODS), "methods of the grid (every registered one)", tuple(METHODS)
    )
    reductions: tuple[float, ...] = knob((0.4, 0.5, 0.6, 0.7, 0.8), "reductions of the grid")
    seeds: tuple[int, ...] = knob((0, 1, 2), "sample seeds of the grid")
    tokens: int = knob(32_000, "sample size of the grid's runs")
    split: str = knob("test", "split the grid's metric is computed on", ("dev", "test"))
    threads: int = knob(2, "torch threads of the timing")
    repeats: int = knob(10, "timed repeats per batch size")
    # run these methods over the whole grid before the others (the headline comparison)
    priority: tuple[str, ...] = knob(
        ("kprune", "kwon", "magnitude", "random"),
        "methods run over the whole grid first",
        tuple(METHODS),
    )

    def _check(self) -> None:
        self._at_least(1, "tokens", "threads", "repeats")


# params.yaml: every section, in the file's order
SECTIONS: dict[str, type] = {
    "prepare": PrepareConfig,
    "finetune": FinetuneConfig,
    **PRUNE_SECTIONS,
    "evaluate": EvaluateConfig,
    "export": ExportConfig,
    "sparsify": SparsifyConfig,
    "compress": CompressConfig,
    "target": TargetConfig,
    "bench": BenchConfig,
}


def _flag(f: dataclasses.Field) -> str:
    """The command-line flag of a knob (a True default is switched off by --no-NAME)."""
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    return "--no-" + flag[2:] if f.default is True else flag


def add_flags(
    parser: argparse.ArgumentParser,
    required: tuple[str, ...] = (),
    sections: dict[str, type] = PRUNE_SECTIONS,
    skip: tuple[str, ...] = (),
) -> None:
    """One flag per knob of ``sections`` (but the knobs named in ``skip``), its help and
    default taken from the config classes. Flags not given stay out of the namespace
    (``knobs_from_args`` then keeps the default)."""
    for name, cls in sections.items():
        group = parser.add_argument_group(f"{name} (params.yaml section '{name}')")
        for f in dataclasses.fields(cls):
            meta, default, dest = f.metadata, f.default, _knob_name(f)
            if dest in skip:
                continue
            flag = _flag(f)
            # argparse expands %-formats in help: a literal % is written %%
            text = f"{meta['help']} (default: {default})".replace("%", "%%")
            if isinstance(default, bool):
                action = "store_false" if default else "store_true"
                group.add_argument(
                    flag, dest=dest, action=action, default=argparse.SUPPRESS, help=text
                )
                continue
            many = isinstance(default, tuple)
            group.add_argument(
                flag,
                dest=dest,
                nargs="+" if many else None,
                type=type(default[0]) if many and default else str if many else type(default),
                choices=meta.get("choices") or None,
                metavar=dest.upper() if meta.get("choices") and len(meta["choices"]) > 4 else None,
                required=dest in required,
                default=argparse.SUPPRESS,
                help=text,
            )


def knobs_from_args(args: argparse.Namespace, section: type | None = None) -> dict[str, Any]:
    """The knobs given on the command line (by ``add_flags``' flags): the pruning knobs, or
    those of one ``section`` class."""
    names = KNOBS if section is None else {_knob_name(f) for f in dataclasses.fields(section)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}


# The params file.

T = TypeVar("T")


def read_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a dict, with a clear error if missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise KPruneError(f"params file {p} does not exist; pass --params PATH to a params.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KPruneError(f"params file {p} is not valid YAML: {exc}".splitlines()[0]) from None
    except UnicodeDecodeError:
        raise KPruneError(f"params file {p} is not UTF-8 text; save it as UTF-8") from None
    if data is None:
        raise KPruneError(
            f"params file {p} is empty; it needs the sections of the project's params.yaml"
        )
    if not isinstance(data, dict):
        raise KPruneError(f"params file {p} must hold a mapping of sections, got {type(data)}")
    return data


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_mapping(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise KPruneError(f"unknown key '{where}.{key}' in params; known keys: {known}")
        if not _type_ok(value, hints[key]):
            raise KPruneError(
                f"'{where}.{key}' must be {_type_name(hints[key])}, got {value!r}; fix params.yaml"
            )
        if isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            data[key] = tuple(value)
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise KPruneError(f"invalid '{where}' section: {exc}") from None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def load_section(params: str | Path | dict[str, Any], section: str, cls: type[T]) -> T:
    """Read one section of a params file (or dict) into dataclass ``cls``."""
    data = params if isinstance(params, dict) else read_params(params)
    value = data.get(section, {})
    if value is not None and not isinstance(value, dict):
        raise KPruneError(f"'{section}' in params must be a mapping of keys, got {value!r}")
    return from_mapping(cls, value, section)


def section(params_path: str, name: str):
    """Section ``name`` of the params file, typed and validated."""
    return load_section(params_path, name, SECTIONS[name])


def validate_params(params_path: str) -> None:
    """Every known section parses (unknown keys and wrong types name the key)."""
    data = read_params(params_path)
    unknown = sorted(set(data) - set(SECTIONS) - {"teachers"})
    if unknown:
        raise KPruneError(
            f"unknown section '{unknown[0]}' in {params_path}; known sections: "
            f"{', '.join(SECTIONS)}, teachers"
        )
    for name, cls in SECTIONS.items():
        load_section(data, name, cls)
    teacher_runs(data)


def prune_config(params: str | Path | dict[str, Any]) -> PruneConfig:
    """The pruning configuration of a params file: its sample, measure, search and
    prune_tune sections."""
    data = params if isinstance(params, dict) else read_params(params)
    return PruneConfig(
        **{name: load_section(data, name, cls) for name, cls in PRUNE_SECTIONS.items()}
    )
