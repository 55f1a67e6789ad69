"""The functional core against the paper's equations (float64 references)."""
import math

import pytest
import torch

from ttm_torchdistill import functional as F


def _logits(n, k, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g, dtype=torch.float64)


def _reference(z, v, y, gamma, alpha, beta, weighted):
    """A direct float64 transcription of Eq. (2) / Eq. (22), per sample."""
    p_t = torch.softmax(v, dim=1)
    u = (p_t ** gamma).sum(dim=1)
    p_hat = p_t ** gamma / u[:, None]
    q = torch.softmax(z, dim=1)
    kl = (p_hat * (p_hat.log() - q.log())).sum(dim=1)
    ce = -q.log()[torch.arange(len(y)), y]
    return alpha * ce + beta * (u * kl if weighted else kl)


@pytest.mark.parametrize('k', [10, 1000])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('reduction', ['batchmean', 'sum', 'none'])
@pytest.mark.parametrize('alpha', [0.0, 1.0, 0.3])
def test_loss_matches_equation(k, weighted, reduction, alpha):
    z, v = _logits(64, k, 0), _logits(64, k, 1)
    y = torch.randint(0, k, (64,), generator=torch.Generator().manual_seed(2))
    gamma, beta = 0.7, 3.5
    expected = _reference(z, v, y, gamma, alpha, beta, weighted)
    expected = {'batchmean': expected.mean(), 'sum': expected.sum(), 'none': expected}[reduction]
    loss_fn = F.wttm_loss if weighted else F.ttm_loss
    got = loss_fn(z.float(), v.float(), y if alpha else None, gamma, alpha=alpha, beta=beta, reduction=reduction)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6 * max(1.0, expected.abs().max().item()))


def test_power_transform_is_temperature_scaling_eq9():
    v = _logits(32, 100, 3)
    for gamma in (0.1, 0.5, 0.8, 1.0, 2.0):
        p = torch.softmax(v, dim=1)
        direct = p ** gamma / (p ** gamma).sum(dim=1, keepdim=True)
        torch.testing.assert_close(F.power_transform(v, gamma), direct)
        torch.testing.assert_close(F.power_transform(v, gamma), torch.softmax(gamma * v, dim=1))


def test_kd_decomposition_eq15():
    """D(p_hat_t || q) = T D(p_hat_t || q_hat) - (T-1) H_{1/T}(q) + (T-1) H(p_hat_t)."""
    z, v = _logits(16, 50, 4), _logits(16, 50, 5)
    for temperature in (1.0, 1.25, 2.0, 4.0):
        gamma = 1 / temperature
        p_hat = F.power_transform(v, gamma)
        q, q_hat = torch.softmax(z, 1), F.power_transform(z, gamma)
        kl = lambda a, b: (a * (a.log() - b.log())).sum(1)  # noqa: E731
        lhs = F.distill_terms(z, v, gamma).divergence
        rhs = (temperature * kl(p_hat, q_hat) - (temperature - 1) * F.renyi_entropy(z, gamma)
               + (temperature - 1) * F.shannon_entropy(gamma * v))
        torch.testing.assert_close(lhs, rhs)
        torch.testing.assert_close(lhs, kl(p_hat, q))


def test_gradient_eq20():
    z = _logits(8, 30, 6).requires_grad_()
    v = _logits(8, 30, 7).requires_grad_()
    gamma = 0.6
    F.distill_terms(z, v, gamma).divergence.sum().backward()
    torch.testing.assert_close(z.grad, torch.softmax(z, 1) - torch.softmax(gamma * v, 1))
    assert v.grad is None


def test_power_sum_bounds():
    k, gamma = 100, 0.3
    one_hot = torch.full((1, k), -1e4, dtype=torch.float64)
    one_hot[0, 7] = 1e4
    torch.testing.assert_close(F.power_sum(one_hot, gamma), torch.ones(1, dtype=torch.float64))
    uniform = torch.zeros(2, k, dtype=torch.float64)
    torch.testing.assert_close(F.power_sum(uniform, gamma), torch.full((2,), k ** (1 - gamma), dtype=torch.float64))
    v = _logits(64, k, 8)
    u = F.power_sum(v, gamma)
    assert ((u >= 1) & (u <= k ** (1 - gamma) + 1e-9)).all()
    torch.testing.assert_close(u, (torch.softmax(v, 1) ** gamma).sum(1))


def test_renyi_entropy():
    v = _logits(8, 20, 9)
    p = torch.softmax(v, 1)
    for order in (0.3, 0.5, 2.0):
        torch.testing.assert_close(F.renyi_entropy(v, order), (p ** order).sum(1).log() / (1 - order))
    torch.testing.assert_close(F.renyi_entropy(v, 1), -(p * p.log()).sum(1))
    torch.testing.assert_close(F.renyi_entropy(torch.zeros(1, 20), 0.5), torch.tensor([math.log(20)]))


def test_soft_targets_equal_one_hot_targets():
    z, v = _logits(8, 10, 10).float(), _logits(8, 10, 11).float()
    y = torch.arange(8) % 10
    hard = F.wttm_loss(z, v, y, 0.8)
    soft = F.wttm_loss(z, v, torch.nn.functional.one_hot(y, 10).float(), 0.8)
    torch.testing.assert_close(hard, soft)


def test_missing_targets_with_alpha_is_an_error():
    z = torch.randn(2, 5)
    with pytest.raises(ValueError, match='targets are required'):
        F.ttm_loss(z, z, None, 0.5, alpha=1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match='same shape'):
        F.distill_terms(torch.randn(2, 5), torch.randn(2, 6), 0.5)
