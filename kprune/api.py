"""The public API: ``prune`` a fine-tuned encoder, ``save_pruned`` / ``load_pruned`` it."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kprune import __version__
from kprune.adapters import adapter_for_type, get_adapter
from kprune.atomic import atomic_path, write_json
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.evaluation import count_params, evaluate_model
from kprune.fetch import sha256_of
from kprune.knowledge import PASS_TOKENS, PRED_FORMS, REP_FORMS, MeasureSpec
from kprune.masks import Masks
from kprune.modeling import check_model_source, load_tokenizer
from kprune.sample import draw_sample
from kprune.search import SearchSpec
from kprune.surgery import prune_model
from kprune.tasks import TaskData, load_task

log = logging.getLogger(__name__)
RECORD = "kprune.json"
HEAD_PREFIXES = ("classifier", "qa_outputs", "pre_classifier")


@dataclass(frozen=True)
class PruneConfig:
    """Knobs of one pruning run (``prune`` section of params.yaml); paper defaults."""

    reduction: float = 0.6
    tokens: int = 100_000
    gamma: float = 2.0
    lam: float = 2.5e-4
    mu: float = 64.0
    seed: int = 0
    batch_size: int = 32
    max_length: int = 128
    pred_form: str = "paper"
    rep_form: str = "paper"  # or exact: whole-head removal error (an ablation)
    ridge: float = 1e-4
    use_pred: bool = True
    use_rep: bool = True
    tune: bool = True
    mode: str = "iterative"
    search_strategy: str = "kpms"
    measure_dtype: str = "float32"  # or bfloat16 for the measurement passes
    # rows x padded length per autograd pass: bounds memory, does not change the result
    # (0: a whole batch per pass)
    pass_tokens: int = PASS_TOKENS
    # the straightforward loop (whole depth at every step, as the authors' code): same
    # result, about twice the time; for checking the fast loop
    reference_loop: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.reduction < 1:
            raise KPruneError(
                f"reduction must be in [0, 1) (fraction of FLOPs removed), got {self.reduction}"
            )
        for name in ("gamma", "lam", "mu", "ridge"):
            if getattr(self, name) < 0:
                raise KPruneError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gamma == 0:
            raise KPruneError("gamma (temperature) must be > 0")
        if self.tokens < 1 or self.batch_size < 1 or self.max_length < 8:
            raise KPruneError("tokens and batch_size must be >= 1 and max_length >= 8")
        if self.pass_tokens < 0:
            raise KPruneError(
                f"pass_tokens must be >= 0 (0: whole batches), got {self.pass_tokens}"
            )
        if self.measure_dtype not in ("float32", "bfloat16"):
            raise KPruneError(
                f"measure_dtype must be float32 or bfloat16, got {self.measure_dtype!r}"
            )
        if self.search_strategy not in ("kpms", "uniform"):
            raise KPruneError(
                f"search_strategy must be kpms or uniform, got {self.search_strategy!r}"
            )
        if self.mode not in ("iterative", "oneshot"):
            raise KPruneError(f"mode must be iterative or oneshot, got {self.mode!r}")
        if self.pred_form not in PRED_FORMS:
            raise KPruneError(f"pred_form must be one of {PRED_FORMS}, got {self.pred_form!r}")
        if self.rep_form not in REP_FORMS:
            raise KPruneError(f"rep_form must be one of {REP_FORMS}, got {self.rep_form!r}")


def load_model(source: str | Path, allow_untrained_head: bool = False) -> nn.Module:
    """A fine-tuned sequence-classification or QA model from a folder or hub name.

    A checkpoint whose task head is missing (a base model: the head would be random) is
    refused unless ``allow_untrained_head``.
    """
    from transformers import AutoConfig

    src = check_model_source(source)
    try:
        config = AutoConfig.from_pretrained(src)
    except Exception as exc:
        raise KPruneError(f"cannot read model config of '{src}' ({exc})".splitlines()[0]) from None
    adapter_for_type(config.model_type)  # unsupported families fail here, before loading
    if (Path(src) / RECORD).is_file():
        return load_pruned(src)
    arch = (config.architectures or ["?"])[0]
    import transformers

    cls = getattr(transformers, arch, None)
    if cls is None or not arch.endswith(("ForSequenceClassification", "ForQuestionAnswering")):
        raise KPruneError(
            f"'{src}' is a {arch}; kprune needs a fine-tuned *ForSequence"
            "Classification or *ForQuestionAnswering checkpoint (see `kprune "
            "finetune`)"
        )
    try:
        model, info = cls.from_pretrained(src, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise KPruneError(f"cannot load weights of '{src}' ({exc})".splitlines()[0]) from None
    head = [k for k in info.get("missing_keys", ()) if k.startswith(HEAD_PREFIXES)]
    if head and not allow_untrained_head:
        raise KPruneError(
            f"'{src}' has no trained task head (missing {head[0]}); fine-tune it "
            "first (`kprune finetune`) or pass --allow-untrained-head"
        )
    return model.eval()


@dataclass
class MaskedResult:
    """The tuned full-size model with its masks, before surgery."""

    model: nn.Module
    masks: Masks
    report: dict
    tokenizer: object


def task_sample(
    model: nn.Module, tokenizer, task: TaskData, config: PruneConfig, device: torch.device
):
    """The pruning sample of ``task``'s training split under ``config``."""
    return draw_sample(
        model,
        tokenizer,
        task.split("train"),
        config.tokens,
        config.seed,
        config.batch_size,
        config.max_length,
        device,
    )


