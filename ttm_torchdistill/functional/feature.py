"""The math of the feature-based methods in plain PyTorch (no torchdistill import): ITRD (the TTM paper's Eq. 24) and
the five feature methods of the CRD benchmark (Tian et al., ICLR 2020), FitNet, AT, VID, RKD and PKT, each computed as
that benchmark's code (github.com/HobbitLong/RepDistiller, ``distiller_zoo``) computes it.

Every function computes in float32 (float64 stays float64), also under autocast, and no gradient reaches the teacher:
its features are detached (the benchmark computes them under ``torch.no_grad``). Feature maps are (B, C, H, W).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as nnf

__all__ = [
    'at_loss',
    'at_terms',
    'attention_map',
    'hint_loss',
    'itrd_terms',
    'pkt_loss',
    'pool_to_smaller',
    'rkd_loss',
    'rkd_terms',
    'vid_log_scale',
    'vid_loss',
    'vid_variance',
]


def _dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or a wider floating type among ``tensors``."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _no_autocast(tensor: Tensor) -> torch.autocast:
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def hint_loss(student_regressed: Tensor, teacher_feature: Tensor) -> Tensor:
    """FitNet's hint loss (Romero et al., ICLR 2015) as the benchmark's ``HintLoss`` computes it: the mean squared
    error over all N elements,

    .. math:: L_{hint} = \\frac{1}{N} \\sum_i (r_i - t_i)^2

    of the regressed student hint map r = regressor(student's hint map) and the teacher's hint map t, of one shape
    (e.g. (B, C_t, H_t, W_t)). A shape mismatch is a ValueError (no broadcasting).
    """
    if student_regressed.shape != teacher_feature.shape:
        raise ValueError(f'hint_loss: the regressed student map {_shape(student_regressed)} and the teacher map '
                         f'{_shape(teacher_feature)} must have one shape')
    dtype = _dtype(student_regressed, teacher_feature)
    with _no_autocast(student_regressed):
        return nnf.mse_loss(student_regressed.to(dtype), teacher_feature.detach().to(dtype))


def _square_map(name: str, side: str, feature: Tensor) -> None:
    if feature.dim() != 4 or feature.shape[2] != feature.shape[3]:
        raise ValueError(f'{name}: the {side} feature map must be square, of shape (B, C, H, H), got '
                         f'{_shape(feature)}')


def pool_to_smaller(student_map: Tensor, teacher_map: Tensor) -> tuple[Tensor, Tensor]:
    """Two square maps (B, C, H, H) at one spatial size: the larger one adaptive-average-pooled to the other's size,
    as the benchmark's AT and VID match sizes (it compares the heights and pools to a square)."""
    _square_map('pool_to_smaller', 'student', student_map)
    _square_map('pool_to_smaller', 'teacher', teacher_map)
    h_s, h_t = student_map.shape[2], teacher_map.shape[2]
    if h_s > h_t:
        student_map = nnf.adaptive_avg_pool2d(student_map, (h_t, h_t))
    elif h_t > h_s:
        teacher_map = nnf.adaptive_avg_pool2d(teacher_map, (h_s, h_s))
    return student_map, teacher_map


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """AT's attention map of a (B, C, H, W) map: a(f) = L2-normalise(flatten(mean over channels of |f|^p)), (B, H W).

    The benchmark takes ``f.pow(p)``, which equals |f|^p for even p (the benchmark's p = 2, bit for bit); |f|^p keeps
    other p defined on negative values. The L2 normalisation divides by max(norm, 1e-12), as ``F.normalize``.
    """
    return nnf.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_terms(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], p: float = 2.0) -> list[Tensor]:
    """Attention transfer's per-pair terms (Zagoruyko & Komodakis, ICLR 2017) as the benchmark's ``Attention``
    computes them: for the k-th pair of square maps (B, C_s, H_s, H_s) and (B, C_t, H_t, H_t), paired in order,

    .. math:: L_k = \\operatorname{mean}_{b, j} \\left( a(f_s)_{bj} - a(f_t)_{bj} \\right)^2

    with a = :func:`attention_map`, after :func:`pool_to_smaller` (the larger map adaptive-average-pooled to the
    smaller's size; channel counts may differ). The benchmark pools only by comparing heights and pools to a
    square, so it assumes square maps: a map that is not square is a ValueError here. The two sequences must have
    one length (the benchmark's ``zip`` would silently drop the extra maps).
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(f'at_terms: expected one non-empty list of student maps and one of teacher maps of the same '
                         f'length, got {len(student_features)} and {len(teacher_features)}')
    if isinstance(p, bool) or not math.isfinite(p) or p <= 0:
        raise ValueError(f'at_terms: p={p!r} is invalid: accepted range is a finite number > 0')
    terms = []
    for f_s, f_t in zip(student_features, teacher_features, strict=True):
        if len(f_s) != len(f_t):
            raise ValueError(f'at_terms: the student map {_shape(f_s)} and the teacher map {_shape(f_t)} have '
                             'different batch sizes')
        dtype = _dtype(f_s, f_t)
        with _no_autocast(f_s):
            f_s, f_t = pool_to_smaller(f_s.to(dtype), f_t.detach().to(dtype))
            terms.append((attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean())
    return terms


def _sum(terms: Sequence[Tensor]) -> Tensor:
    """t_1 + t_2 + ... in order (Python's ``sum`` over the benchmark's list of losses, bit for bit)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def at_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """AT = sum over the pairs of :func:`at_terms` (the benchmark's ``sum`` of its per-pair losses)."""
    return _sum(at_terms(student_features, teacher_features, p))


