"""Float64 transcriptions of the equations of the CRD benchmark's feature methods (loops and plain formulas, written
from the equations, not from the code under test), and the helpers that compare values and gradients with them."""
import torch

D = torch.float64


def randn(*shape, seed, dtype=D):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grads(value, leaves):
    return torch.autograd.grad(value, leaves, retain_graph=True)


def assert_same_value_and_grads(got, expected, got_leaves, ref_leaves, rtol=1e-10):
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=rtol, atol=1e-12)
    for g, e in zip(_grads(got, got_leaves), _grads(expected, ref_leaves), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-11)


def leaves(*tensors):
    return [t.clone().requires_grad_() for t in tensors], [t.clone().requires_grad_() for t in tensors]


def pool_ref(f, size):
    """Adaptive average pooling written out: output cell i averages rows floor(i H / s) .. ceil((i + 1) H / s)."""
    height = f.shape[2]
    bounds = [(i * height // size, -(-(i + 1) * height // size)) for i in range(size)]
    return torch.stack([torch.stack([f[:, :, a:b, c:d].mean(dim=(2, 3)) for c, d in bounds], dim=-1)
                        for a, b in bounds], dim=-2)


def at_ref(students, teachers, p):
    total = 0.0
    for f_s, f_t in zip(students, teachers, strict=True):
        if f_s.shape[2] > f_t.shape[2]:
            f_s = pool_ref(f_s, f_t.shape[2])
        elif f_t.shape[2] > f_s.shape[2]:
            f_t = pool_ref(f_t, f_s.shape[2])

        def attention(f):
            a = (f.abs() ** p).sum(dim=1).reshape(len(f), -1) / f.shape[1]
            return a / (a ** 2).sum(dim=1, keepdim=True).sqrt()

        diff = attention(f_s) - attention(f_t)
        total = total + (diff ** 2).sum() / diff.numel()
    return total


def vid_ref(mean, log_scale, target, eps):
    total = 0.0
    for c in range(mean.shape[1]):
        v = torch.log1p(torch.exp(log_scale[c])) + eps
        total = total + (0.5 * ((mean[:, c] - target[:, c]) ** 2 / v + torch.log(v))).sum()
    return total / mean.numel()


def _smooth_l1(x):
    return torch.where(x.abs() < 1, 0.5 * x ** 2, x.abs() - 0.5).mean()


def rkd_ref(s, t, w_dist, w_angle):
    batch = len(s)

    def relative_distances(e):
        d = torch.stack([torch.stack([((e[i] - e[j]) ** 2).sum().sqrt() if i != j else e.new_zeros(())
                                      for j in range(batch)]) for i in range(batch)])
        return d / (d.sum() / (batch * batch - batch))

    def angles(e):
        def unit(v):
            norm = (v ** 2).sum().sqrt()
            return v / norm if norm > 0 else v
        return torch.stack([(unit(e[j] - e[i]) * unit(e[k] - e[i])).sum()
                            for i in range(batch) for j in range(batch) for k in range(batch)])

    s, t = s.reshape(batch, -1), t.reshape(batch, -1)
    return (w_dist * _smooth_l1(relative_distances(s) - relative_distances(t))
            + w_angle * _smooth_l1(angles(s) - angles(t)))


def pkt_ref(s, t, eps):
    batch = len(s)

    def conditionals(e):
        rows = [e[i] / ((e[i] ** 2).sum().sqrt() + eps) for i in range(batch)]
        kernel = [[((rows[i] * rows[j]).sum() + 1) / 2 for j in range(batch)] for i in range(batch)]
        return [[kernel[i][j] / sum(kernel[i]) for j in range(batch)] for i in range(batch)]

    p_s, p_t = conditionals(s.reshape(batch, -1)), conditionals(t.reshape(batch, -1))
    return sum(p_t[i][j] * torch.log((p_t[i][j] + eps) / (p_s[i][j] + eps))
               for i in range(batch) for j in range(batch)) / batch ** 2