def prune_masked(
    model: nn.Module,
    task: TaskData,
    config: PruneConfig,
    tokenizer,
    device: torch.device,
    progress: bool = True,
) -> MaskedResult:
    """Run the K-prune loop on ``model`` in place: masks chosen, output projections tuned.

    The model keeps its full size; ``surgery.prune_model(model, masks)`` removes the units.
    """
    from kprune.steps import measure_knowledge, prune_tune, search_masks

    _check_task_fits(model, task)
    model = model.to(device).eval()
    t = time.perf_counter()
    data = task_sample(model, tokenizer, task, config, device)
    t_draw = time.perf_counter() - t
    mspec = MeasureSpec(
        task.spec.kind,
        config.gamma,
        config.pred_form,
        config.use_pred,
        config.seed,
        config.pass_tokens,
        config.rep_form,
    )
    sspec = SearchSpec(
        config.lam, config.mu, config.use_pred, config.use_rep, config.search_strategy
    )
    masks, t_search = None, 0.0
    if config.mode == "oneshot":
        from kprune.steps import flops_of

        t = time.perf_counter()
        k = measure_knowledge(model, data, mspec, config.batch_size, device)
        masks = search_masks(k, flops_of(model, data), config.reduction, sspec)
        t_search = time.perf_counter() - t
    res = prune_tune(
        model,
        data,
        task.spec.kind,
        config.reduction,
        mspec,
        sspec,
        mode=config.mode,
        tune=config.tune,
        ridge=config.ridge,
        batch_size=config.batch_size,
        masks=masks,
        device=device,
        progress=progress,
        measure_dtype=config.measure_dtype,
        reference_loop=config.reference_loop,
    )
    report = {
        "task": task.spec.name,
        "metric": task.spec.metric,
        "config": asdict(config),
        "device": str(device),
        **res.report,
    }
    report["seconds_per_phase"] = {
        "sample": t_draw,
        "oneshot_measure_search": t_search,
        **report["seconds_per_phase"],
    }
    return MaskedResult(res.model, res.masks, report, tokenizer)