def vid_log_scale(init_pred_var: float = 5.0, eps: float = 1e-5) -> float:
    """VID's initial log_scale, log(exp(init_pred_var - eps) - 1), so that the initial variance
    softplus(log_scale) + eps is init_pred_var (the benchmark's initialisation, in float64)."""
    return math.log(math.exp(init_pred_var - eps) - 1.0)


def vid_variance(log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """VID's per-channel variance v = log(1 + exp(log_scale)) + eps, (C,).

    Computed literally as the benchmark does: ``torch.nn.functional.softplus`` (log1p, and linear above 20) gives the
    same float32 value at the initial log_scale (init_pred_var 5) but differs in the last bit on about 40% of the
    values in [-10, 15], so it is not used.
    """
    return torch.log(1.0 + torch.exp(log_scale)) + eps


def vid_loss(pred_mean: Tensor, log_scale: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """Variational information distillation (Ahn et al., CVPR 2019) for one pair, as the benchmark's ``VIDLoss``:
    the Gaussian negative log-likelihood (without its constant) of the teacher map t under the mean mu predicted from
    the student map and the per-channel variance v = :func:`vid_variance` (log_scale, eps), averaged over all elements:

    .. math:: L_{VID} = \\operatorname{mean}_{b,c,h,w} \\frac{1}{2} \\left( \\frac{(\\mu_{bchw} - t_{bchw})^2}{v_c}
       + \\log v_c \\right)

    ``pred_mean`` and ``target`` (B, C, H, W) of one shape (pool the larger map first: :func:`pool_to_smaller`),
    ``log_scale`` (C,). The gradient reaches ``pred_mean`` and ``log_scale``, never ``target``.
    """
    if pred_mean.dim() != 4 or pred_mean.shape != target.shape or _shape(log_scale) != (pred_mean.shape[1],):
        raise ValueError(f'vid_loss: expected pred_mean and target of one shape (B, C, H, W) and log_scale (C,), got '
                         f'{_shape(pred_mean)}, {_shape(target)} and {_shape(log_scale)}')
    dtype = _dtype(pred_mean, log_scale, target)
    with _no_autocast(pred_mean):
        mean, target = pred_mean.to(dtype), target.detach().to(dtype)
        variance = vid_variance(log_scale.to(dtype), eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - target) ** 2 / variance + torch.log(variance))).mean()


