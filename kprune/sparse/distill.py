"""Layer-wise distillation losses of SparseBERT (TinyBERT's task-distillation objective).

  L = w_att * sum_l MSE(A_l^S, A_l^T) + w_hid * sum_l MSE(H_l^S, H_l^T) + w_logit * L_pred
      + w_label * L_task

A_l: layer l's pre-softmax attention scores, Q K^T / sqrt(d_h) per head (plus the relative
position bias in a family that adds one, MPNet), with the entries of
padded key positions set to zero in both (they carry the mask, not knowledge). H_l: the
hidden states, l = 0 (embedding output) to L, matched one to one. L_pred: soft cross-entropy
to the teacher's prediction at temperature t, -sum_c softmax(z^T/t)_c log softmax(z^S/t)_c
averaged over examples, less the teacher's entropy (a constant: the gradients are the soft
cross-entropy's, and the term reads 0 when the student predicts as the teacher; it is the KL
divergence); regression: MSE to the teacher's output. L_task: the task loss on the
labels (the no-distillation ablation). Each MSE is the mean over every element.

A student pruned by K-prune keeps some of each layer's heads: its scores are matched to the
teacher's heads of the same original index; a layer without heads has no attention term.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kprune.models.adapters import get_adapter
from kprune.models.loading import model_inputs, task_loss


@dataclass(frozen=True)
class LossWeights:
    att: float = 1.0
    hidden: float = 1.0
    logits: float = 1.0
    label: float = 0.0
    temperature: float = 1.0


class AttentionScores:
    """Collects every layer's pre-softmax attention scores during a forward pass, from forward
    hooks on the query and key maps (the attention kernel itself never exposes them)."""

    def __init__(self, model: nn.Module) -> None:
        adapter = get_adapter(model)
        self.head_dim = adapter.dims(model)[2]
        self.layers = adapter.layers(model)
        self._q: dict[int, torch.Tensor] = {}
        self._k: dict[int, torch.Tensor] = {}
        self._hooks = []
        self._bias: dict[int, Callable[[int], torch.Tensor] | None] = {}
        for i, layer in enumerate(self.layers):
            if not adapter.has_heads(layer):
                continue
            self._bias[i] = adapter.position_bias(model, layer)
            view = adapter.view(layer)
            self._hooks.append(view.q.register_forward_hook(self._keep(self._q, i)))
            self._hooks.append(view.k.register_forward_hook(self._keep(self._k, i)))

    @staticmethod
    def _keep(store: dict, i: int):
        def hook(_module, _inputs, output):
            store[i] = output

        return hook

    def take(self) -> list[torch.Tensor | None]:
        """The last pass's scores per layer, (batch, heads, query, key); None for a layer
        without heads. Clears the store."""
        out: list[torch.Tensor | None] = []
        for i in range(len(self.layers)):
            q, k = self._q.pop(i, None), self._k.pop(i, None)
            if q is None:
                out.append(None)
                continue
            b, t, width = q.shape
            q = q.view(b, t, width // self.head_dim, self.head_dim).transpose(1, 2)
            k = k.view(b, t, width // self.head_dim, self.head_dim).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            bias = self._bias[i]  # a family's position bias is part of the scores
            out.append(scores if bias is None else scores + bias(t).to(scores.dtype))
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def kept_heads(model: nn.Module) -> list[list[int]] | None:
    """The original indices of each layer's heads in a K-prune model (None: all heads)."""
    masks = getattr(model, "kprune_masks", None)
    if masks is None:
        return None
    return [torch.nonzero(row).flatten().tolist() for row in torch.as_tensor(masks.heads)]


@dataclass
class Outputs:
    logits: torch.Tensor
    hidden: tuple[torch.Tensor, ...]
    scores: list[torch.Tensor | None]


def run(
    model: nn.Module, scores: AttentionScores | None, batch: dict, hidden: bool = True
) -> Outputs:
    """One forward pass with what the losses compare: the logits, the hidden states if
    ``hidden`` and the attention scores if ``scores`` collects them (else empty)."""
    out = model(**model_inputs(model, batch), output_hidden_states=hidden)
    taken = scores.take() if scores is not None else []
    return Outputs(out.logits, out.hidden_states if hidden else (), taken)


def uses_teacher(w: LossWeights) -> bool:
    """Whether any weighted term compares with the teacher (no: labels only, no teacher pass)."""
    return bool(w.att or w.hidden or w.logits)


def attention_mse(s: torch.Tensor, t: torch.Tensor, attention_mask: torch.Tensor):
    """MSE of two layers' scores with padded key positions zeroed in both."""
    pad = (attention_mask == 0)[:, None, None, :]
    return F.mse_loss(s.masked_fill(pad, 0.0), t.masked_fill(pad, 0.0))


def prediction_loss(s: torch.Tensor, t: torch.Tensor, kind: str, temperature: float):
    if kind == "regression":
        return F.mse_loss(s.view(-1), t.view(-1))
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def distill_loss(
    student: Outputs,
    teacher: Outputs | None,
    batch: dict,
    kind: str,
    w: LossWeights,
    heads: list[list[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Every term of the objective (weighted) and their sum under ``total``; a term of weight 0
    is not computed (``teacher`` may be None when only the labels count). ``heads``: the
    teacher heads the student's heads stand for (a K-prune student)."""
    zero = student.logits.new_zeros(())
    terms = {"att": zero, "hidden": zero, "logits": zero, "label": zero}
    if w.att:
        for i, (s, t) in enumerate(zip(student.scores, teacher.scores, strict=True)):
            if s is None:
                continue
            if heads is not None:
                t = t[:, heads[i]]
            terms["att"] = terms["att"] + attention_mse(s, t, batch["attention_mask"])
    if w.hidden:
        for s, t in zip(student.hidden, teacher.hidden, strict=True):
            terms["hidden"] = terms["hidden"] + F.mse_loss(s, t)
    if w.logits:
        terms["logits"] = prediction_loss(student.logits, teacher.logits, kind, w.temperature)
    if w.label:
        terms["label"] = task_loss(student.logits, batch["labels"], kind)
    weighted = {
        "att": w.att * terms["att"],
        "hidden": w.hidden * terms["hidden"],
        "logits": w.logits * terms["logits"],
        "label": w.label * terms["label"],
    }
    weighted["total"] = sum(weighted.values())
    return weighted
