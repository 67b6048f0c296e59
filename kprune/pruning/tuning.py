"""Knowledge-preserving weight tuning (KPWT): re-fit a pruned sublayer's output projection.

Solves W* = argmin ||H W^T - R||_F^2 + eps ||W||^2 with R = Y_teacher - X_student - b, from
normal equations accumulated over batches (A = H^T H, B = H^T R) in float64. eps is a small
ridge scaled to trace(A)/k. A failed or non-improving solve keeps the old weights and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TuneResult:
    weight: torch.Tensor  # (d, k) new columns for the kept units
    error_before: float
    error_after: float
    status: str  # "tuned", "kept: <reason>"


class NormalEquations:
    """Accumulates H^T H, H^T R and ||R||^2 over batches of rows."""

    def __init__(self, k: int, d: int, device: torch.device | str = "cpu"):
        self.a = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.b = torch.zeros(k, d, dtype=torch.float64, device=device)
        self.rr = 0.0
        self.rows = 0

    def add(self, h: torch.Tensor, r: torch.Tensor) -> None:
        """One batch of rows: float32 products per batch, summed in float64 across batches."""
        h, r = h.float(), r.float()
        self.a += (h.T @ h).double()
        self.b += (h.T @ r).double()
        self.rr += float((r.double() ** 2).sum())
        self.rows += len(h)

    def error(self, w: torch.Tensor) -> float:
        """Mean squared error of H w^T against R, per row and output dim, from the sums."""
        w = w.double().to(self.a.device)  # (d, k)
        sse = (w @ self.a * w).sum() - 2 * (w * self.b.T).sum() + self.rr
        return max(float(sse), 0.0) / max(self.rows * self.b.shape[1], 1)

    def solve(self, w_old: torch.Tensor, ridge: float = 1e-4) -> TuneResult:
        before = self.error(w_old)
        k = self.a.shape[0]
        if k == 0:
            return TuneResult(w_old, before, before, "kept: no units left")
        eps = ridge * float(torch.trace(self.a)) / k
        eye = torch.eye(k, dtype=self.a.dtype, device=self.a.device)
        try:
            w_new = torch.linalg.solve(self.a + eps * eye, self.b).T  # (d, k)
        except RuntimeError as exc:  # singular even with the ridge
            return TuneResult(
                w_old, before, before, f"kept: solve failed ({exc.__class__.__name__})"
            )
        if not torch.isfinite(w_new).all():
            return TuneResult(w_old, before, before, "kept: non-finite solution")
        after = self.error(w_new)
        if not after <= before:
            return TuneResult(w_old, before, before, "kept: no improvement")
        return TuneResult(w_new.to(w_old.dtype), before, after, "tuned")


def solve_scales(
    eq: NormalEquations, w: torch.Tensor, group: int, damping: float = 1e-2
) -> TuneResult:
    """Kwon et al.'s mask tuning: one scalar per kept unit (``group`` columns each), fitted by
    damped least squares from the same sums: A = blocksum((H^T H) * (W^T W)),
    b = blocksum(rowsum((H^T R) * W^T)). Kept only if it lowers the error."""
    before = eq.error(w)
    k = eq.a.shape[0]
    if k == 0:
        return TuneResult(w, before, before, "kept: no units left")
    wd = w.double().to(eq.a.device)  # (d, k)
    units = k // group
    prod = eq.a * (wd.T @ wd)
    a = prod.view(units, group, units, group).sum((1, 3))
    b = (eq.b * wd.T).sum(1).view(units, group).sum(1)
    a = a + damping * torch.diag(torch.diagonal(a))
    try:
        scales = torch.linalg.solve(a, b)
    except RuntimeError:
        return TuneResult(w, before, before, "kept: solve failed")
    w_new = (wd * scales.repeat_interleave(group)[None, :]).to(w.dtype)
    after = eq.error(w_new)
    if not torch.isfinite(scales).all() or not after <= before:
        return TuneResult(w, before, before, "kept: unstable")
    return TuneResult(w_new, before, after, "rescaled")
