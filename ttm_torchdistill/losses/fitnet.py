"""FitNet (Romero et al., ICLR 2015) as the CRD benchmark trains it: ``Regressor4FitNet``, the student wrapper holding
the benchmark's convolutional regressor, and ``HintLoss``; and the method FitNet declared."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchdistill.losses.registry import register_mid_level_loss
from torchdistill.models.registry import register_auxiliary_model_wrapper
from torchdistill.models.util import wrap_if_distributed
from torchdistill.models.wrapper import AuxiliaryModelWrapper

from .. import functional as F
from ..methods import FEATURE_WEIGHT, FeatureRecipe, LossHooks, Method, ModelFeatures, register_method
from .checks import count

__all__ = ['HintLoss', 'Regressor4FitNet', 'hint_regressor']

_IO = ('input', 'output')


def hint_regressor(in_channels: int, out_channels: int, in_size: int, out_size: int) -> nn.Sequential:
    """The benchmark's ``ConvReg`` from a (C_in, in_size, in_size) student map to a (C_out, out_size, out_size)
    teacher map: ``conv`` (by the sizes, checked in this order: in = 2 out: Conv2d(3, stride 2, padding 1);
    2 in = out: ConvTranspose2d(4, stride 2, padding 1); in >= out: Conv2d(kernel 1 + in - out); else a ValueError),
    then ``bn`` = BatchNorm2d(C_out) and ``relu``; the convolutions have biases."""
    if in_size == 2 * out_size:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
    elif 2 * in_size == out_size:
        conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
    elif in_size >= out_size:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=1 + in_size - out_size)
    else:
        raise ValueError(f'Regressor4FitNet: in_size={in_size} and out_size={out_size}: the benchmark\'s regressor '
                         'needs in_size = 2 out_size, 2 in_size = out_size or in_size >= out_size')
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels), relu=nn.ReLU(inplace=True)))


@register_auxiliary_model_wrapper
class Regressor4FitNet(AuxiliaryModelWrapper):
    """The student with FitNet's trainable regressor ``regressor`` (:func:`hint_regressor`: the CRD benchmark's
    ``ConvReg``, conv + BatchNorm + ReLU), from the student's hint map (B, in_channels, in_size, in_size) to the
    teacher's (B, out_channels, out_size, out_size).

    Used as the student's ``auxiliary_model_wrapper``: the student's optimizer then trains the regressor with the
    student's learning rate and weight decay (the benchmark's ``trainable_list``), checkpoints of the wrapper hold
    it, and with several processes the student and the regressor are each wrapped in DistributedDataParallel here,
    so the recipe gives the student no ``wrapper``. After the student's forward, :meth:`secondary_forward` applies
    the regressor to ``input_module_io`` of ``input_module_path`` (e.g. 'model.layer2'); hook ``'regressor'``'s
    output for :class:`HintLoss`.

    :param input_module_path: the student's hint module inside the wrapper ('model.' + its path in the student).
    :param in_channels: the channels of the student's hint map (integer >= 1).
    :param out_channels: the channels of the teacher's hint map (integer >= 1).
    :param in_size: the spatial size of the student's hint map at the recipe's input size (integer >= 1).
    :param out_size: the spatial size of the teacher's hint map (integer >= 1).
    :param input_module_io: 'output' (default) or 'input' of that module.

    .. code-block:: YAML
       :caption: The student of resnet32x4 -> ShuffleNetV1 (hint: the second stage, 480 x 8 x 8 -> 128 x 16 x 16).

        auxiliary_model_wrapper:
          key: 'Regressor4FitNet'
          kwargs:
            input_module_path: 'model.layer2'
            in_channels: 480
            out_channels: 128
            in_size: 8
            out_size: 16
        forward_hook:
          input: []
          output: ['model.layer2', 'regressor']
        wrapper:
    """

    def __init__(self, input_module_path: str, in_channels: int, out_channels: int, in_size: int, out_size: int,
                 device: torch.device, device_ids: list[int] | None, distributed: bool,
                 student_model: nn.Module | None = None, input_module_io: str = 'output',
                 find_unused_parameters: bool | None = None, **kwargs) -> None:
        super().__init__()
        if student_model is None:
            raise ValueError('Regressor4FitNet wraps the student: use it under train.student, not train.teacher')
        if input_module_io not in _IO:
            raise ValueError(f"Regressor4FitNet: input_module_io={input_module_io!r} is invalid: accepted values are "
                             "'input' and 'output'")
        in_channels, out_channels, in_size, out_size = (count('Regressor4FitNet', name, value) for name, value in (
            ('in_channels', in_channels), ('out_channels', out_channels), ('in_size', in_size),
            ('out_size', out_size)))
        regressor = hint_regressor(in_channels, out_channels, in_size, out_size)
        self.shape = (in_channels, in_size, in_size)
        """what the student's hint map must be, batch aside"""
        self.model = wrap_if_distributed(student_model, device, device_ids, distributed, find_unused_parameters)
        self.input_module_path, self.input_module_io = input_module_path, input_module_io
        self.regressor = wrap_if_distributed(regressor, device, device_ids, distributed, find_unused_parameters)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def secondary_forward(self, io_dict: dict) -> None:
        feature = io_dict[self.input_module_path][self.input_module_io]
        if feature.dim() != 4 or tuple(feature.shape[1:]) != self.shape:
            raise ValueError(f'Regressor4FitNet: expected the {self.input_module_io} of {self.input_module_path!r} '
                             f'of shape (B, in_channels, in_size, in_size) = (B, {", ".join(map(str, self.shape))}), '
                             f'got {tuple(feature.shape)}')
        self.regressor(feature)


