"""SparseBERT (Xu et al., NAACL 2021): prune each encoder matrix's smallest weights while a
student is distilled from the fine-tuned teacher.

The student starts from the pre-trained encoder the teacher was fine-tuned from (ablation:
from the teacher itself; or, combined with K-prune, from a structurally pruned model). Every
step: teacher and student forward on a training batch, the distillation loss of
kprune.sparse.distill, one AdamW step, pruned weights back to zero; at ``mask_updates`` evenly spaced
steps the magnitude mask is raised along the cubic schedule of kprune.sparse.schedule.

    model, report = kprune.sparsify("data/teachers/minilm-l6/rt", "rt", SparsifyConfig(sparsity=0.9))
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from kprune.atomic import atomic_path, write_json
from kprune.config import SparsifyConfig
from kprune.data.batching import encode, iterate
from kprune.data.tasks import TaskData, load_task
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.models.checkpoint import check_task_fits, load_model, save_pruned, teacher_tokenizer
from kprune.models.loading import frozen, load_for_task, load_tokenizer
from kprune.report import SparseReport, add_trained, sparse_fields
from kprune.sparse.distill import (
    AttentionScores,
    LossWeights,
    distill_loss,
    kept_heads,
    run,
    uses_teacher,
)
from kprune.sparse.schedule import WeightMasks, cubic_sparsity, matrix_nonzero, update_steps
from kprune.train.evaluation import evaluate_model

log = logging.getLogger(__name__)


def base_of(teacher_dir: str | Path) -> str:
    """The pre-trained encoder a teacher was fine-tuned from (its metrics.json's base_model)."""
    metrics = Path(teacher_dir) / "metrics.json"
    try:
        base = json.loads(metrics.read_text()).get("base_model")
    except (OSError, json.JSONDecodeError):
        base = None
    if not base:
        raise KPruneError(
            f"the teacher {teacher_dir} does not say which pre-trained encoder it was "
            "fine-tuned from (no base_model in metrics.json); pass --base FOLDER"
        )
    return str(base)


def check_same_architecture(student: nn.Module, teacher: nn.Module, base: str) -> None:
    """Hidden states and attention scores are matched layer by layer: the shapes must agree."""
    s, t = student.config, teacher.config
    ds, dt = get_adapter(student).dims(student), get_adapter(teacher).dims(teacher)
    if s.model_type != t.model_type or ds != dt:
        names = "layers, heads, head dim, hidden, FFN"
        raise KPruneError(
            f"the student base {base} ({s.model_type}, {names} = {ds}) differs from the "
            f"teacher ({t.model_type}, {dt}); pass the encoder the teacher was fine-tuned from "
            "with --base"
        )


def initial_student(
    teacher: nn.Module, task: TaskData, base: str | None, from_pruned=None
) -> nn.Module:
    """The student before training: a K-prune model (``from_pruned``), the teacher, or the
    pre-trained encoder ``base`` with a new task head."""
    if from_pruned is not None:
        student = load_model(from_pruned)
        if getattr(student, "kprune_masks", None) is None:
            raise KPruneError(
                f"--from-pruned {from_pruned} is not a folder written by kprune prune; pass a "
                "K-prune model (or leave --from-pruned out)"
            )
        check_task_fits(student, task)
        return student
    if base is None:
        return copy.deepcopy(teacher)
    student = load_for_task(base, task.spec)
    check_same_architecture(student, teacher, base)
    return student


def _optimizer(model: nn.Module, masks: WeightMasks, cfg: SparsifyConfig):
    pruned = {id(w) for w in masks.weights.values()}
    decay = [p for p in model.parameters() if p.ndim >= 2 and id(p) in pruned]
    rest = [p for p in model.parameters() if not (p.ndim >= 2 and id(p) in pruned)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    groups.append({"params": rest, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def sparsify(
    teacher: str | Path,
    task: TaskData | str,
    config: SparsifyConfig | None = None,
    from_pruned: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> tuple[nn.Module, SparseReport]:
    """Distil ``teacher`` into a student whose encoder matrices reach ``config.sparsity``;
    returns the student (dense-shaped, zeros in place) and its report. ``from_pruned``: a
    K-prune model folder to start from (K-prune + SparseBERT)."""
    t_start = time.perf_counter()
    cfg = (config or SparsifyConfig()).resolved()
    dev = resolve_device(device)
    task = load_task(task) if isinstance(task, str) else task
    if task.spec.kind == "qa":
        raise KPruneError("sparsify trains on sequence classification or regression tasks, not QA")
    teacher_model = load_model(teacher)
    check_task_fits(teacher_model, task)
    tokenizer = load_tokenizer(str(teacher))
    torch.manual_seed(cfg.seed)
    base = None  # the pre-trained encoder of a pretrained student
    if from_pruned is None and cfg.student == "pretrained":
        base = cfg.base or base_of(teacher)
    model = initial_student(teacher_model, task, base, from_pruned).to(dev)
    teacher_model = frozen(teacher_model, dev)

    train = encode(tokenizer, task.split("train"), cfg.max_length)
    if len(train) < 2:
        raise KPruneError(f"task '{task.spec.name}' has {len(train)} training example(s); need 2+")
    total = max(1, math.ceil(math.ceil(len(train) / cfg.batch_size) * cfg.epochs))
    raise_at = set(update_steps(total, cfg.mask_updates)) if cfg.sparsity > 0 else set()
    masks = WeightMasks(model)
    optimizer = _optimizer(model, masks, cfg)
    weights = LossWeights(
        cfg.att_weight, cfg.hidden_weight, cfg.logit_weight, cfg.label_weight, cfg.temperature
    )
    heads = kept_heads(model)
    # only what a weighted term compares is computed: attention scores, hidden states, the
    # teacher's pass at all (the no-distillation ablation trains on the labels alone)
    t_scores = AttentionScores(teacher_model) if weights.att else None
    s_scores = AttentionScores(model) if weights.att else None
    hidden, with_teacher = bool(weights.hidden), uses_teacher(weights)
    evaluate = _evaluator(tokenizer, task, cfg, dev)
    before = {split: evaluate(teacher_model, split) for split in ("dev", "test")}

    history, step, epoch, running = [], 0, 0, {}
    t_train = time.perf_counter()
    bar = tqdm(total=total, desc=f"sparsify {task.spec.name}", disable=None if progress else True)
    try:
        while step < total:
            model.train()
            for _, batch in iterate(
                train, cfg.batch_size, dev, shuffle=True, seed=cfg.seed + epoch
            ):
                if step >= total:
                    break
                t_out = None
                if with_teacher:
                    with torch.no_grad():
                        t_out = run(teacher_model, t_scores, batch, hidden)
                terms = distill_loss(
                    run(model, s_scores, batch, hidden),
                    t_out,
                    batch,
                    task.spec.kind,
                    weights,
                    heads,
                )
                loss = terms["total"]
                if not torch.isfinite(loss):
                    raise KPruneError(f"the loss became {loss.item()} at step {step}; lower --lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                masks.apply()
                step += 1
                if step in raise_at:
                    masks.update(cubic_sparsity(step, total, cfg.sparsity))
                for k, v in terms.items():
                    running[k] = 0.9 * running.get(k, v.item()) + 0.1 * v.item()
                bar.update(1)
                bar.set_postfix(loss=f"{running['total']:.4f}", sparsity=f"{masks.sparsity:.3f}")
            epoch += 1
            dev_metrics = evaluate(model, "dev")
            history.append(
                {"epoch": epoch, "step": step, "sparsity": masks.sparsity, **running}
                | {"dev": dev_metrics}
            )
            bar.write(f"epoch {epoch}: loss {running['total']:.4f} dev {dev_metrics}")
    finally:
        bar.close()
        for scores in (t_scores, s_scores):
            if scores is not None:
                scores.close()
    train_seconds = time.perf_counter() - t_train
    after = {split: evaluate(model, split) for split in ("dev", "test")}
    model = model.cpu()
    pruned_report = _read_report(from_pruned) if from_pruned is not None else None
    report = sparse_fields(task, cfg, teacher, base, from_pruned, pruned_report)
    add_trained(report, masks.report(), matrix_nonzero(teacher_model)[1], before, after)
    report.update(
        history=history,
        steps=total,
        mask_updates=len(raise_at),
        device=str(dev),
        train_seconds=round(train_seconds, 1),
        seconds=round(time.perf_counter() - t_start, 1),
    )
    return model, report


def _read_report(folder) -> dict:
    try:
        return json.loads((Path(folder) / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _evaluator(tokenizer, task: TaskData, cfg: SparsifyConfig, dev):
    def evaluate(model: nn.Module, split: str) -> dict[str, float]:
        return evaluate_model(model, tokenizer, task, split, cfg.max_length, dev)

    return evaluate


def save_sparse(model: nn.Module, out_dir: str | Path, report: dict) -> Path:
    """Write the student (an ordinary transformers folder, or a K-prune folder for a K-prune
    student), its tokenizer and report.json, atomically."""
    tokenizer = teacher_tokenizer(report)
    if getattr(model, "kprune_masks", None) is not None:
        return save_pruned(model, out_dir, tokenizer=tokenizer, report=report)
    out = Path(out_dir)
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json(tmp / "report.json", report)
    return out
