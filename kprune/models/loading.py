"""Loading models and tokenizers for a task, with one-line errors, and running them."""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kprune.data.batching import Encoded, iterate
from kprune.data.tasks import TaskSpec
from kprune.errors import KPruneError

log = logging.getLogger(__name__)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def check_model_source(source: str | os.PathLike) -> str:
    """A local folder must exist and hold config.json; anything else is tried as a hub name."""
    s = str(source)
    p = Path(s)
    if p.exists():
        if not p.is_dir():
            raise KPruneError(f"model path {s} is a file; pass the model folder (with config.json)")
        if not (p / "config.json").is_file():
            raise KPruneError(
                f"model folder {s} has no config.json; is it a transformers checkpoint?"
            )
        if not os.access(p / "config.json", os.R_OK):
            raise KPruneError(f"model folder {s} is not readable; check its permissions")
        return s
    if s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep + os.sep in s:
        raise KPruneError(f"model folder {s} does not exist; check the path")
    return s  # a hub name such as "bert-base-uncased" or "org/model"


def load_tokenizer(source: str):
    """Tokenizer of a model folder or hub name."""
    from transformers import AutoTokenizer

    src = check_model_source(source)
    folder = Path(src)
    if folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES):
        # transformers would silently build an empty tokenizer here
        raise KPruneError(
            f"model folder {src} has no tokenizer files ({', '.join(TOKENIZER_FILES)}"
            "); save the tokenizer with the model (tokenizer.save_pretrained)"
        )
    try:
        return AutoTokenizer.from_pretrained(src)
    except Exception as exc:
        raise KPruneError(
            f"no usable tokenizer in '{src}' ({_first_line(exc)}); save the tokenizer with the model"
        ) from None


def load_for_task(source: str, spec: TaskSpec, *, allow_new_head: bool = True) -> nn.Module:
    """A sequence-classification model for ``spec`` (regression: one output)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    src = check_model_source(source)
    if spec.kind == "qa":
        raise KPruneError(
            "extractive QA fine-tuning is not supported by `finetune`; use a QA checkpoint"
        )
    try:
        config = AutoConfig.from_pretrained(src)
    except Exception as exc:
        raise KPruneError(f"cannot load model config from '{src}' ({_first_line(exc)})") from None
    config.num_labels = spec.num_labels
    config.problem_type = (
        "regression" if spec.kind == "regression" else "single_label_classification"
    )
    if spec.label_names and spec.kind == "classification":
        config.id2label = dict(enumerate(spec.label_names))
        config.label2id = {v: k for k, v in config.id2label.items()}
    try:
        # a head of another size (e.g. a 2-class checkpoint fine-tuned for regression) is re-initialised
        model = AutoModelForSequenceClassification.from_pretrained(
            src, config=config, ignore_mismatched_sizes=True
        )
    except ValueError as exc:
        raise KPruneError(f"'{src}' cannot be a sequence classifier: {_first_line(exc)}") from None
    except OSError as exc:
        raise KPruneError(f"cannot load model weights from '{src}' ({_first_line(exc)})") from None
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def frozen(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` (on ``device`` if given) in eval mode with every weight frozen, so that
    gradients reach only the unit masks."""
    if device is not None:
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_inputs(model: nn.Module, batch: dict) -> dict:
    """The batch keys that the model's forward accepts (DistilBERT takes no token types)."""
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in batch.items() if k in params and k != "labels"}


def task_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Training loss: cross-entropy for classification, MSE for regression."""
    if kind == "regression":
        return nn.functional.mse_loss(logits.view(-1), labels.float().view(-1))
    return nn.functional.cross_entropy(logits, labels.long())


@torch.no_grad()
def predict(
    model: nn.Module,
    enc: Encoded,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Logits for every example, in the original order."""
    from tqdm.auto import tqdm

    model.eval()
    out: np.ndarray | None = None
    n_batches = -(-len(enc) // batch_size)
    for idx, batch in tqdm(
        iterate(enc, batch_size, device),
        total=n_batches,
        desc=desc,
        disable=None if progress else True,
        leave=False,
    ):
        logits = model(**model_inputs(model, batch)).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    if out is None:
        raise KPruneError("nothing to predict: the split is empty")
    return out