def prune(
    model: str | Path | nn.Module,
    task: TaskData | str,
    config: PruneConfig = PruneConfig(),
    tokenizer=None,
    device: str = "auto",
    progress: bool = True,
    eval_split: str | None = "dev",
    method: str = "kprune",
    allow_untrained_head: bool = False,
) -> tuple[nn.Module, dict]:
    """Prune ``model`` to ``1 - config.reduction`` of its FLOPs on ``task``'s training sample.

    Returns the physically pruned model and a report (FLOPs, params, metric before/after,
    units kept per layer, reconstruction errors before/after tuning, seconds per phase).
    An in-memory model is copied, never changed.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    if isinstance(model, str | Path):
        tokenizer = tokenizer or load_tokenizer(str(model))
        model = load_model(model, allow_untrained_head)
    else:
        model = copy.deepcopy(model)
    if tokenizer is None:
        raise KPruneError("pass a tokenizer with an in-memory model")
    task = load_task(task) if isinstance(task, str) else task
    _check_task_fits(model, task)

    t = time.perf_counter()
    before = (
        evaluate_model(model, tokenizer, task, eval_split, config.max_length, dev)
        if eval_split
        else None
    )
    t_before = time.perf_counter() - t
    from kprune.methods import config_for, get_method, masker_for

    chosen = get_method(method)
    masker = masker_for(chosen)
    if masker is None:
        result = prune_masked(model, task, config_for(chosen, config), tokenizer, dev, progress)
    else:
        result = masker(chosen, model, task, config, tokenizer, dev, progress)
    result.report["method"] = chosen.name
    t = time.perf_counter()
    pruned = prune_model(result.model, result.masks)
    t_surgery = time.perf_counter() - t
    t = time.perf_counter()
    after = (
        evaluate_model(pruned, tokenizer, task, eval_split, config.max_length, dev)
        if eval_split
        else None
    )
    report = result.report
    report["seconds_per_phase"].update(
        {
            "evaluate_before": t_before,
            "surgery": t_surgery,
            "evaluate_after": time.perf_counter() - t,
        }
    )
    report["seconds_per_phase"] = {k: round(v, 3) for k, v in report["seconds_per_phase"].items()}
    report.update(
        {
            "eval_split": eval_split,
            "metric_before": before,
            "metric_after": after,
            "params_after": count_params(pruned),
            "seconds": round(time.perf_counter() - t_start, 3),
        }
    )
    report["params_kept"] = report["params_after"] / report["params_before"]
    pruned.kprune_masks = result.masks
    pruned.kprune_tokenizer = tokenizer
    return pruned, report


def _check_task_fits(model: nn.Module, task: TaskData) -> None:
    n = model.config.num_labels
    if task.spec.kind == "classification" and n != task.spec.num_labels:
        raise KPruneError(
            f"the model has {n} labels but task '{task.spec.name}' has "
            f"{task.spec.num_labels}; use the checkpoint fine-tuned on this task"
        )
    if task.spec.kind == "regression" and n != 1:
        raise KPruneError(f"task '{task.spec.name}' is a regression but the model has {n} outputs")


def save_pruned(
    model: nn.Module,
    out_dir: str | Path,
    masks: Masks | None = None,
    tokenizer=None,
    report: dict | None = None,
) -> Path:
    """Write weights (safetensors), config, kept units, tokenizer and report atomically."""
    masks = masks or getattr(model, "kprune_masks", None)
    tokenizer = tokenizer or getattr(model, "kprune_tokenizer", None)
    if masks is None:
        raise KPruneError("save_pruned needs the masks of the pruned model")
    adapter = get_adapter(model)
    heads, neurons = masks.heads.shape[1], masks.neurons.shape[1]
    record = {
        "kprune_version": __version__,
        "family": adapter.family,
        "heads": heads,
        "neurons": neurons,
        "kept": masks.to_dict(),
    }
    out = Path(out_dir)
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        record["weights_sha256"] = {f.name: sha256_of(f) for f in sorted(tmp.glob("*.safetensors"))}
        write_json(tmp / RECORD, record)
        if report is not None:
            write_json(tmp / "report.json", report)
    return out


def load_pruned(path: str | Path) -> nn.Module:
    """Load a model written by ``save_pruned`` into an ordinary transformers model."""
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(path)
    record_path = folder / RECORD
    if not record_path.is_file():
        raise KPruneError(f"{folder} has no {RECORD}; is it a folder written by kprune prune?")
    try:
        record = json.loads(record_path.read_text())
        config = AutoConfig.from_pretrained(folder)
    except (json.JSONDecodeError, OSError, ValueError) as exc:
        raise KPruneError(f"{folder} is corrupt ({type(exc).__name__}); prune again") from None
    cls = getattr(transformers, (config.architectures or [""])[0], None)
    if cls is None:
        raise KPruneError(f"{folder}: unknown architecture {config.architectures}")
    model = cls(config)
    masks = Masks.from_dict(record["kept"], record["heads"], record["neurons"])
    prune_model(model, masks)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise KPruneError(f"{folder} has no .safetensors weights; prune again")
    expected = record.get("weights_sha256", {})
    for f in weights:
        if f.name in expected and sha256_of(f) != expected[f.name]:
            raise KPruneError(f"{f} fails its content hash (corrupt or truncated); prune again")
    state: dict = {}
    for f in weights:
        try:
            state.update(load_file(f))
        except Exception as exc:
            raise KPruneError(f"{f} is unreadable ({type(exc).__name__}); prune again") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise KPruneError(
            f"{folder}: weights do not match the kept units (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); prune again"
        )
    model.kprune_masks = masks
    return model.eval()
