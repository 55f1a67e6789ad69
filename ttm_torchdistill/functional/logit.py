"""The math of TTM, WTTM and the logit-based rivals DIST and DKD in plain PyTorch (no torchdistill import).

Equation numbers refer to Zheng & Yang, "Knowledge Distillation Based on Transformed
Teacher Matching", ICLR 2024 (arXiv 2402.11148). TTM and WTTM work on logits, in log space,
over the last dimension; DIST and DKD on logits, as their authors' code computes them.
Teacher-side quantities never carry gradients.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    'DistillTerms',
    'LossParts',
    'combine',
    'cross_entropy_from_log_probs',
    'dist_loss',
    'dist_terms',
    'distill_terms',
    'dkd_terms',
    'entropy_from_log_probs',
    'loss_parts',
    'log_power_sum',
    'power_sum',
    'power_transform',
    'reduce',
    'renyi_entropy',
    'shannon_entropy',
    'ttm_loss',
    'wttm_loss',
]

REDUCTIONS = ('batchmean', 'sum', 'none')
"""the values of ``reduction`` the losses take: the mean over samples, the sum, or the per-sample values"""


def power_transform(logits: Tensor, gamma: float) -> Tensor:
    """p_hat = p^gamma / sum_j p_j^gamma for p = softmax(logits), i.e. softmax(gamma * logits) (Eq. 7, 9)."""
    return torch.softmax(gamma * logits, dim=-1)


def log_power_sum(logits: Tensor, gamma: float) -> Tensor:
    """log U_gamma(p) = log sum_j p_j^gamma for p = softmax(logits), without forming p^gamma.

    Uses log U = logsumexp(gamma * v) - gamma * logsumexp(v), so one-hot-like p never underflows.
    """
    return torch.logsumexp(gamma * logits, dim=-1) - gamma * torch.logsumexp(logits, dim=-1)


def power_sum(logits: Tensor, gamma: float) -> Tensor:
    """U_gamma(p) = sum_j p_j^gamma: 1 for one-hot p, K^(1 - gamma) for uniform p (0 < gamma < 1)."""
    return log_power_sum(logits, gamma).exp()


def entropy_from_log_probs(log_p: Tensor) -> Tensor:
    """H(p) = -sum_j p_j log p_j from log p, per sample."""
    return -(log_p.exp() * log_p).sum(dim=-1)


def shannon_entropy(logits: Tensor) -> Tensor:
    """H(p) = -sum_j p_j log p_j for p = softmax(logits), per sample."""
    return entropy_from_log_probs(torch.log_softmax(logits, dim=-1))


def renyi_entropy(logits: Tensor, order: float) -> Tensor:
    """Renyi entropy H_a(p) = log(sum_j p_j^a) / (1 - a) of p = softmax(logits), per sample (Eq. 4).

    ``order`` = 1 gives the Shannon entropy (the limit a -> 1).
    """
    if order == 1:
        return shannon_entropy(logits)
    return log_power_sum(logits, order) / (1.0 - order)


class DistillTerms(NamedTuple):
    """Per-sample pieces shared by TTM and WTTM, computed in one pass (float32)."""

    divergence: Tensor
    """D(p_hat_t || q), shape (N,): KL from the power-transformed teacher to the student."""
    log_power_sum: Tensor
    """log U_gamma(p_t), shape (N,), of the untransformed teacher; no gradient."""
    student_log_probs: Tensor
    """log q = log_softmax(z), shape (N, K); reused for the cross entropy."""


def distill_terms(student_logits: Tensor, teacher_logits: Tensor, gamma: float) -> DistillTerms:
    """The per-sample distillation pieces of Eq. (2) and (22) for logits of shape (N, K).

    Inputs of any floating dtype are promoted to float32 (float64 stays float64). The teacher
    logits are detached: no gradient ever reaches the teacher. The gradient of ``divergence``
    with respect to the student logits is q - p_hat_t (Eq. 20).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f'student and teacher logits must have the same shape, got {tuple(student_logits.shape)} '
            f'and {tuple(teacher_logits.shape)}'
        )
    if student_logits.dim() != 2:
        raise ValueError(f'logits must have shape (N, K), got {tuple(student_logits.shape)}')
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = torch.log_softmax(student_logits.to(dtype), dim=-1)
    with torch.no_grad():
        teacher = teacher_logits.detach().to(dtype)
        scaled = gamma * teacher
        lse_scaled = torch.logsumexp(scaled, dim=-1, keepdim=True)
        log_p_hat = scaled - lse_scaled
        p_hat = log_p_hat.exp()
        log_u = lse_scaled.squeeze(-1) - gamma * torch.logsumexp(teacher, dim=-1)
    divergence = (p_hat * (log_p_hat - log_q)).sum(dim=-1)
    return DistillTerms(divergence, log_u, log_q)


