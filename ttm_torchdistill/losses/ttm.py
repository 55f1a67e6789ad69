"""TTMLoss and WTTMLoss: Zheng & Yang's transformed teacher matching as torchdistill mid-level losses, over
:mod:`ttm_torchdistill.functional`."""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchdistill.losses.registry import register_mid_level_loss

from .. import functional as F
from ..methods import BaseTerm, Knob, LossHooks, Method, register_method
from .checks import number

__all__ = ['TTMLoss', 'WTTMLoss', 'resolve_gamma']


def resolve_gamma(gamma: float | None, temperature: float | None) -> float:
    """gamma from exactly one of ``gamma`` and ``temperature`` (gamma = 1 / temperature), both finite and > 0."""
    if (gamma is None) == (temperature is None):
        raise ValueError(
            f'give exactly one of gamma and temperature (gamma = 1/temperature), got gamma={gamma!r}, '
            f'temperature={temperature!r}'
        )
    if gamma is not None:
        return number('gamma', gamma, 'a finite number > 0 (the paper uses 0 < gamma <= 1)', lambda v: v > 0)
    return 1.0 / number('temperature', temperature, 'a finite number > 0', lambda v: v > 0)


TTM_SHORT_NAMES = {'gamma': 'the power exponent gamma = 1/T (temperature on the teacher only)',
                   'beta': 'the weight of the distillation term', 'alpha': 'the weight of the cross entropy',
                   'temperature': 'T = 1/gamma'}
"""what `sweep --grid` short names set in TTMLoss and WTTMLoss"""


def _ttm_kwargs(method: Method, gamma: float | None, beta: float | None, base: BaseTerm) -> dict[str, object]:
    """`new-recipe`'s kwargs for a TTM or WTTM term: gamma and beta given, else the base's where they mean the same
    (a KD or DKD base's temperature: gamma = 1/T), else 0.8 and 1."""
    gamma = gamma if gamma is not None else base.gamma(('exponent', 'inverse_temperature')) or 0.8
    return {'gamma': gamma, 'beta': beta if beta is not None else base.own(method, 'beta', 1.0), 'alpha': 1.0,
            'reduction': "'batchmean'"}


def _ttm_method(name: str, loss_key: str) -> Method:
    return Method(name, loss_key, short_names=TTM_SHORT_NAMES, gamma=Knob('exponent', 'gamma = 1/temperature'),
                  beta=Knob('weight', 'the weight of the distillation term'), recipe_kwargs=_ttm_kwargs)


