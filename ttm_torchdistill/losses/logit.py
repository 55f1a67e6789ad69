"""ExactDISTLoss and DKDLoss: the paper's logit-based rivals DIST and DKD as torchdistill mid-level losses, computed as
their authors' code computes them (:mod:`ttm_torchdistill.functional`); and the methods KD (torchdistill's own
KDLoss), DIST and DKD declared."""
from __future__ import annotations

import torch
from torch import Tensor
from torchdistill.losses.registry import register_mid_level_loss

from .. import functional as F
from ..methods import BaseTerm, Knob, LossHooks, Method, register_method
from .checks import number

__all__ = ['DKDLoss', 'ExactDISTLoss']


def _kd_kwargs(method: Method, gamma: float | None, beta: float | None, base: BaseTerm) -> dict[str, object]:
    """KD (torchdistill's KDLoss: alpha * CE + beta * T^2 * KL, beta by default 1 - alpha): T = 1/gamma, gamma given
    or the base's where it means the same, else 0.8; a KD base's alpha and beta, else alpha 0.5."""
    gamma = gamma if gamma is not None else base.gamma(('exponent', 'inverse_temperature')) or 0.8
    beta = beta if beta is not None else base.own(method, 'beta')
    return {'temperature': round(1.0 / gamma, 6), 'alpha': base.own(method, 'alpha', 0.5),
            **({'beta': beta} if beta is not None else {}), 'reduction': "'batchmean'"}


register_method(Method(
    'kd', 'KDLoss', short_names={'beta': 'the weight of T^2 * KL', 'alpha': 'the weight of the cross entropy',
                                 'temperature': 'T, on both models'},
    gamma=Knob('inverse_temperature', 'gamma = 1/temperature'),
    beta=Knob('weight', 'the weight of T^2 * KL, default 1 - alpha'), beta_carries=True,
    recipe_kwargs=_kd_kwargs))(None)  # torchdistill's KDLoss


def _dist_kwargs(method: Method, gamma: float | None, beta: float | None, base: BaseTerm) -> dict[str, object]:
    """DIST's inter- and intra-class weights given, else a DIST base's, else its authors' 2 and 2; tau a DIST base's,
    else their setting for the data (CIFAR-100: 4, else 1)."""
    return {'beta': beta if beta is not None else base.own(method, 'beta', 2.0),
            'gamma': gamma if gamma is not None else base.own(method, 'gamma', 2.0),
            'tau': base.own(method, 'tau') or (4.0 if base.cifar else 1.0)}


def _dkd_kwargs(method: Method, gamma: float | None, beta: float | None, base: BaseTerm) -> dict[str, object]:
    """DKD: T = 1/gamma, gamma given or a KD/DKD base's 1/T (a TTM exponent is no DKD temperature), else its
    authors' setting (CIFAR-100: T 4, 20 warm-up epochs; else 1 and none); beta given or a DKD base's."""
    gamma = gamma if gamma is not None else base.gamma(('inverse_temperature',)) or (0.25 if base.cifar else 1.0)
    warmup = base.own(method, 'warmup_epochs')
    return {'alpha': 1.0, 'beta': beta if beta is not None else base.own(method, 'beta', 8.0),
            'temperature': round(1.0 / gamma, 6),
            'warmup_epochs': warmup if warmup is not None else 20 if base.cifar else 1}


class _LogitLoss(LossHooks):
    """The logits a loss reads: a module path and 'input'/'output' on each side, as torchdistill's logit losses."""

    def __init__(self, student_module_path: str, student_module_io: str, teacher_module_path: str,
                 teacher_module_io: str) -> None:
        super().__init__()
        self.student_module_path = student_module_path
        self.student_module_io = student_module_io
        self.teacher_module_path = teacher_module_path
        self.teacher_module_io = teacher_module_io
        self._last: Tensor | None = None

    def _logits(self, student_io_dict: dict, teacher_io_dict: dict) -> tuple[Tensor, Tensor]:
        return (student_io_dict[self.student_module_path][self.student_module_io],
                teacher_io_dict[self.teacher_module_path][self.teacher_module_io])

    def diagnostics(self) -> Tensor | None:
        """The last forward's values, in ``diagnostic_names`` order, on their device; None before the first forward."""
        return self._last

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'


