"""Run a sparse model's encoder matrices with torch's sparse kernels (CSR or BSR weights).

SparseBERT leaves zeros in dense-shaped matrices: a dense kernel multiplies them anyway.
``use_sparse_kernels`` swaps each prunable nn.Linear for a ``SparseLinear`` holding its weight
in a sparse layout, so that the matmul skips the zeros; the outputs are the dense model's
(to float rounding). Whether that is faster depends on the sparsity, the shapes and the
CPU's sparse BLAS: ``bench.sparse`` measures it, nothing here assumes it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from kprune.errors import KPruneError
from kprune.sparse.schedule import prunable_matrices

LAYOUTS = ("csr", "bsr")


class SparseLinear(nn.Module):
    """y = x W^T + b with W stored sparse (CSR, or BSR with square blocks)."""

    def __init__(self, linear: nn.Linear, layout: str = "csr", block: int = 16) -> None:
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"
            warnings.simplefilter("ignore", UserWarning)
            if layout == "csr":
                self.weight = w.to_sparse_csr()
            elif layout == "bsr":
                if w.shape[0] % block or w.shape[1] % block:
                    raise KPruneError(
                        f"BSR blocks of {block} do not tile a {tuple(w.shape)} matrix"
                    )
                self.weight = w.to_sparse_bsr((block, block))
            else:
                raise KPruneError(f"unknown sparse layout {layout!r}; use one of {LAYOUTS}")
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def use_sparse_kernels(model: nn.Module, layout: str = "csr", block: int = 16) -> nn.Module:
    """Replace every prunable matrix's nn.Linear of ``model`` (in place) by a SparseLinear;
    returns the model (inference only: the sparse weights take no gradients)."""
    targets = {id(w) for w in prunable_matrices(model).values()}
    swaps = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and id(child.weight) in targets:
                swaps.append((parent, name, child))
    for parent, name, child in swaps:
        setattr(parent, name, SparseLinear(child, layout, block))
    return model.eval()
