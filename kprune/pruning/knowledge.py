"""Knowledge measurement on the current student: K_pred and K_rep per head and neuron.

Both are on the scale of the published algorithm (Park et al., ICLR 2024), the scale its
lambda and mu were tuned on (``SCORE_SCALE`` names it; score tables carry it):

- K_rep of a neuron: the mean squared error (over real tokens and output dims) of its
  sublayer's output when the neuron alone is removed, (1/T) sum_t a_t^2 * (1/d) sum_r W[r]^2.
  K_rep of a head (``rep_form='paper'``): the same per context dim of the head, then the
  **mean** over its d_h dims (diagonal terms only). ``rep_form='exact'`` is the exact error of
  removing the whole head (cross terms included), about d_h times larger: an ablation.
- K_pred (``pred_form='paper'``): sum over batches of 1/2 (dL_batch-mean / dm_u)^2, divided
  by the number of sample **examples** (heads: mean over the d_h per-dim squared gradients).
  Zero while the student equals the teacher. ``fisher``: 1/2 the per-example squared gradient
  of the log-likelihood of a label drawn from the teacher, averaged over examples (1/2 the
  diagonal of the Fisher: the second-order KL of removing the unit, per example). ``label``:
  Kwon et al.'s sum of squared batch gradients of the task loss, divided by the batch count
  (only its ranking is used).

K_pred and K_rep are kept apart; they meet only in the search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kprune import config as C
from kprune.data.sample import Sample
from kprune.errors import KPruneError
from kprune.models.adapters import LayerView
from kprune.models.loading import task_loss
from kprune.pruning.forward import layer_norm, sublayer
from kprune.pruning.losses import distill_loss, fisher_loss

PRED_FORMS = (*C.PRED_FORMS, "label")  # label: Kwon et al.'s task-loss Fisher (a baseline's)
# Version of the score definitions. 1: head K_rep = exact whole-head error, paper K_pred
# divided by batches. 2: the published scales. A score table of another version is refused
# (see kprune.pruning.score_tables); bump this when a formula or a scale changes.
SCORE_SCALE = 2


@dataclass
class Knowledge:
    """Scores per unit; rows of layers below the measured range stay zero."""

    pred_heads: torch.Tensor  # [L, H]
    pred_neurons: torch.Tensor  # [L, N]
    rep_heads: torch.Tensor  # [L, H]
    rep_neurons: torch.Tensor  # [L, N]
    nonfinite: int = 0  # batches whose gradients held NaN/Inf (skipped)
    # label form only: each batch's gradient per unit, [batches, L, H] and [batches, L, N]
    # (Kwon et al.'s mask rearrangement reads them)
    batch_grads_heads: torch.Tensor | None = None
    batch_grads_neurons: torch.Tensor | None = None

    @classmethod
    def zeros(cls, layers: int, heads: int, neurons: int) -> Knowledge:
        z = torch.zeros
        return cls(z(layers, heads), z(layers, neurons), z(layers, heads), z(layers, neurons))


@dataclass(frozen=True)
class MeasureSpec:
    kind: str  # classification, regression, qa
    gamma: float
    pred_form: str = "paper"
    with_pred: bool = True
    seed: int = 0
    # rows x padded length per autograd pass (memory only: the scores do not depend on it)
    pass_tokens: int = C.PASS_TOKENS
    rep_form: str = "paper"

    def __post_init__(self) -> None:
        if self.pred_form not in PRED_FORMS:
            raise KPruneError(f"pred_form must be one of {PRED_FORMS}, got {self.pred_form!r}")
        if self.rep_form not in C.REP_FORMS:
            raise KPruneError(f"rep_form must be one of {C.REP_FORMS}, got {self.rep_form!r}")

    @classmethod
    def of(cls, config: C.PruneConfig, kind: str, with_pred: bool | None = None) -> MeasureSpec:
        """What the knowledge measurement of a ``kind`` task computes under ``config``."""
        m = config.measure
        with_pred = config.search.use_pred if with_pred is None else with_pred
        return cls(
            kind, m.gamma, m.pred_form, with_pred, config.sample.seed, m.pass_tokens, m.rep_form
        )


class _RepAccumulator:
    """Per real token summed squares of every head context dim and neuron activation; with
    ``exact``, also per-head Gram matrices (for the whole-head removal error)."""

    def __init__(self, layers, heads, head_dim, neurons, device, exact: bool = False):
        f64 = torch.float64
        self.heads, self.head_dim = heads, head_dim
        self.gram = (
            torch.zeros(layers, heads, head_dim, head_dim, dtype=f64, device=device)
            if exact
            else None
        )
        self.sq_heads = torch.zeros(layers, heads * head_dim, dtype=f64, device=device)
        self.sq = torch.zeros(layers, neurons, dtype=f64, device=device)
        self.tokens = 0

    def add(self, layer: int, is_mha: bool, units: torch.Tensor) -> None:
        """Add one batch's real-token rows (n, k): float32 per batch, float64 across batches."""
        u = units.detach().float()
        if not is_mha:
            self.sq[layer] += (u * u).sum(0).double()
            return
        self.sq_heads[layer] += (u * u).sum(0).double()
        if self.gram is not None:
            uh = u.view(len(u), self.heads, -1).transpose(0, 1)  # (H, n, dh)
            self.gram[layer] += torch.bmm(uh.transpose(1, 2), uh).double()

    def scores(self, views: list[LayerView], start_layer: int):
        """K_rep [L, H] and [L, N] of layers >= ``start_layer`` (the rest zero)."""
        heads = torch.zeros(self.sq_heads.shape[0], self.heads, dtype=torch.float64)
        neurons = torch.zeros(self.sq.shape, dtype=torch.float64)
        tokens = max(self.tokens, 1)
        for i in range(start_layer, len(views)):
            wo = views[i].attn_out.weight.detach().double().cpu()  # (d, H*dh)
            if self.gram is None:  # per dim: (1/T) sum_t a^2 * (1/d) sum_r W^2, mean over dh
                per_dim = self.sq_heads[i].cpu() * (wo * wo).mean(0) / tokens
                heads[i] = per_dim.view(self.heads, self.head_dim).mean(-1)
            else:  # ||removed head's output||^2 over tokens and output dims
                wh = wo.view(wo.shape[0], self.heads, self.head_dim).transpose(0, 1)
                wtw = wh.transpose(1, 2) @ wh  # (H, dh, dh)
                heads[i] = (self.gram[i].cpu() * wtw).sum((1, 2)) / (tokens * wo.shape[0])
            w2 = views[i].ffn_out.weight.detach().double().cpu()
            neurons[i] = self.sq[i].cpu() * (w2 * w2).mean(0) / tokens
        return heads.float(), neurons.float()


