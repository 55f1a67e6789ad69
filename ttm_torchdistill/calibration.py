"""Teacher calibration in plain PyTorch: NLL, expected calibration error, temperature scaling.

Temperature scaling (Guo et al. 2017) fits one T* > 0 minimising the NLL of softmax(v / T*).
NLL is convex in 1/T (the logits are linear in it), so a bracketed golden-section search on
1/T finds the optimum. Kim et al. (2025) relate teacher calibration error to student accuracy;
gamma = 1/T* is the power exponent that calibrates the teacher, a starting point for TTM/WTTM.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ['expected_calibration_error', 'fit_temperature', 'nll', 'reliability_bins']


def nll(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    return torch.nn.functional.cross_entropy(logits.double() / temperature, targets).item()


def reliability_bins(logits: Tensor, targets: Tensor, num_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width confidence bin on (0, 1]: (sample count, mean confidence, accuracy)."""
    probs = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = predicted.eq(targets).double()
    index = (confidence * num_bins).ceil().long().clamp(1, num_bins) - 1  # bin b holds (b/n, (b+1)/n]
    count = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, correct)
    safe = count.clamp(min=1)
    return count, conf_sum / safe, acc_sum / safe


def expected_calibration_error(logits: Tensor, targets: Tensor, num_bins: int = 15) -> float:
    """ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over equal-width confidence bins."""
    count, confidence, accuracy = reliability_bins(logits, targets, num_bins)
    return ((count / count.sum()) * (accuracy - confidence).abs()).sum().item()


def fit_temperature(logits: Tensor, targets: Tensor, low: float = 0.01, high: float = 100.0,
                    tol: float = 1e-7) -> float:
    """T* = argmin_T NLL(softmax(logits / T)), searched over T in [low, high]."""
    logits = logits.double()

    def loss(inv_t: float) -> float:
        return torch.nn.functional.cross_entropy(logits * inv_t, targets).item()

    a, b = 1.0 / high, 1.0 / low
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol * max(1.0, abs(c)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return 2.0 / (a + b)