@register_method(_ttm_method('ttm', 'TTMLoss'))
@register_mid_level_loss
class TTMLoss(LossHooks):
    """Transformed teacher matching: temperature on the teacher only (Eq. 2).

    .. math::

       L_{TTM} = \\alpha \\cdot H(y, q) + \\beta \\cdot D(\\hat{p}_t \\| q),
       \\quad \\hat{p}_t = \\mathrm{softmax}(\\gamma v), \\quad q = \\mathrm{softmax}(z)

    Kaixiang Zheng, En-Hui Yang: "Knowledge Distillation Based on Transformed Teacher Matching"
    @ ICLR 2024. The divergence is computed in float32 from the logits (also under autocast),
    the teacher logits are detached, and the parts of the last forward are kept in
    :attr:`last_parts` for logging.

    :param student_module_path: student model's logit module path ('.' for the model output).
    :param student_module_io: 'input' or 'output' of that module.
    :param teacher_module_path: teacher model's logit module path.
    :param teacher_module_io: 'input' or 'output' of that module.
    :param gamma: power exponent gamma = 1/T > 0; give this or ``temperature``.
    :param temperature: T = 1/gamma > 0; give this or ``gamma``.
    :param alpha: weight of the cross entropy with the labels (>= 0; 0 needs no labels).
    :param beta: weight of the distillation term (>= 0).
    :param reduction: 'batchmean' (mean over samples), 'sum' or 'none' (per-sample values).

    .. code-block:: YAML
       :caption: TTMLoss in a torchdistill recipe (no other term needed: it contains the CE).

        criterion:
          key: 'WeightedSumLoss'
          kwargs:
            sub_terms:
              ttm:
                criterion:
                  key: 'TTMLoss'
                  kwargs:
                    student_module_path: '.'
                    student_module_io: 'output'
                    teacher_module_path: '.'
                    teacher_module_io: 'output'
                    gamma: 0.8
                    beta: 1.6
                    alpha: 1.0
                    reduction: 'batchmean'
                weight: 1.0
    """

    weighted = False
    diagnostic_names = ('cross_entropy', 'distill', 'divergence', 'u_gamma', 'student_entropy')
    """what :meth:`diagnostics` reports (the runner logs them per epoch)"""

    def __init__(self, student_module_path: str = '.', student_module_io: str = 'output',
                 teacher_module_path: str = '.', teacher_module_io: str = 'output',
                 gamma: float | None = None, temperature: float | None = None,
                 alpha: float = 1.0, beta: float = 1.0, reduction: str = 'batchmean') -> None:
        super().__init__()
        self.student_module_path = student_module_path
        self.student_module_io = student_module_io
        self.teacher_module_path = teacher_module_path
        self.teacher_module_io = teacher_module_io
        self.gamma = resolve_gamma(gamma, temperature)
        self.alpha = number('alpha', alpha, 'a finite number >= 0', lambda v: v >= 0)
        self.beta = number('beta', beta, 'a finite number >= 0', lambda v: v >= 0)
        if reduction not in F.REDUCTIONS:
            raise ValueError(f'reduction={reduction!r} is invalid: accepted values are {", ".join(F.REDUCTIONS)}')
        self.reduction = reduction
        self._last: F.LossParts | None = None

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, targets: Tensor | None = None,
                *args, **kwargs) -> Tensor:
        student_logits = student_io_dict[self.student_module_path][self.student_module_io]
        teacher_logits = teacher_io_dict[self.teacher_module_path][self.teacher_module_io]
        parts = F.loss_parts(student_logits, teacher_logits, targets, self.gamma, self.weighted)
        self._last = parts
        return F.combine(parts, self.alpha, self.beta, self.reduction)

    def diagnostics(self) -> Tensor | None:
        """Batch means of the last forward's parts, in :attr:`diagnostic_names` order, as one float tensor on
        the logits' device (no host synchronisation); None before the first forward. Derived from
        tensors the forward already computed."""
        parts = self._last
        if parts is None:
            return None
        with torch.no_grad():
            log_q = parts.terms.student_log_probs
            return torch.stack([
                parts.cross_entropy.mean() if parts.cross_entropy is not None else log_q.new_tensor(math.nan),
                parts.distill.mean(),
                parts.terms.divergence.mean(),
                parts.terms.log_power_sum.exp().mean(),
                F.entropy_from_log_probs(log_q).mean(),
            ])

    def extra_repr(self) -> str:
        return f'gamma={self.gamma:g}, alpha={self.alpha:g}, beta={self.beta:g}, reduction={self.reduction!r}'

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'


@register_method(_ttm_method('wttm', 'WTTMLoss'))
@register_mid_level_loss
class WTTMLoss(TTMLoss):
    """Weighted TTM: the TTM distillation term weighted per sample by U_gamma(p_t) (Eq. 22).

    .. math::

       L_{WTTM} = \\frac{1}{N} \\sum_n \\left[ \\alpha \\cdot H(y_n, q_n)
       + \\beta \\cdot U_\\gamma(p_{t,n}) \\cdot D(\\hat{p}_{t,n} \\| q_n) \\right],
       \\quad U_\\gamma(p) = \\sum_j p_j^\\gamma

    U_gamma is 1 for a one-hot teacher and K^(1-gamma) for a uniform one, so smoother teacher
    outputs get more weight. Same parameters as :class:`TTMLoss`.

    .. code-block:: YAML
       :caption: WTTMLoss for ResNet-34 -> ResNet-18 on ImageNet (paper, Table 10).

        criterion:
          key: 'WeightedSumLoss'
          kwargs:
            sub_terms:
              wttm:
                criterion:
                  key: 'WTTMLoss'
                  kwargs:
                    student_module_path: '.'
                    student_module_io: 'output'
                    teacher_module_path: '.'
                    teacher_module_io: 'output'
                    gamma: 0.8
                    beta: 1.6
                    alpha: 1.0
                    reduction: 'batchmean'
                weight: 1.0
    """

    weighted = True
