"""Loading models and tokenizers for a task, with one-line errors, and running them."""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kprune.data.batching import Encoded, iterate
from kprune.data.tasks import TaskSpec
from kprune.errors import KPruneError, first_line
from kprune.hub import model_is_cached, require_hub

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
        check_model_files(p)
        return s
    if s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep + os.sep in s:
        raise KPruneError(f"model folder {s} does not exist; check the path")
    # a hub name such as "bert-base-uncased" or "org/model"
    require_hub(f"model '{s}'", offline_var="HF_HUB_OFFLINE", cached=model_is_cached(s))
    return s


def check_model_files(folder: Path) -> None:
    """What transformers would report as a traceback, or not at all: a config.json that is not
    JSON, a safetensors file that is truncated or not safetensors."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise KPruneError(
            f"{folder / 'config.json'} is not valid JSON ({first_line(exc)}); re-save the checkpoint"
        ) from None
    if not isinstance(config, dict):
        raise KPruneError(
            f"{folder / 'config.json'} must hold a JSON object; re-save the checkpoint"
        )
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose tensors end where the file ends."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = f.read(n) if 0 < n <= min(size - 8, 100_000_000) else b""
    try:
        meta = json.loads(header)
        end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise KPruneError(
            f"weights file {path} is not safetensors or is cut short ({size} bytes, no readable "
            "header); re-save or re-download it"
        ) from None
    if 8 + n + end != size:
        raise KPruneError(
            f"weights file {path} is truncated or padded: {size} bytes, its header says "
            f"{8 + n + end}; re-save or re-download it"
        )


def check_vocab_fits(tokenizer, source: str) -> None:
    """The tokenizer's ids must index the model's embeddings (else a text that uses a late
    token fails deep inside the model, or reads another token's row)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return
    vocab = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise KPruneError(
            f"the tokenizer of {source} has {len(tokenizer)} tokens but the model embeds "
            f"{vocab}; save the tokenizer the model was trained with"
        )


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
        tokenizer = AutoTokenizer.from_pretrained(src)
    except Exception as exc:
        raise KPruneError(
            f"no usable tokenizer in '{src}' ({first_line(exc)}); save the tokenizer with the model"
        ) from None
    check_vocab_fits(tokenizer, src)
    return tokenizer


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
        raise KPruneError(f"cannot load model config from '{src}' ({first_line(exc)})") from None
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
            src, config=config, ignore_mismatched_sizes=True, weights_only=True
        )
    except pickle.UnpicklingError:
        raise KPruneError(
            f"the weights of '{src}' hold Python objects besides tensors, which kprune never "
            "unpickles; convert them to safetensors where you trust the code"
        ) from None
    except ValueError as exc:
        raise KPruneError(f"'{src}' cannot be a sequence classifier: {first_line(exc)}") from None
    except OSError as exc:
        raise KPruneError(f"cannot load model weights from '{src}' ({first_line(exc)})") from None
    return model


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
