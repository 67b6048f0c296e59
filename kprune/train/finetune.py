"""Fine-tune an encoder on a task: bucketed batches, AdamW with linear warm-up and decay."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kprune.atomic import atomic_path, write_json
from kprune.config import FinetuneConfig
from kprune.data.batching import encode, iterate
from kprune.data.tasks import TaskData
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.models.loading import load_for_task, load_tokenizer, model_inputs, predict, task_loss
from kprune.train.metrics import compute_metrics

log = logging.getLogger(__name__)


def finetune(
    model_source: str,
    task: TaskData,
    out_dir: str | Path,
    cfg: FinetuneConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Fine-tune, evaluate on dev and test, save checkpoint + tokenizer + metrics.json; the
    training seconds go to ``run_log_path(out_dir)``. Returns the metrics with the seconds."""
    cfg = cfg or FinetuneConfig()
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(model_source)
    model = load_for_task(model_source, task.spec).to(dev)
    train_df = task.split("train")
    if cfg.max_train_examples is not None:
        train_df = train_df.iloc[: cfg.max_train_examples]
    train = encode(tokenizer, train_df, cfg.max_length)
    dev_enc = encode(tokenizer, task.split("dev"), cfg.max_length)
    test_enc = encode(tokenizer, task.split("test"), cfg.max_length)
    if len(train) < 2:
        raise KPruneError(f"task '{task.spec.name}' has {len(train)} training example(s); need 2+")

    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = _optimizer(model, cfg)
    warmup = int(total * cfg.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / max(1, warmup)
            if s < warmup
            else max(0.0, (total - s) / max(1, total - warmup))
        ),
    )
    history = []
    start = time.perf_counter()
    step = epoch = 0
    partial = partial_path(out_dir)
    key = _run_key(model_source, task, cfg, len(train), len(dev_enc))
    resumed = _load_partial(partial, key, model, optimizer, sched)
    if resumed is not None:
        epoch, step, history = resumed["epoch"], resumed["step"], resumed["history"]
        start -= resumed["seconds"]
        log.info("resuming %s from epoch %d (step %d of %d)", partial, epoch, step, total)
    bar = tqdm(total=total, desc=f"finetune {task.spec.name}", disable=None if progress else True)
    bar.update(step)
    while step < total:
        model.train()
        running = 0.0
        for _, batch in iterate(train, cfg.batch_size, dev, shuffle=True, seed=cfg.seed + epoch):
            if step >= total:
                break
            logits = model(**model_inputs(model, batch)).logits
            loss = task_loss(logits, batch["labels"], task.spec.kind)
            if not torch.isfinite(loss):
                raise KPruneError(f"training loss became {loss.item()} at step {step}; lower lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            sched.step()
            optimizer.zero_grad(set_to_none=True)
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
        epoch += 1
        dev_metrics = _evaluate(model, dev_enc, task, cfg, dev)
        history.append({"epoch": epoch, "step": step, "loss": running, **dev_metrics})
        log.info("epoch %d: dev %s", epoch, dev_metrics)
        bar.write(f"epoch {epoch}: loss {running:.4f} dev {_fmt(dev_metrics)}")
        if step < total:  # a stop from here on resumes at the next epoch
            _save_partial(partial, key, model, optimizer, sched, epoch, step, history, start)
    bar.close()
    train_seconds = time.perf_counter() - start

    metrics = {
        "task": task.spec.name,
        "metric": task.spec.metric,
        "dev": _evaluate(model, dev_enc, task, cfg, dev),
        "test": _evaluate(model, test_enc, task, cfg, dev),
        "train_examples": len(train),
        "device": str(dev),
        "history": history,
        "config": asdict(cfg),
        "base_model": str(model_source),
    }
    # the folder holds only what a rerun reproduces byte for byte (so DVC's lock stays put);
    # the run's own measurements go beside it
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.cpu().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", metrics)
    run = {"train_seconds": round(train_seconds, 1), "device": str(dev)}
    write_json(run_log_path(out_dir), run)
    partial.unlink(missing_ok=True)
    return {**metrics, **run}


def partial_path(teacher_dir: str | Path) -> Path:
    """Where an unfinished fine-tuning keeps its state after each epoch (beside the teacher
    folder): a rerun with the same inputs resumes there, and the finished run removes it."""
    folder = Path(teacher_dir)
    return folder.with_name(folder.name + ".partial.pt")


def _run_key(model_source: str, task: TaskData, cfg: FinetuneConfig, n_train: int, n_dev: int):
    blob = json.dumps(
        [str(model_source), task.spec.name, asdict(cfg), n_train, n_dev], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_partial(path: Path, key: str, model, optimizer, sched, epoch, step, history, start):
    state = {
        "key": key,
        "epoch": epoch,
        "step": step,
        "history": history,
        "seconds": time.perf_counter() - start,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "sched": sched.state_dict(),
        "rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_partial(path: Path, key: str, model, optimizer, sched) -> dict | None:
    """The state of an unfinished run of the same inputs, loaded into ``model``, the
    optimizer and the schedule; None when there is none (or it is of other inputs, or
    unreadable: then it is started over)."""
    if not path.is_file():
        return None
    try:  # written by this function's counterpart: tensors and plain values only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or of another version: start over
        log.warning("ignoring %s (%s); starting over", path, type(exc).__name__)
        return None
    if state.get("key") != key:
        log.warning("ignoring %s: another run's (other inputs); starting over", path)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"])
    return state


def run_log_path(teacher_dir: str | Path) -> Path:
    """Where a fine-tuning run's own measurements (seconds) go: beside the teacher folder,
    outside it, so that the folder is reproducible."""
    folder = Path(teacher_dir)
    return folder.with_name(folder.name + ".run.json")


def _optimizer(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _evaluate(model, enc, task: TaskData, cfg: FinetuneConfig, dev) -> dict[str, float]:
    logits = predict(model, enc, cfg.eval_batch_size, dev)
    return {k: round(v, 5) for k, v in compute_metrics(logits, enc.labels, task.spec.kind).items()}


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def format_metrics(m: dict) -> str:
    """A short human summary of a teacher's metrics.json."""
    main = m.get("metric", "")
    lines = [f"teacher '{m.get('task')}' ({m.get('base_model', '?')}), main metric: {main}"]
    for split in ("dev", "test"):
        if split in m:
            vals = "  ".join(f"{k}={v:.4f}" for k, v in m[split].items())
            lines.append(f"  {split:5s} {vals}")
    if "train_seconds" in m:
        lines.append(
            f"  trained on {m.get('train_examples')} examples in {m['train_seconds']} s "
            f"on {m.get('device')}"
        )
    return "\n".join(lines)
