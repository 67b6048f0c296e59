"""Predictive losses per example: distillation (paper form) and log-likelihood (Fisher form).

Logits are (B, C) for classification and regression (C = 1), (B, T, 2) for extractive QA
(start, end), with ``valid`` (B, T) marking real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kprune.errors import KPruneError


def _qa_logprobs(logits: torch.Tensor, valid: torch.Tensor, temp: float) -> torch.Tensor:
    """Log-softmax over positions for start and end: (B, 2, T)."""
    z = (logits / temp).transpose(1, 2)  # (B, 2, T)
    z = z.masked_fill(~valid[:, None, :], float("-inf"))
    return F.log_softmax(z, dim=-1)


def distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: str,
    gamma: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example predictive loss of the paper: gamma^2 KL(p_T || p_S) or squared error."""
    if kind == "regression":
        if student.shape != teacher.shape:
            raise KPruneError(
                f"regression outputs differ in shape: {student.shape} vs {teacher.shape}"
            )
        return ((student - teacher) ** 2).reshape(len(student), -1).mean(-1)
    if kind == "qa":
        ls, lt = _qa_logprobs(student, valid, gamma), _qa_logprobs(teacher, valid, gamma)
        pt = lt.exp()
        kl = (pt * (lt - ls)).nan_to_num(0.0).sum(-1)  # (B, 2)
        return gamma**2 * kl.mean(-1)
    lt = F.log_softmax(teacher / gamma, dim=-1)
    ls = F.log_softmax(student / gamma, dim=-1)
    return gamma**2 * (lt.exp() * (lt - ls)).sum(-1)


def fisher_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: str,
    generator: torch.Generator,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example negative log-likelihood of a target drawn from the teacher's prediction.

    Its squared per-example gradients estimate the true Fisher of the predictive
    distribution, which is not zero when the student equals the teacher. Regression uses a
    unit-variance Gaussian, whose Fisher is the squared output gradient.
    """
    if kind == "regression":
        return student.reshape(len(student), -1).sum(-1)
    if kind == "qa":
        lt = _qa_logprobs(teacher, valid, 1.0).exp()  # (B, 2, T)
        target = torch.multinomial(lt.reshape(-1, lt.shape[-1]).cpu(), 1, generator=generator)
        target = target.view(len(student), 2).to(student.device)
        ls = _qa_logprobs(student, valid, 1.0)
        return -ls.gather(-1, target[..., None]).squeeze(-1).mean(-1)
    pt = F.softmax(teacher, dim=-1)
    target = torch.multinomial(pt.cpu(), 1, generator=generator).to(student.device)
    return -F.log_softmax(student, dim=-1).gather(-1, target).squeeze(-1)