def _embeddings(name: str, student: Tensor, teacher: Tensor, min_batch: int) -> tuple[Tensor, Tensor]:
    """Both embeddings flattened to (B, d_s) and (B, d_t), in float32 or wider, the teacher's detached."""
    if student.dim() < 2 or teacher.dim() < 2 or len(student) != len(teacher) or len(student) < min_batch:
        raise ValueError(f'{name}: expected student and teacher embeddings (B, ...) of one batch size B >= '
                         f'{min_batch}, got {_shape(student)} and {_shape(teacher)}')
    dtype = _dtype(student, teacher)
    return student.flatten(1).to(dtype), teacher.detach().flatten(1).to(dtype)


def _distances(e: Tensor) -> Tensor:
    """RKD's pairwise Euclidean distances (B, B): sqrt(clamp(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, 1e-12)), diagonal 0."""
    squared = e.pow(2).sum(dim=1)
    distance = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * (e @ e.t())).clamp(min=1e-12).sqrt()
    return distance.masked_fill(torch.eye(len(e), dtype=torch.bool, device=e.device), 0.0)


def _relative_distances(e: Tensor) -> Tensor:
    distance = _distances(e)
    return distance / distance[distance > 0].mean()


def _angles(e: Tensor) -> Tensor:
    """cos of the angle at e_i between e_j and e_k, for all (i, j, k), flattened (B^3,)."""
    directions = nnf.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2)).view(-1)


def rkd_terms(student_embedding: Tensor, teacher_embedding: Tensor) -> tuple[Tensor, Tensor]:
    """Relational KD's distance and angle terms (Park et al., CVPR 2019), as the benchmark's ``RKDLoss`` computes
    them, for embeddings (B, ...) flattened to (B, d_s) and (B, d_t), B >= 2:

    * distance: psi_D(i, j) = |e_i - e_j| / mu, with mu the mean of the positive distances of the batch (the
      distances from |e_i|^2 + |e_j|^2 - 2 e_i.e_j, clamped at 1e-12, square-rooted, the diagonal set to 0);
      the term is the smooth L1 loss (beta 1, mean over the B^2 entries) between student's and teacher's psi_D;
    * angle: psi_A(i, j, k) = <n(e_j - e_i), n(e_k - e_i)> for all i, j, k, n the L2 normalisation (a zero
      difference stays zero); the term is the smooth L1 loss (mean over the B^3 entries).
    """
    student, teacher = _embeddings('rkd_terms', student_embedding, teacher_embedding, 2)
    with _no_autocast(student):
        with torch.no_grad():
            teacher_distances, teacher_angles = _relative_distances(teacher), _angles(teacher)
        distance = nnf.smooth_l1_loss(_relative_distances(student), teacher_distances)
        angle = nnf.smooth_l1_loss(_angles(student), teacher_angles)
    return distance, angle


def rkd_loss(student_embedding: Tensor, teacher_embedding: Tensor, w_dist: float = 25.0,
             w_angle: float = 50.0) -> Tensor:
    """RKD = w_dist * distance + w_angle * angle (:func:`rkd_terms`); the benchmark's weights are 25 and 50."""
    distance, angle = rkd_terms(student_embedding, teacher_embedding)
    return w_dist * distance + w_angle * angle


def _cosine_conditionals(e: Tensor, eps: float) -> Tensor:
    """PKT's conditional probabilities (B, B): rows scaled by 1 / (norm + eps) (a NaN set to 0), cosine similarities
    shifted to [0, 1] by (x + 1) / 2, each row divided by its sum."""
    rows = e / (torch.sqrt(torch.sum(e ** 2, dim=1, keepdim=True)) + eps)
    rows = torch.where(torch.isnan(rows), torch.zeros_like(rows), rows)
    similarity = (torch.mm(rows, rows.transpose(0, 1)) + 1.0) / 2.0
    return similarity / torch.sum(similarity, dim=1, keepdim=True)