def measure(
    views: list[LayerView],
    head_fn,
    sample: Sample,
    start: int,
    dims: tuple,
    spec: MeasureSpec,
    at_teacher: bool = False,
    harvest: list | None = None,
) -> Knowledge:
    """K_pred and K_rep of every unit in sublayers >= ``start`` on the cached student inputs.

    ``head_fn(hidden) -> logits`` maps the last hidden states to the task output.
    ``at_teacher``: the student is the unpruned teacher. The paper's K_pred is then exactly
    zero (the gradient of a divergence at its minimum), so a rows' part whose logits equal the
    sample's teacher logits skips its backward pass and adds zero gradients (a part whose
    logits differ, e.g. a sample of another model, is measured as usual).
    ``harvest``: a list that receives, per batch, the units' input to the output projection
    of sublayer ``start`` (detached, full width): what the tuning of that sublayer needs.
    """
    layers, heads, head_dim, _, neurons = dims
    device = sample.batches[0].student.device
    rep = _RepAccumulator(layers, heads, head_dim, neurons, device, spec.rep_form == "exact")
    pred_h = torch.zeros(layers, heads, dtype=torch.float64, device=device)
    pred_n = torch.zeros(layers, neurons, dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(spec.seed + start)
    skipped, count = 0, 0
    grads_h: list[torch.Tensor] = []  # label form: per batch, [L, H] / [L, N]
    grads_n: list[torch.Tensor] = []
    for batch in sample.batches:
        taken = _Taken([] if harvest is not None else None)
        # the autograd graph is built for a few rows at a time (its memory grows with rows x
        # padded length); per-example mask gradients are exact row by row, and the batch
        # gradient is their sum, so the scores do not depend on the cap
        parts = [
            _pass(
                views,
                head_fn,
                batch.rows(part),
                len(batch.valid),
                start,
                dims,
                spec,
                gen,
                rep,
                at_teacher,
                taken,
            )
            for part in _row_parts(batch.valid.shape, spec.pass_tokens)
        ]
        if harvest is not None:
            harvest.append(_join(taken.units))
        if batch.teacher_logits is None:
            batch.teacher_logits = _join(taken.logits)
        if not spec.with_pred:
            continue
        keys = sorted(parts[0])
        grads = [_cat([p[s] for p in parts]) for s in keys]
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            skipped += 1
            continue
        # paper and fisher: per sample example (the published scale); label: per batch
        count += 1 if spec.pred_form == "label" else len(batch.valid)
        if spec.pred_form == "label":
            grads_h.append(torch.zeros(layers, heads, dtype=torch.float64, device=device))
            grads_n.append(torch.zeros(layers, neurons, dtype=torch.float64, device=device))
        for s, g in zip(keys, grads, strict=True):
            if g is None:
                continue
            layer, is_mha = s // 2, s % 2 == 0
            g = g.double()  # (B, k) per example
            if spec.pred_form == "label":  # batch gradient of each unit's scalar mask, squared
                g = g.sum(0)
                if is_mha:
                    g = g.view(heads, head_dim).sum(-1)
                    pred_h[layer] += g * g
                    grads_h[-1][layer] = g
                else:
                    pred_n[layer] += g * g
                    grads_n[-1][layer] = g
            elif spec.pred_form == "paper":
                g = g.sum(0)  # gradient of the batch-mean loss
                if is_mha:  # the paper's code: mean of squared per-dim gradients
                    pred_h[layer] += 0.5 * (g * g).view(heads, head_dim).mean(-1)
                else:
                    pred_n[layer] += 0.5 * g * g
            elif is_mha:  # per-example gradient of the head's scalar mask
                gh = g.view(len(g), heads, head_dim).sum(-1)
                pred_h[layer] += 0.5 * (gh * gh).sum(0)
            else:
                pred_n[layer] += 0.5 * (g * g).sum(0)
    rep_h, rep_n = rep.scores(views, start // 2)
    denom = max(count, 1)
    stacked = [torch.stack(g).cpu() if g else None for g in (grads_h, grads_n)]
    return Knowledge(
        (pred_h / denom).float().cpu(),
        (pred_n / denom).float().cpu(),
        rep_h,
        rep_n,
        skipped,
        *stacked,
    )


def _row_parts(shape: tuple[int, int], pass_tokens: int) -> list[slice]:
    """Row slices of a (B, T) batch with at most ``pass_tokens`` padded tokens each (at least
    one row; 0: the whole batch)."""
    rows, length = shape
    step = max(1, pass_tokens // length) if pass_tokens > 0 else rows
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


@dataclass
class _Taken:
    """What a batch's passes hand back besides gradients: the units of the first measured
    sublayer (if a list) and, for a sample drawn without them, the teacher's logits."""

    units: list[torch.Tensor] | None
    logits: list[torch.Tensor] = field(default_factory=list)


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if any(p is None for p in parts) else torch.cat(parts)


def _pass(
    views,
    head_fn,
    part,
    batch_rows: int,
    start: int,
    dims: tuple,
    spec,
    gen,
    rep,
    at_teacher,
    taken: _Taken,
):
    """Forward the rows ``part`` through sublayers >= ``start``, adding their K_rep sums to
    ``rep`` (and what ``taken`` asks for to it); returns {sublayer: per-example gradient of
    the batch's predictive loss w.r.t. its unit mask, (rows, k) or None} (empty without
    K_pred)."""
    layers, heads, head_dim, _, neurons = dims
    x = part.student.to(views[start // 2].attn_out.weight.dtype)  # a bf16 copy: bf16
    masks: dict[int, torch.Tensor] = {}
    for s in range(start, 2 * layers):
        layer, is_mha = s // 2, s % 2 == 0
        width = heads * head_dim if is_mha else neurons
        m = torch.ones(
            len(x), 1, width, device=x.device, dtype=x.dtype, requires_grad=spec.with_pred
        )
        masks[s] = m
        with torch.set_grad_enabled(spec.with_pred):
            units, y = sublayer(views[layer], is_mha, x, part.attend, head_dim, m)
            rep.add(layer, is_mha, units[part.valid])
            if s == start and taken.units is not None:
                taken.units.append(units.detach())
            x = layer_norm(views[layer], is_mha, y)
    rep.tokens += int(part.valid.sum())
    unscored = part.teacher_logits is None  # drawn without them: this forward is the teacher's
    if not spec.with_pred and not unscored:
        return {}
    logits = head_fn(x)
    if unscored:
        if not at_teacher:
            raise KPruneError(
                "the sample has no teacher logits and the student is not the teacher; "
                "draw the sample with teacher_logits=True"
            )
        part.teacher_logits = _as_teacher_logits(logits, part.valid)
        taken.logits.append(part.teacher_logits)
    if not spec.with_pred:
        return {}
    keys = sorted(masks)
    if (
        at_teacher
        and spec.pred_form == "paper"
        and _equal_logits(logits, part.teacher_logits, part.valid)
    ):
        return {s: torch.zeros_like(masks[s]).squeeze(1) for s in keys}
    share = len(x) / batch_rows  # this part's weight in a batch-mean loss
    if spec.pred_form == "paper":
        loss = distill_loss(logits, part.teacher_logits, spec.kind, spec.gamma, part.valid)
        loss = loss.mean() * share
    elif spec.pred_form == "label":
        if part.labels is None:
            raise KPruneError("label-based importance needs ground-truth labels in the sample")
        loss = task_loss(logits, part.labels, spec.kind) * share
    else:
        loss = fisher_loss(logits, part.teacher_logits, spec.kind, gen, part.valid).sum()
    grads = torch.autograd.grad(loss, [masks[s] for s in keys], allow_unused=True)
    return {s: None if g is None else g.squeeze(1) for s, g in zip(keys, grads, strict=True)}


def _as_teacher_logits(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The forward's logits as the sample stores them: float32, QA positions past each
    example's end zero (as ``materialise`` pads them)."""
    z = logits.detach().float()
    return z * valid[..., None] if z.dim() == 3 else z


def _equal_logits(logits: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> bool:
    """The student's logits are the teacher's up to float noise (another batching or kernel);
    QA logits at real tokens only (the sample stores zeros past each example's end)."""
    if logits.shape != teacher.shape:
        return False
    s, t = logits.detach().float(), teacher.float()
    if s.dim() == 3:
        s, t = s[valid], t[valid]
    return torch.allclose(s, t, rtol=1e-4, atol=1e-4)