@register_method(Method(
    'dist', 'ExactDISTLoss', short_names={'gamma': 'the intra-class weight', 'beta': 'the inter-class weight',
                                          'tau': 'the temperature'},
    separate_ce=True, gamma=Knob('weight', 'the intra-class weight'), beta=Knob('weight', 'the inter-class weight'),
    beta_carries=True, recipe_kwargs=_dist_kwargs))
@register_mid_level_loss
class ExactDISTLoss(_LogitLoss):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022), exactly as its authors'
    code and the TTM paper's ``distiller_zoo/dist.py`` compute it.

    .. math::

       L_{DIST} = \\tau^2 \\left( \\beta (1 - \\overline{\\rho}(Y_s, Y_t)) +
       \\gamma (1 - \\overline{\\rho}(Y_s^\\top, Y_t^\\top)) \\right),
       \\quad Y = \\mathrm{softmax}(z / \\tau)

    with rho the Pearson correlation of matching rows (mean over rows) and the cosine a.b / (|a| |b| + eps).
    torchdistill's ``DISTLoss`` clamps each norm to eps instead, which changes the intra-class term where a class
    has tiny probability over the whole batch. The intra-class term (gamma) correlates each class over the batch a
    process sees: under DDP, the per-device batch, not gathered across ranks (as in the authors' code), so the
    same global batch split over more GPUs gives a different loss. Computed in float32 (also under autocast); the
    teacher logits are detached. Cross-entropy with the labels is a separate term of the recipe.

    :param student_module_path: the student's logit module path ('.' for the model output).
    :param student_module_io: 'input' or 'output' of that module.
    :param teacher_module_path: the teacher's logit module path.
    :param teacher_module_io: 'input' or 'output' of that module.
    :param beta: weight of the inter-class relation (>= 0).
    :param gamma: weight of the intra-class relation (>= 0).
    :param tau: temperature (> 0).
    :param eps: added to the product of the norms (>= 0).

    .. code-block:: YAML
       :caption: ExactDISTLoss beside CE, DIST's CIFAR-100 setting.

        dist:
          criterion:
            key: 'ExactDISTLoss'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              beta: 2.0
              gamma: 2.0
              tau: 4.0
          weight: 1.0
    """

    diagnostic_names = ('inter', 'intra')
    """what :meth:`diagnostics` reports: the two relation terms, before tau^2 and the weights"""

    def __init__(self, student_module_path: str = '.', student_module_io: str = 'output',
                 teacher_module_path: str = '.', teacher_module_io: str = 'output', beta: float = 1.0,
                 gamma: float = 1.0, tau: float = 1.0, eps: float = 1e-8) -> None:
        super().__init__(student_module_path, student_module_io, teacher_module_path, teacher_module_io)
        self.beta = number('beta', beta, 'a finite number >= 0', lambda v: v >= 0, 'ExactDISTLoss')
        self.gamma = number('gamma', gamma, 'a finite number >= 0', lambda v: v >= 0, 'ExactDISTLoss')
        self.tau = number('tau', tau, 'a finite number > 0', lambda v: v > 0, 'ExactDISTLoss')
        self.eps = number('eps', eps, 'a finite number >= 0', lambda v: v >= 0, 'ExactDISTLoss')

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, *args, **kwargs) -> Tensor:
        inter, intra = F.dist_terms(*self._logits(student_io_dict, teacher_io_dict), self.tau, self.eps)
        self._last = torch.stack([inter.detach(), intra.detach()])
        return self.tau ** 2 * (self.beta * inter + self.gamma * intra)

    def extra_repr(self) -> str:
        return f'beta={self.beta:g}, gamma={self.gamma:g}, tau={self.tau:g}, eps={self.eps:g}'


@register_method(Method(
    'dkd', 'DKDLoss', short_names={'beta': 'the NCKD weight', 'alpha': 'the TCKD weight', 'temperature': 'T',
                                   'warmup_epochs': 'the epochs of the linear warm-up'},
    separate_ce=True, gamma=Knob('inverse_temperature', 'gamma = 1/temperature'),
    beta=Knob('weight', 'the NCKD weight'), recipe_kwargs=_dkd_kwargs))
@register_mid_level_loss
class DKDLoss(_LogitLoss):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022), as its authors' mdistiller ``dkd_loss`` computes it,
    with their linear warm-up.

    .. math::

       L_{DKD} = w(e) \\left( \\alpha \\, TCKD + \\beta \\, NCKD \\right),
       \\quad w(e) = \\min(e / E_{warmup}, 1)

    TCKD and NCKD are :func:`ttm_torchdistill.functional.dkd_terms` (each times T^2, summed over the batch and
    divided by its size). e counts epochs from 1 as the authors do: 1/20 in the first epoch with
    ``warmup_epochs: 20``. The epoch comes from :meth:`set_epoch`, which the recipe's
    ``train.pre_epoch_process: 'pre_epoch_process_with_frozen_teacher'`` calls at the start of every epoch, under
    ``ttm-distill`` and torchdistill's own example runner alike (and after a resume, with the resumed epoch).
    Cross-entropy with the labels is a separate term of the recipe and is not warmed up. The labels must be class
    indices (not Mixup/CutMix soft labels). Computed in float32 (also under autocast); the teacher is detached.

    :param student_module_path: the student's logit module path ('.' for the model output).
    :param student_module_io: 'input' or 'output' of that module.
    :param teacher_module_path: the teacher's logit module path.
    :param teacher_module_io: 'input' or 'output' of that module.
    :param alpha: weight of TCKD (>= 0).
    :param beta: weight of NCKD (>= 0).
    :param temperature: T (> 0).
    :param warmup_epochs: epochs of the linear warm-up (>= 0; 0 or 1: none).

    .. code-block:: YAML
       :caption: DKDLoss beside CE, the DKD authors' CIFAR-100 setting for resnet32x4 -> resnet8x4.

        dkd:
          criterion:
            key: 'DKDLoss'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              alpha: 1.0
              beta: 8.0
              temperature: 4.0
              warmup_epochs: 20
          weight: 1.0
    """

    diagnostic_names = ('tckd', 'nckd', 'warmup')
    """what :meth:`diagnostics` reports: TCKD and NCKD before the weights, and the warm-up factor w(e)"""
    needs_class_indices = True

    def __init__(self, student_module_path: str = '.', student_module_io: str = 'output',
                 teacher_module_path: str = '.', teacher_module_io: str = 'output', alpha: float = 1.0,
                 beta: float = 8.0, temperature: float = 4.0, warmup_epochs: float = 20) -> None:
        super().__init__(student_module_path, student_module_io, teacher_module_path, teacher_module_io)
        self.alpha = number('alpha', alpha, 'a finite number >= 0', lambda v: v >= 0, 'DKDLoss')
        self.beta = number('beta', beta, 'a finite number >= 0', lambda v: v >= 0, 'DKDLoss')
        self.temperature = number('temperature', temperature, 'a finite number > 0', lambda v: v > 0, 'DKDLoss')
        self.warmup_epochs = number('warmup_epochs', warmup_epochs, 'a finite number >= 0 (0 or 1: no warm-up)',
                                    lambda v: v >= 0, 'DKDLoss')
        self.epoch: int | None = None
        """the current epoch, counted from 1; None until :meth:`set_epoch`"""

    @property
    def needs_epoch(self) -> bool:
        """Whether the loss depends on the epoch (a warm-up longer than one epoch)."""
        return self.warmup_epochs > 1

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``, torchdistill's epoch index (from 0): the warm-up counts it from 1."""
        self.epoch = int(epoch) + 1

    @property
    def warmup(self) -> float:
        """w(e) = min(e / warmup_epochs, 1): 1 without a warm-up; a ValueError when the epoch was never set."""
        if not self.needs_epoch:
            return 1.0
        if self.epoch is None:
            raise ValueError(f'DKDLoss: warmup_epochs={self.warmup_epochs:g} needs the epoch, which nothing set: name '
                             "train.pre_epoch_process: 'pre_epoch_process_with_frozen_teacher' in the recipe")
        return min(self.epoch / self.warmup_epochs, 1.0)

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, targets: Tensor | None = None,
                *args, **kwargs) -> Tensor:
        if targets is None:
            raise ValueError('DKDLoss: needs the labels (targets), which the batch does not carry')
        weight = self.warmup
        tckd, nckd = F.dkd_terms(*self._logits(student_io_dict, teacher_io_dict), targets, self.temperature)
        self._last = torch.stack([tckd.detach(), nckd.detach(), tckd.new_tensor(weight)])
        return weight * (self.alpha * tckd + self.beta * nckd)

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha:g}, beta={self.beta:g}, temperature={self.temperature:g}, '
                f'warmup_epochs={self.warmup_epochs:g}')
