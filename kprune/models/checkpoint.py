"""Checkpoints: load a fine-tuned model, save a pruned one and load it back (content-hashed)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from torch import nn

from kprune.atomic import atomic_path, write_json
from kprune.data.fetch import sha256_of
from kprune.data.tasks import TaskData
from kprune.errors import KPruneError
from kprune.models import pruned_modeling
from kprune.models.adapters import adapter_for_type, get_adapter
from kprune.models.loading import check_model_source, load_tokenizer
from kprune.pruning.masks import Masks
from kprune.pruning.surgery import prune_model
from kprune.version import __version__

RECORD = "kprune.json"
MODELING_FILE = "pruned_modeling.py"  # kprune/models/pruned_modeling.py, copied beside the weights
AUTO_CLASS = {"seq": "AutoModelForSequenceClassification", "qa": "AutoModelForQuestionAnswering"}
HEAD_PREFIXES = ("classifier", "qa_outputs", "pre_classifier")


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
        if "does not recognize" in str(exc) and (Path(src) / "config.json").is_file():
            model_type = json.loads((Path(src) / "config.json").read_text()).get("model_type")
            adapter_for_type(str(model_type))  # names the families kprune supports
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
        # weights only: a pytorch_model.bin is unpickled without running any of its code
        model, info = cls.from_pretrained(src, output_loading_info=True, weights_only=True)
    except pickle.UnpicklingError:
        raise KPruneError(
            f"the weights of '{src}' hold Python objects besides tensors, which kprune never "
            "unpickles; convert them to safetensors where you trust the code"
        ) from None
    except (OSError, ValueError) as exc:
        hint = "; save the weights with the model" if "no file named" in str(exc) else ""
        raise KPruneError(
            f"cannot load weights of '{src}' ({exc})".splitlines()[0] + hint
        ) from None
    head = sorted(k for k in info.get("missing_keys", ()) if k.startswith(HEAD_PREFIXES))
    if head and not allow_untrained_head:
        raise KPruneError(
            f"'{src}' has no trained task head (missing {head[0]}); fine-tune it "
            "first (`kprune finetune`) or pass --allow-untrained-head"
        )
    return model.eval()


def check_task_fits(model: nn.Module, task: TaskData) -> None:
    """The model's output size fits the task (labels, or one output for a regression)."""
    n = model.config.num_labels
    if task.spec.kind == "classification" and n != task.spec.num_labels:
        raise KPruneError(
            f"the model has {n} labels but task '{task.spec.name}' has "
            f"{task.spec.num_labels}; use the checkpoint fine-tuned on this task"
        )
    if task.spec.kind == "regression" and n != 1:
        raise KPruneError(f"task '{task.spec.name}' is a regression but the model has {n} outputs")


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as saved (parameters and buffers, shared ones once)."""
    tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_pruned(
    model: nn.Module,
    out_dir: str | Path,
    masks: Masks | None = None,
    tokenizer=None,
    report: dict | None = None,
) -> Path:
    """Write weights (safetensors), config, kept units, tokenizer and report atomically.

    Without ``tokenizer``, the tokenizer of the teacher folder the report names (its
    ``teacher``: what ``kprune.prune`` and ``kprune.sparsify`` fill) is saved.
    The folder also loads with plain transformers, without kprune: config.json names each
    layer's kept widths and, in ``auto_map``, the class of ``pruned_modeling.py`` (copied
    beside the weights) that builds the model at those widths (``trust_remote_code=True``).
    """
    masks = masks or getattr(model, "kprune_masks", None)
    tokenizer = tokenizer or teacher_tokenizer(report)
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
    kept = masks.kept_per_layer()
    auto = AUTO_CLASS[adapter.head_type(model)]
    model.config.update(
        {
            pruned_modeling.HEADS_KEY: kept["heads"],
            pruned_modeling.FFN_KEY: kept["neurons"],
            "auto_map": {auto: f"{Path(MODELING_FILE).stem}.Pruned{type(model).__name__}"},
        }
    )
    out = Path(out_dir)
    with atomic_path(out, is_dir=True, needs=weight_bytes(model)) as tmp:
        model.save_pretrained(tmp)
        shutil.copyfile(pruned_modeling.__file__, tmp / MODELING_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        record["weights_sha256"] = {f.name: sha256_of(f) for f in sorted(tmp.glob("*.safetensors"))}
        write_json(tmp / RECORD, record)
        if report is not None:
            write_json(tmp / "report.json", report)
    return out


def teacher_tokenizer(report: dict | None):
    """The tokenizer of the teacher ``report`` names: its folder, or a hub name (None: none
    named, a folder gone, or a hub name that cannot be reached)."""
    teacher = (report or {}).get("teacher")
    if not teacher:
        return None
    try:
        return load_tokenizer(teacher)
    except KPruneError:
        return None


def hashed_weights(folder: Path, record: dict) -> list[Path]:
    """The weight files ``record`` (kprune.json) lists, each checked against its hash; one
    line if one is missing, fails its hash, or a weight file it does not list lies beside
    them (it would be loaded over the hashed tensors)."""
    expected = record.get("weights_sha256") or {}
    present = sorted(f.name for f in folder.glob("*.safetensors"))
    if not present:
        raise KPruneError(f"{folder} has no .safetensors weights; prune again")
    extra = [name for name in present if expected and name not in expected]
    if extra:
        raise KPruneError(
            f"{folder / extra[0]} is not one of the weight files {RECORD} hashes; remove it "
            "(kprune loads only the hashed weights) or prune again"
        )
    missing = [name for name in expected if name not in present]
    if missing:
        raise KPruneError(f"{folder / missing[0]} is missing; prune again")
    for name in present:
        f = folder / name
        if name in expected and sha256_of(f) != expected[name]:
            raise KPruneError(f"{f} fails its content hash (corrupt or truncated); prune again")
    return [folder / name for name in present]


def verify(path: str | Path) -> list[str]:
    """Check a pruned folder someone sent: its record, the hashes of its weights, that every
    tensor has the kept units' shape (by loading it), and that its modeling file (what
    ``trust_remote_code=True`` runs) is byte for byte this kprune's. Returns what was
    checked, one line each; raises KPruneError (one line) at the first problem."""
    folder = Path(path)
    model = load_pruned(folder)  # record, hashes, shapes
    record = json.loads((folder / RECORD).read_text())
    lines = [
        f"{RECORD}: written by kprune {record.get('kprune_version', '?')}, family "
        f"{record.get('family', '?')}",
        f"weights: {len(record.get('weights_sha256') or {})} file(s) match their sha256",
        f"shapes: every tensor fits the kept units ({sum(p.numel() for p in model.parameters()):,}"
        " parameters)",
    ]
    modeling = folder / MODELING_FILE
    if not modeling.is_file():
        lines.append(f"{MODELING_FILE}: absent (plain transformers loading needs it)")
    elif sha256_of(modeling) != sha256_of(Path(pruned_modeling.__file__)):
        raise KPruneError(
            f"{modeling} differs from this kprune's {MODELING_FILE}: trust_remote_code=True "
            "would run code kprune did not write; do not load it with transformers, or "
            "compare it by hand"
        )
    else:
        lines.append(f"{MODELING_FILE}: identical to this kprune's (what trust_remote_code runs)")
    extra_code = sorted(p.name for p in folder.glob("*.py") if p.name != MODELING_FILE)
    if extra_code:
        raise KPruneError(
            f"{folder / extra_code[0]}: a Python file kprune does not write; remove it before "
            "loading with trust_remote_code=True"
        )
    return lines


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
    try:
        masks = Masks.from_dict(record["kept"], record["heads"], record["neurons"])
        prune_model(model, masks)
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        raise KPruneError(
            f"{record_path} does not describe kept units of this model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it was edited: prune again"
        ) from None
    state: dict = {}
    for f in hashed_weights(folder, record):
        try:
            state.update(load_file(f))
        except Exception as exc:
            raise KPruneError(f"{f} is unreadable ({type(exc).__name__}); prune again") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor's shape is not the kept units'
        first = next((x for x in str(exc).splitlines() if "size mismatch" in x), str(exc))
        raise KPruneError(
            f"{folder}: the weights do not fit the kept units of {RECORD} "
            f"({first.strip().rstrip('.')}); one of them was edited: prune again"
        ) from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise KPruneError(
            f"{folder}: weights do not match the kept units (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); prune again"
        )
    model.kprune_masks = masks
    return model.eval()
