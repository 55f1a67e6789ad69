"""ITRDLoss (Miles et al., BMVC 2022, as the TTM paper's Eq. 24 uses it) and ``Linear4ITRD``, the student wrapper
(torchdistill's auxiliary model wrappers) that holds ITRD's trainable embedding, so the student's optimizer trains it,
checkpoints hold it and DDP syncs it."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchdistill.losses.registry import register_mid_level_loss
from torchdistill.models.registry import register_auxiliary_model_wrapper
from torchdistill.models.util import wrap_if_distributed
from torchdistill.models.wrapper import AuxiliaryModelWrapper

from .. import functional as F
from ..methods import LossHooks, Method, register_method
from .checks import count, number

__all__ = ['ITRDLoss', 'Linear4ITRD']


@register_auxiliary_model_wrapper
class Linear4ITRD(AuxiliaryModelWrapper):
    """The student with ITRD's trainable embedding ``embed`` = ``Linear(in_features, out_features)`` (with bias).

    Used as the student's ``auxiliary_model_wrapper``: the student's optimizer then trains the embedding with
    the student's learning rate and weight decay, and checkpoints of the wrapper hold it. After the student's
    forward, :meth:`secondary_forward` applies the embedding to the flattened output of ``input_module_path``
    (the pooled penultimate feature, e.g. ``'model.avgpool'``); hook ``'embed'``'s output for
    :class:`ITRDLoss`. With several processes the student and the embedding are each wrapped in
    DistributedDataParallel here (as torchdistill's ``Linear4CRD`` does), so the recipe gives the student
    no ``wrapper``.
    """

    def __init__(self, input_module_path: str, in_features: int, out_features: int, device: torch.device,
                 device_ids: list[int] | None, distributed: bool, student_model: nn.Module | None = None,
                 find_unused_parameters: bool | None = None, **kwargs) -> None:
        super().__init__()
        if student_model is None:
            raise ValueError('Linear4ITRD wraps the student: use it under train.student, not train.teacher')
        in_features = count('Linear4ITRD', 'in_features', in_features)
        out_features = count('Linear4ITRD', 'out_features', out_features)
        self.model = wrap_if_distributed(student_model, device, device_ids, distributed, find_unused_parameters)
        self.input_module_path, self.in_features = input_module_path, in_features
        self.embed = wrap_if_distributed(nn.Linear(in_features, out_features), device, device_ids, distributed,
                                         find_unused_parameters)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def secondary_forward(self, io_dict: dict) -> None:
        feature = torch.flatten(io_dict[self.input_module_path]['output'], 1)
        if feature.shape[1] != self.in_features:
            raise ValueError(f'Linear4ITRD: in_features={self.in_features}, but the output of '
                             f'{self.input_module_path!r} has {feature.shape[1]} features')
        self.embed(feature)


@register_method(Method(
    'itrd', 'ITRDLoss', logit=False, weight_name='mu',
    short_names={'beta_corr': 'the weight of L_corr', 'beta_mi': 'the weight of L_mi',
                 'alpha_it': "the order alpha of ITRD's information terms"}))
@register_mid_level_loss
class ITRDLoss(LossHooks):
    """Information theoretic representation distillation (Miles et al., BMVC 2022) as the paper uses it (Eq. 24).

    .. math::

       L_{ITRD} = \\beta_{corr} L_{corr} + \\beta_{mi} L_{mi}

    on the pooled penultimate features z_s (student) and z_t (teacher), with ITRD's trainable embedding
    ``Linear(student_feature_size, teacher_feature_size)``, which :class:`Linear4ITRD` holds and applies;
    the terms are :func:`ttm_torchdistill.functional.itrd_terms`. L_corr always uses the embedded student
    feature, L_mi only when the two feature sizes differ. Computed in float32 (also under autocast); the
    teacher feature is detached. A batch of fewer than 2 samples raises ValueError. A feature dimension that
    is constant over the batch (std 0) makes L_corr NaN, as in the reference code, which adds no eps
    (the runner then stops with its non-finite-loss error). ``last_parts`` holds the last batch's
    ``corr`` and ``mi``, also reported through :meth:`diagnostics`.

    :param student_module_path: the student's pooled-feature module (e.g. ``'model.avgpool'`` inside the wrapper).
    :param student_module_io: 'input' or 'output' of that module (flattened to (B, d_s)).
    :param teacher_module_path: the teacher's pooled-feature module (e.g. ``'avgpool'``).
    :param teacher_module_io: 'input' or 'output' of that module (flattened to (B, d_t)).
    :param student_feature_size: d_s (integer >= 1).
    :param teacher_feature_size: d_t (integer >= 1).
    :param alpha_it: order alpha of the correlation term (> 0; the paper: 1.01 same architecture, 1.5 otherwise).
    :param beta_corr: weight of L_corr (>= 0).
    :param beta_mi: weight of L_mi (>= 0; a zero weight leaves the term out).
    :param student_embed_module_path: the student's module whose output is the embedded feature (``'embed'``
        of :class:`Linear4ITRD`).

    .. code-block:: YAML
       :caption: ITRDLoss for resnet32x4 -> resnet8x4 (the student's Linear4ITRD hooks 'model.avgpool' and 'embed').

        itrd:
          criterion:
            key: 'ITRDLoss'
            kwargs:
              student_module_path: 'model.avgpool'
              student_module_io: 'output'
              teacher_module_path: 'avgpool'
              teacher_module_io: 'output'
              student_feature_size: 256
              teacher_feature_size: 256
              beta_corr: 2.0
              beta_mi: 1.0
              alpha_it: 1.01
          weight: 1.0
    """

    diagnostic_names = ('corr', 'mi')
    """what :meth:`diagnostics` reports (the runner logs them per epoch)"""
    min_batch_size = 2
    """the batch standard deviation needs two samples; the runner refuses a loader whose last batch holds one"""

    def __init__(self, student_module_path: str, student_module_io: str, teacher_module_path: str,
                 teacher_module_io: str, student_feature_size: int, teacher_feature_size: int, alpha_it: float,
                 beta_corr: float = 2.0, beta_mi: float = 1.0, student_embed_module_path: str = 'embed') -> None:
        super().__init__()
        self.student_module_path = student_module_path
        self.student_module_io = student_module_io
        self.teacher_module_path = teacher_module_path
        self.teacher_module_io = teacher_module_io
        self.student_embed_module_path = student_embed_module_path
        self.student_feature_size = count('ITRDLoss', 'student_feature_size', student_feature_size)
        self.teacher_feature_size = count('ITRDLoss', 'teacher_feature_size', teacher_feature_size)
        self.alpha_it = number('alpha_it', alpha_it, 'a finite number > 0 (the paper uses 1.01 and 1.5)',
                               lambda v: v > 0, 'ITRDLoss')
        self.beta_corr = number('beta_corr', beta_corr, 'a finite number >= 0', lambda v: v >= 0, 'ITRDLoss')
        self.beta_mi = number('beta_mi', beta_mi, 'a finite number >= 0', lambda v: v >= 0, 'ITRDLoss')
        self._last: tuple[Tensor, Tensor] | None = None

    def _feature(self, io_dict: dict, path: str, io: str, side: str, size: int) -> Tensor:
        feature = torch.flatten(io_dict[path][io], 1)
        if feature.shape[1] != size:
            raise ValueError(f'ITRDLoss: {side}_feature_size={size}, but the {side}\'s {path!r} ({io}) has '
                             f'{feature.shape[1]} features')
        return feature

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, *args, **kwargs) -> Tensor:
        z_s = self._feature(student_io_dict, self.student_module_path, self.student_module_io, 'student',
                            self.student_feature_size)
        z_t = self._feature(teacher_io_dict, self.teacher_module_path, self.teacher_module_io, 'teacher',
                            self.teacher_feature_size)
        f_s = student_io_dict[self.student_embed_module_path]['output']
        if len(z_s) < 2:
            raise ValueError(f'ITRDLoss: batch size {len(z_s)} is too small: the batch standard deviation needs at '
                             'least 2 samples')
        if tuple(f_s.shape) != (len(z_s), self.teacher_feature_size):
            raise ValueError(f'ITRDLoss: the embedded student feature {self.student_embed_module_path!r} has shape '
                             f'{tuple(f_s.shape)}, expected ({len(z_s)}, {self.teacher_feature_size}) '
                             '(batch, teacher_feature_size)')

        def applied(z: Tensor) -> Tensor:
            # Linear4ITRD already embedded this very feature in its secondary forward (so that DDP sees the
            # embedding's forward); its hooked output is the embedding of z_s.
            if z is not z_s:
                raise RuntimeError('ITRDLoss: the hooked embedding only applies to the student feature')
            return f_s

        l_corr, l_mi = F.itrd_terms(z_s, z_t, applied, self.alpha_it)
        self._last = (l_corr.detach(), l_mi.detach())
        loss = self.beta_corr * l_corr
        return loss + self.beta_mi * l_mi if self.beta_mi else loss

    def diagnostics(self) -> Tensor | None:
        """The last forward's L_corr and L_mi (unweighted), in :attr:`diagnostic_names` order, on their device; None
        before the first forward."""
        return None if self._last is None else torch.stack(self._last)

    def extra_repr(self) -> str:
        return (f'student_feature_size={self.student_feature_size}, teacher_feature_size={self.teacher_feature_size}, '
                f'alpha_it={self.alpha_it:g}, beta_corr={self.beta_corr:g}, beta_mi={self.beta_mi:g}')

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'