def pkt_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) as the benchmark's ``PKT`` computes it, for
    embeddings (B, ...) flattened to (B, d_s) and (B, d_t): with the conditional probabilities
    P_s and P_t (B, B) of the cosine kernels (each row e_i / (|e_i| + eps), K_ij = (cos_ij + 1) / 2, rows normalised
    to sum 1),

    .. math:: L_{PKT} = \\operatorname{mean}_{i,j} P_{t,ij} \\log \\frac{P_{t,ij} + eps}{P_{s,ij} + eps}

    (the mean over all B^2 entries, not a per-row sum).
    """
    student, teacher = _embeddings('pkt_loss', student_embedding, teacher_embedding, 1)
    with _no_autocast(student):
        with torch.no_grad():
            p_t = _cosine_conditionals(teacher, eps)
        p_s = _cosine_conditionals(student, eps)
        return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


def _float32_or_wider(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(torch.promote_types(dtype, torch.float32))


def itrd_terms(z_s: Tensor, z_t: Tensor, embed: Callable[[Tensor], Tensor], alpha_it: float) -> tuple[Tensor, Tensor]:
    """ITRD's correlation and mutual-information terms (Miles et al., BMVC 2022), as the paper's Eq. (24) uses them.

    ``z_s`` (B, d_s) and ``z_t`` (B, d_t) are the student's and teacher's pooled penultimate features;
    ``embed`` maps student features to the teacher's size (ITRD's trainable ``Linear(d_s, d_t)``) and is
    called once, on ``z_s`` itself. With f_s = embed(z_s), returns (l_corr, l_mi):

    * l_corr = log2( sum_x |1 - c_x|^(2 alpha_it) ), c_x = (1/B) sum_b fs_hat[b, x] * zt_hat[b, x], where each
      dimension of f_s and z_t is standardised over the batch, (f - mean) / std, std with Bessel's correction
      and no eps. The embedding is always applied here.
    * l_mi = sum_ij (G_s^2 - G_st^2), G_s = Zs Zs^T / tr(Zs Zs^T), G_st = (G_s o G_t) / tr(G_s o G_t) (o:
      elementwise), G_t = Zt Zt^T, with the rows of Zs and Zt L2-normalised (a zero row stays zero);
      Zs = f_s when d_s != d_t, else z_s itself (the embedding is applied only when the sizes differ).

    Everything after the embedding runs in float32 (float64 stays float64), also under autocast. ``z_t`` is
    detached: no gradient reaches the teacher. A batch needs at least 2 samples (ValueError otherwise).
    A dimension that is constant over the batch (e.g. a teacher channel that is 0 for every sample) has std 0,
    so its standardised values are 0/0 = NaN and l_corr is NaN, exactly as in the reference code, which adds
    no eps either; l_mi is unaffected.
    """
    if z_s.dim() != 2 or z_t.dim() != 2 or len(z_s) != len(z_t):
        raise ValueError(f'itrd_terms: features must have shapes (B, d_s) and (B, d_t), got {tuple(z_s.shape)} '
                         f'and {tuple(z_t.shape)}')
    batch = len(z_s)
    if batch < 2:
        raise ValueError(f'itrd_terms: batch size {batch} is too small: the batch standard deviation needs at '
                         'least 2 samples')
    f_s = embed(z_s)
    if tuple(f_s.shape) != tuple(z_t.shape):
        raise ValueError(f'itrd_terms: the embedded student feature has shape {tuple(f_s.shape)}, but the teacher '
                         f'feature has {tuple(z_t.shape)}')
    dtype = torch.promote_types(torch.promote_types(z_s.dtype, f_s.dtype), z_t.dtype)
    with torch.autocast(device_type=z_s.device.type, enabled=False):
        zs, fs = _float32_or_wider(z_s, dtype), _float32_or_wider(f_s, dtype)
        zt = _float32_or_wider(z_t.detach(), dtype)
        fs_hat = (fs - fs.mean(dim=0)) / fs.std(dim=0)
        zt_hat = (zt - zt.mean(dim=0)) / zt.std(dim=0)
        c = (fs_hat * zt_hat).sum(dim=0) / batch
        l_corr = torch.log2((1.0 - c).abs().pow(2.0 * alpha_it).sum())
        rows_s = torch.nn.functional.normalize(fs if z_s.shape[1] != z_t.shape[1] else zs, dim=1)
        rows_t = torch.nn.functional.normalize(zt, dim=1)
        g_s = rows_s @ rows_s.T
        g_s = g_s / g_s.trace()
        g_st = g_s * (rows_t @ rows_t.T)
        g_st = g_st / g_st.trace()
        l_mi = (g_s.square() - g_st.square()).sum()
    return l_corr, l_mi