def cross_entropy_from_log_probs(log_q: Tensor, targets: Tensor) -> Tensor:
    """Per-sample H(y, q) from log q; ``targets`` are class indices (N,) or probabilities (N, K)."""
    if targets.dtype.is_floating_point:
        if targets.shape != log_q.shape:
            raise ValueError(
                f'soft targets must have the shape of the logits {tuple(log_q.shape)}, got {tuple(targets.shape)}'
            )
        return -(targets.to(log_q.dtype) * log_q).sum(dim=-1)
    return -log_q.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Apply a reduction over samples: 'batchmean' (mean), 'sum' or 'none'."""
    if reduction == 'batchmean':
        return per_sample.mean()
    if reduction == 'sum':
        return per_sample.sum()
    if reduction == 'none':
        return per_sample
    raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')


class LossParts(NamedTuple):
    """Per-sample parts of a TTM/WTTM loss, before the weights alpha and beta and the reduction."""

    distill: Tensor
    """D(p_hat_t || q) for TTM, U_gamma(p_t) * D(p_hat_t || q) for WTTM; shape (N,)."""
    cross_entropy: Tensor | None
    """H(y, q), shape (N,); None when no targets were given."""
    terms: DistillTerms


def loss_parts(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, gamma: float,
               weighted: bool) -> LossParts:
    """Per-sample TTM (``weighted=False``) or WTTM (``weighted=True``) parts in one pass."""
    terms = distill_terms(student_logits, teacher_logits, gamma)
    distill = terms.divergence * terms.log_power_sum.exp() if weighted else terms.divergence
    ce = None if targets is None else cross_entropy_from_log_probs(terms.student_log_probs, targets)
    return LossParts(distill, ce, terms)


def combine(parts: LossParts, alpha: float, beta: float, reduction: str) -> Tensor:
    """alpha * H(y, q) + beta * distill, reduced over samples."""
    per_sample = beta * parts.distill
    if alpha != 0:
        if parts.cross_entropy is None:
            raise ValueError('targets are required when alpha != 0 (alpha=0 is the variant without CE)')
        per_sample = per_sample + alpha * parts.cross_entropy
    return reduce(per_sample, reduction)


def ttm_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, gamma: float,
             alpha: float = 1.0, beta: float = 1.0, reduction: str = 'batchmean') -> Tensor:
    """TTM (Eq. 2): alpha * H(y, q) + beta * D(p_hat_t || q), reduced over samples."""
    return combine(loss_parts(student_logits, teacher_logits, targets, gamma, False), alpha, beta, reduction)


def wttm_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None, gamma: float,
              alpha: float = 1.0, beta: float = 1.0, reduction: str = 'batchmean') -> Tensor:
    """WTTM (Eq. 22): alpha * H(y, q) + beta * U_gamma(p_t) * D(p_hat_t || q), reduced over samples."""
    return combine(loss_parts(student_logits, teacher_logits, targets, gamma, True), alpha, beta, reduction)


def _pearson_rows(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (rows centred over their entries), with
    DIST's cosine a.b / (|a| |b| + eps): eps added to the product of the norms, not a clamp of each norm."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _logit_pair(name: str, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Both logits in float32 (float64 stays float64), the teacher's detached; (B, C) each or a ValueError."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f'{name}: logits must have one shape (B, C), got {tuple(student_logits.shape)} and '
                         f'{tuple(teacher_logits.shape)}')
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype), torch.float32)
    return student_logits.to(dtype), teacher_logits.detach().to(dtype)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0,
               eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """DIST's inter- and intra-class relation terms (Huang et al., NeurIPS 2022) for logits (B, C), before tau^2.

    With y = softmax(z / tau): inter = 1 - the batch mean of the Pearson correlation of each sample's student and
    teacher probabilities; intra = 1 - the class mean of the same on the transposed matrices (each class over the
    batch). intra depends on the batch it is given: under DDP, each process's own batch (as in the authors' code),
    nothing is gathered across ranks. Computed in float32 (float64 stays float64), also under autocast.
    """
    z, v = _logit_pair('dist_terms', student_logits, teacher_logits)
    with torch.autocast(device_type=z.device.type, enabled=False):
        y_s, y_t = torch.softmax(z / tau, dim=1), torch.softmax(v / tau, dim=1)
        inter = 1.0 - _pearson_rows(y_s, y_t, eps).mean()
        intra = 1.0 - _pearson_rows(y_s.T, y_t.T, eps).mean()
    return inter, intra


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              tau: float = 1.0, eps: float = 1e-8) -> Tensor:
    """DIST = tau^2 (beta inter + gamma intra), exactly as DIST's authors' code computes it (:func:`dist_terms`)."""
    inter, intra = dist_terms(student_logits, teacher_logits, tau, eps)
    return tau ** 2 * (beta * inter + gamma * intra)


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
              temperature: float) -> tuple[Tensor, Tensor]:
    """Decoupled KD's target-class and non-target-class terms (Zhao et al., CVPR 2022), as its authors' ``dkd_loss``
    computes them: ``alpha * tckd + beta * nckd`` is that loss.

    With p = softmax(z / T) and the binary b = [p_target, sum of the other classes' p] per sample:
    tckd = T^2 / B * sum over the batch of KL(b_t || b_s), log b_s taken of b_s itself; nckd = T^2 / B * sum over
    the batch of KL(softmax(v / T - 1000 g) || softmax(z / T - 1000 g)), g the one-hot target (the distributions
    over the non-target classes). ``targets`` are class indices (B,). Computed in float32 (float64 stays float64),
    also under autocast.
    """
    z, v = _logit_pair('dkd_terms', student_logits, teacher_logits)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.shape != z.shape[:1]:
        raise ValueError(f'dkd_terms: DKD needs one class index per sample, got targets of shape {list(targets.shape)} '
                         f'and dtype {targets.dtype} (mixed or soft labels are not its input)')
    batch = len(targets)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, v = z / temperature, v / temperature
        gt = torch.nn.functional.one_hot(targets.long(), z.shape[1]).to(z.dtype)
        p_s, p_t = torch.softmax(z, dim=1), torch.softmax(v, dim=1)
        b_s = torch.stack([(p_s * gt).sum(dim=1), (p_s * (1.0 - gt)).sum(dim=1)], dim=1)
        b_t = torch.stack([(p_t * gt).sum(dim=1), (p_t * (1.0 - gt)).sum(dim=1)], dim=1)
        tckd = torch.nn.functional.kl_div(torch.log(b_s), b_t, reduction='sum') * temperature ** 2 / batch
        log_q_s = torch.log_softmax(z - 1000.0 * gt, dim=1)
        q_t = torch.softmax(v - 1000.0 * gt, dim=1)
        nckd = torch.nn.functional.kl_div(log_q_s, q_t, reduction='sum') * temperature ** 2 / batch
    return tckd, nckd