def _recipe(teacher: ModelFeatures, student: ModelFeatures) -> FeatureRecipe:
    """Entry 2 of each feature list (the benchmark's hint layer), the student's through :class:`Regressor4FitNet`."""
    t, s = teacher.entries[2], student.entries[2]
    wrapper = ["key: 'Regressor4FitNet'", 'kwargs:', f"  input_module_path: 'model.{s.path}'",
               f"  input_module_io: '{s.io}'", f'  in_channels: {s.channels}', f'  out_channels: {t.channels}',
               f'  in_size: {s.size}', f'  out_size: {t.size}']
    kwargs = ["student_module_path: 'regressor'", "student_module_io: 'output'", f"teacher_module_path: '{t.path}'",
              f"teacher_module_io: '{t.io}'"]
    return FeatureRecipe((t,), (s,), kwargs, wrapper, ('regressor',))


@register_method(Method('fitnet', 'HintLoss', logit=False, separate_ce=True, recipe=_recipe, default_weight=100.0,
                        weight_name='beta', beta_carries=True,
                        beta=FEATURE_WEIGHT))
@register_mid_level_loss
class HintLoss(LossHooks):
    """FitNet's hint loss as the CRD benchmark's ``distiller_zoo/FitNet.py`` computes it: the mean squared error over
    all elements between the regressed student hint map (:class:`Regressor4FitNet`'s ``regressor`` output) and the
    teacher's hint map,

    .. math:: L_{hint} = \\operatorname{mean} (r(f_s) - f_t)^2

    (:func:`ttm_torchdistill.functional.hint_loss`; the maps must have one shape). Computed in float32 (also under
    autocast); the teacher's map is detached.

    :param student_module_path: the student's regressed map ('regressor', :class:`Regressor4FitNet`'s).
    :param student_module_io: 'output' of it.
    :param teacher_module_path: the teacher's hint module (e.g. 'layer2'; required).
    :param teacher_module_io: 'output' or 'input' of that module.

    .. code-block:: YAML
       :caption: HintLoss for resnet32x4 -> ShuffleNetV1 (the benchmark's beta 100, beside CE with weight 1).

        fitnet:
          criterion:
            key: 'HintLoss'
            kwargs:
              student_module_path: 'regressor'
              student_module_io: 'output'
              teacher_module_path: 'layer2'
              teacher_module_io: 'output'
          weight: 100.0
    """

    def __init__(self, student_module_path: str = 'regressor', student_module_io: str = 'output', *,
                 teacher_module_path: str, teacher_module_io: str = 'output') -> None:
        super().__init__()
        for name, io in (('student_module_io', student_module_io), ('teacher_module_io', teacher_module_io)):
            if io not in _IO:
                raise ValueError(f"HintLoss: {name}={io!r} is invalid: accepted values are 'input' and 'output'")
        self.student_module_path, self.student_module_io = student_module_path, student_module_io
        self.teacher_module_path, self.teacher_module_io = teacher_module_path, teacher_module_io

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, *args, **kwargs) -> Tensor:
        regressed = student_io_dict[self.student_module_path][self.student_module_io]
        hint = teacher_io_dict[self.teacher_module_path][self.teacher_module_io]
        if regressed.shape != hint.shape:
            raise ValueError(f"HintLoss: the student's {self.student_module_path!r} ({self.student_module_io}) has "
                             f"shape {tuple(regressed.shape)}, the teacher's {self.teacher_module_path!r} "
                             f'({self.teacher_module_io}) {tuple(hint.shape)}: set the regressor\'s out_channels and '
                             "out_size to the teacher's map")
        return F.hint_loss(regressed, hint)

    def extra_repr(self) -> str:
        return f'student={self.student_module_path!r}, teacher={self.teacher_module_path!r}'

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'
