"""The K-prune loop: bottom-up over all 2L sublayers, measure -> search -> prune -> tune.

At step s only sublayers >= s are recomputed: the student's and the teacher's inputs to
sublayer s are cached per batch and advanced by one sublayer after each step. The reference
loop (``LoopOptions.reference``) is the straightforward one of the authors' code instead:
every step runs the whole sample from the embeddings through the whole depth, forward and
backward; it gives the same result at about twice the work and is kept to show that.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kprune.config import PruneConfig
from kprune.data.sample import Sample, SampleData, fill_teacher_logits, materialise
from kprune.errors import KPruneError
from kprune.models.adapters import Adapter, LayerView, get_adapter
from kprune.models.loading import frozen
from kprune.pruning.budget import search_budget
from kprune.pruning.flops import FlopsModel, flops_of
from kprune.pruning.forward import advance, layer_norm, sublayer, unit_inputs
from kprune.pruning.knowledge import Knowledge, MeasureSpec, measure
from kprune.pruning.masks import Masks
from kprune.pruning.score_tables import knowledge_frame
from kprune.pruning.search import SearchSpec, kpms
from kprune.pruning.tuning import NormalEquations, solve_scales
from kprune.report import Report, pruning_fields

log = logging.getLogger(__name__)


@dataclass
class LoopOptions:
    measure: MeasureSpec
    search: SearchSpec
    tune: bool = True
    ridge: float = 1e-4
    progress: bool = True
    tune_mode: str = "lstsq"  # lstsq (KPWT) or scale (Kwon et al.'s mask rescaling)
    measure_dtype: str = "float32"  # bfloat16: measurement passes on a bf16 copy
    reference: bool = False  # the straightforward loop: whole depth at every step
    remeasure: str = "sublayer"  # layer: an FFN step reuses its layer's attention-step scores
    # the tuning takes the student's units of the pruned sublayer from the measurement pass
    # instead of recomputing them (exact; held between the two, so only where they fit)
    reuse_units: bool = True


@dataclass
class LoopResult:
    masks: Masks
    sublayers: list[dict] = field(default_factory=list)
    knowledge: list[Knowledge] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _nonfinite_units(k: Knowledge, layer: int, is_mha: bool) -> int:
    """Units of the target sublayer whose knowledge is NaN/Inf (ranked last, pruned first)."""
    rep = (k.rep_heads if is_mha else k.rep_neurons)[layer]
    pred = (k.pred_heads if is_mha else k.pred_neurons)[layer]
    return int((~torch.isfinite(rep + pred)).sum())


def _views(adapter: Adapter, model) -> list[LayerView]:
    return adapter.views(model)


def run_loop(
    student,
    teacher,
    adapter: Adapter,
    sample: Sample,
    budget: float,
    flops: FlopsModel,
    opts: LoopOptions,
    initial: Knowledge | None = None,
    fixed_masks: Masks | None = None,
) -> LoopResult:
    """Prune ``student`` in place (masks + tuned output projections) to ``budget`` FLOPs.

    Iterative (the paper): knowledge is re-measured on the partially pruned student at every
    sublayer; ``initial`` stands in for the first measurement (the student is still the
    teacher then). One-shot: ``fixed_masks`` are applied sublayer by sublayer, with tuning,
    and nothing is measured.
    """
    dims = adapter.dims(student)
    layers, heads, head_dim, _, neurons = dims
    s_views, t_views = _views(adapter, student), _views(adapter, teacher)
    masks = Masks.ones(layers, heads, neurons)
    result = LoopResult(masks)
    timer = {"measure": 0.0, "search": 0.0, "tune": 0.0}
    m_model = student
    if opts.measure_dtype == "bfloat16":  # a bf16 copy for the measurement passes only
        m_model = copy.deepcopy(student).to(torch.bfloat16)
    m_views = _views(adapter, m_model)
    head_fn = lambda h: adapter.logits(m_model, h)  # noqa: E731
    embedded = [b.student for b in sample.batches] if opts.reference else None
    # the measurement pass of the fast float32 loop computes the student's units of sublayer s
    reusable = opts.reuse_units and m_model is student and embedded is None
    bar = tqdm(range(2 * layers), desc="prune sublayers", disable=None if opts.progress else True)
    for s in bar:
        layer, is_mha = s // 2, s % 2 == 0
        t0 = time.perf_counter()
        units = [] if reusable and _units_fit(sample, dims, is_mha) else None
        if fixed_masks is None:
            if s == 0 and initial is not None:
                k = initial
            elif not is_mha and opts.remeasure == "layer":
                k = result.knowledge[-1]  # measured before this layer's attention step
            elif embedded is not None:
                k = _measure_whole_depth(m_views, head_fn, sample, embedded, s, dims, opts.measure)
            else:
                k = measure(m_views, head_fn, sample, s, dims, opts.measure, s == 0, harvest=units)
            result.knowledge.append(k)
        if embedded is not None:  # the tuning's inputs, recomputed from the embeddings
            _rewind(sample, embedded, s_views, t_views, s, head_dim)
        t1 = time.perf_counter()
        if fixed_masks is None:
            unit_mask = kpms(k, masks, s, budget, flops, opts.search)
        else:
            unit_mask = (fixed_masks.heads if is_mha else fixed_masks.neurons)[layer].clone()
        (masks.heads if is_mha else masks.neurons)[layer] = unit_mask
        t2 = time.perf_counter()
        info = {
            "sublayer": s,
            "layer": layer,
            "kind": "mha" if is_mha else "ffn",
            "kept": int(unit_mask.sum()),
            "total": len(unit_mask),
            "nonfinite_batches": k.nonfinite if fixed_masks is None else 0,
            "nonfinite_units": _nonfinite_units(k, layer, is_mha) if fixed_masks is None else 0,
        }
        pruned_any = bool((unit_mask == 0).any())
        info.update(
            _tune_and_advance(
                s_views[layer],
                t_views[layer],
                is_mha,
                unit_mask,
                head_dim,
                sample,
                opts,
                pruned_any,
                units or None,  # empty: this step did not measure
            )
        )
        if m_model is not student:  # keep the bf16 copy in step with the tuned projection
            src = s_views[layer].attn_out if is_mha else s_views[layer].ffn_out
            dst = m_views[layer].attn_out if is_mha else m_views[layer].ffn_out
            dst.weight.data.copy_(src.weight.data)
        t3 = time.perf_counter()
        timer["measure"] += t1 - t0
        timer["search"] += t2 - t1
        timer["tune"] += t3 - t2
        result.sublayers.append(info)
        bar.set_postfix(kept=f"{info['kept']}/{info['total']}")
        log.debug("sublayer %s", info)
    result.seconds = {k: round(v, 3) for k, v in timer.items()}
    return result


@torch.no_grad()
def _rewind(sample: Sample, embedded: list, s_views, t_views, s: int, head_dim: int) -> None:
    """Both caches recomputed from the embeddings through sublayers < ``s`` (pruned units
    have zeroed output columns, so the unmasked student forward is the masked model's)."""
    for batch, x in zip(sample.batches, embedded, strict=True):
        xs, xt = x, x
        for j in range(s):
            layer, is_mha = j // 2, j % 2 == 0
            xs = advance(s_views[layer], is_mha, xs, batch.attend, head_dim)
            xt = advance(t_views[layer], is_mha, xt, batch.attend, head_dim)
        batch.student, batch.teacher = xs, xt


def _units_fit(sample: Sample, dims: tuple, is_mha: bool) -> bool:
    """Whether the student's full-width units of one sublayer over the whole sample (float32,
    padded) take at most a quarter of the memory still free on the sample's device."""
    _, heads, head_dim, _, neurons = dims
    width = heads * head_dim if is_mha else neurons
    need = 4 * width * sum(b.valid.numel() for b in sample.batches)
    device = sample.batches[0].student.device
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return need <= free // 4


def _measure_whole_depth(views, head_fn, sample, embedded, s, dims, spec) -> Knowledge:
    """Knowledge for step ``s`` from a forward and backward through every sublayer, as the
    authors' code does; rows of finished sublayers are zeroed, as the fast loop leaves them.
    Leaves the student cache at the embeddings (``_rewind`` moves it on)."""
    for batch, x in zip(sample.batches, embedded, strict=True):
        batch.student = x
    # the same per-step random draws as measure(start=s) for the Fisher form
    k = measure(views, head_fn, sample, 0, dims, replace(spec, seed=spec.seed + s), s == 0)
    heads_done, neurons_done = (s + 1) // 2, s // 2
    for t in (k.pred_heads, k.rep_heads):
        t[:heads_done] = 0
    for t in (k.pred_neurons, k.rep_neurons):
        t[:neurons_done] = 0
    return k


@torch.no_grad()
def _tune_and_advance(
    sv: LayerView,
    tv: LayerView,
    is_mha: bool,
    unit_mask: torch.Tensor,
    head_dim: int,
    sample: Sample,
    opts: LoopOptions,
    pruned_any: bool,
    student_units: list[torch.Tensor] | None = None,
) -> dict:
    """Re-fit the sublayer's output projection, then move both caches one sublayer up.

    The student's kept units are computed once per batch (or taken from ``student_units``,
    per batch, full width: the measurement pass's) and serve both the normal equations and
    the advance (the projection of the kept columns, plus the residual, then LayerNorm):
    pruned units contribute nothing, so this is the masked sublayer's output."""
    width_mask = unit_mask.repeat_interleave(head_dim) if is_mha else unit_mask
    device = sample.batches[0].student.device
    width_mask = width_mask.to(device)
    kept = torch.nonzero(width_mask).flatten()
    keep_all = len(kept) == len(width_mask)
    proj = sv.attn_out if is_mha else sv.ffn_out
    info: dict = {"status": "unchanged"}
    do_tune = opts.tune and pruned_any
    eq = NormalEquations(len(kept), proj.out_features, device) if do_tune else None
    kept_units = []  # per batch, (B, T, kept): the advance's input
    for i, batch in enumerate(sample.batches):
        _, y_t = sublayer(tv, is_mha, batch.teacher, batch.attend, head_dim)
        if student_units is None:
            units = unit_inputs(sv, is_mha, batch.student, batch.attend, head_dim)
        else:  # handed over: the list lets go of the full-width copy
            units, student_units[i] = student_units[i], None
        units = units if keep_all else units.index_select(-1, kept)
        if eq is not None:
            r = y_t[batch.valid] - batch.student[batch.valid] - proj.bias
            eq.add(units[batch.valid], r)
        kept_units.append(units)
        batch.teacher = layer_norm(tv, is_mha, y_t)
    if eq is not None:
        w_old = proj.weight[:, kept]
        if opts.tune_mode == "scale":
            res = solve_scales(eq, w_old, head_dim if is_mha else 1)
        else:
            res = eq.solve(w_old, opts.ridge)
        proj.weight[:, kept] = res.weight.to(proj.weight.dtype)
        info = {
            "status": res.status,
            "error_before": res.error_before,
            "error_after": res.error_after,
        }
    elif pruned_any:
        info = {"status": "pruned, not tuned"}
    if pruned_any:  # pruned columns are dead weight: zero them for a clean masked model
        proj.weight[:, width_mask == 0] = 0
    w_kept = proj.weight if keep_all else proj.weight[:, kept]
    for batch, units in zip(sample.batches, kept_units, strict=True):
        y = F.linear(units, w_kept, proj.bias) + batch.student
        batch.student = layer_norm(sv, is_mha, y)
    return info


@dataclass
class PruneTuneResult:
    model: torch.nn.Module  # full size, tuned, to be cut by surgery.prune_model
    masks: Masks
    report: Report
    iterations: pd.DataFrame  # per-iteration score tables (iterative mode)


def takes_teacher_logits(config: PruneConfig) -> bool:
    """Whether ``prune_tune`` under ``config`` can take a sample drawn without teacher logits:
    its first step measures the unpruned float32 model on the sample, which is the teacher's
    forward (``draw_sample(teacher_logits=False)`` then saves running it twice)."""
    return config.prune_tune.mode == "iterative" and config.measure.dtype == "float32"


def prune_tune(
    model,
    data: SampleData,
    kind: str,
    config: PruneConfig,
    *,
    initial: Knowledge | None = None,
    masks: Masks | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    tune_mode: str = "lstsq",
) -> PruneTuneResult:
    """The sublayer loop on ``model`` (changed in place) under ``config``. Iterative mode may
    start from ``initial`` (the teacher's knowledge, e.g. read from the score tables);
    one-shot mode applies ``masks`` (those of the one-shot search)."""
    mode, reduction = config.prune_tune.mode, config.search.reduction
    if mode == "oneshot" and masks is None:
        raise KPruneError("one-shot mode needs the masks of the search stage")
    if data.teacher_logits is None and (initial is not None or not takes_teacher_logits(config)):
        raise KPruneError(
            "this loop does not measure the teacher on the sample; draw it with teacher logits"
        )
    t0 = time.perf_counter()
    model = frozen(model, device)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, config.sample.batch_size, device)
    dims = adapter.dims(model)
    flops = flops_of(model, data)
    plan = search_budget(config, flops, dims, model)
    opts = LoopOptions(
        MeasureSpec.of(config, kind),
        SearchSpec.of(config),
        tune=config.prune_tune.tune,
        ridge=config.prune_tune.ridge,
        progress=progress,
        tune_mode=tune_mode,
        measure_dtype=config.measure.dtype,
        reference=config.prune_tune.reference_loop,
        remeasure=config.prune_tune.remeasure,
    )
    teacher = frozen(copy.deepcopy(model))
    t_sample = time.perf_counter() - t0
    loop = run_loop(
        model,
        teacher,
        adapter,
        sample,
        plan.amount,
        plan.cost,
        opts,
        initial=initial,
        fixed_masks=masks if mode == "oneshot" else None,
    )
    if data.teacher_logits is None:  # the first measurement put them in the batches
        fill_teacher_logits(data, sample)
    iterations = (
        pd.concat(
            [knowledge_frame(k, flops, i, i) for i, k in enumerate(loop.knowledge)],
            ignore_index=True,
        )
        if loop.knowledge
        else pd.DataFrame()
    )
    seconds = {"materialise": round(t_sample, 3), **loop.seconds}
    report = pruning_fields(
        model, data, flops, loop.masks, reduction, mode, loop.sublayers, seconds, plan
    )
    return PruneTuneResult(model, loop.masks, report, iterations)
