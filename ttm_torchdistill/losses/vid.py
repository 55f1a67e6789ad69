"""VID (Ahn et al., CVPR 2019) as the CRD benchmark trains it: ``Regressors4ExactVID``, the student wrapper holding
VID's trainable regressors and variances, and ``ExactVIDLoss``; and the method VID declared."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf
from torchdistill.losses.registry import register_mid_level_loss
from torchdistill.models.registry import register_auxiliary_model_wrapper
from torchdistill.models.util import wrap_if_distributed
from torchdistill.models.wrapper import AuxiliaryModelWrapper

from .. import functional as F
from ..methods import (
    FEATURE_WEIGHT,
    FeatureRecipe,
    Method,
    ModelFeatures,
    paired_maps,
    register_method,
    tap_pairs,
)
from .checks import count, number
from .pairs import FeaturePair, PairedFeatureLoss

__all__ = ['ExactVIDLoss', 'Regressors4ExactVID', 'VIDRegressor']

_IO = ('input', 'output')
_KEYS = {'input_module_path', 'input_module_io', 'in_channels', 'mid_channels', 'out_channels', 'out_size'}


class VIDRegressor(nn.Module):
    """One pair's VID regressor: ``regressor`` = three bias-free 1x1 convolutions, in -> mid -> mid -> out, with a
    ReLU after the first two (the benchmark's order), and ``log_scale`` (out,), initialised to
    :func:`ttm_torchdistill.functional.vid_log_scale` (init_pred_var, eps). Its forward takes the student's map,
    adaptive-average-pools it to (out_size, out_size) first when it is larger (as the benchmark pools the student's
    map before its regressor), and returns (mu, log_scale): the log_scale as a view, an output of the forward that
    DistributedDataParallel sees (the parameter itself, a leaf, would be marked ready twice under
    ``find_unused_parameters``)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, out_size: int,
                 init_pred_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, kernel_size=1, bias=False))
        self.log_scale = nn.Parameter(torch.full((out_channels,), F.vid_log_scale(init_pred_var, eps)))
        self.out_size = out_size

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        if feature.shape[2] > self.out_size:
            feature = nnf.adaptive_avg_pool2d(feature, (self.out_size, self.out_size))
        return self.regressor(feature), self.log_scale.view(-1)


@register_auxiliary_model_wrapper
class Regressors4ExactVID(AuxiliaryModelWrapper):
    """The student with VID's trainable parts, one :class:`VIDRegressor` per feature pair, ``regressors.0``,
    ``regressors.1``, ... in the order of ``regressors``.

    VID's regressors and variances (``log_scale``) live here, in the student wrapper, not in the loss: the student's
    optimizer then trains them with the student's learning rate and weight decay (as the benchmark's
    ``trainable_list`` holds its VIDLoss modules), under ``ttm-distill`` and torchdistill's own example runner
    alike; checkpoints of the wrapper hold them; and with several processes the student and each regressor are
    wrapped in DistributedDataParallel here (the recipe gives the student no ``wrapper``). After the student's
    forward, :meth:`secondary_forward` applies each regressor to its student map; hook ``'regressors.K'``'s output,
    the pair (mu, log_scale), for :class:`ExactVIDLoss`.

    :param regressors: one entry per pair: ``input_module_path`` (the student's map inside the wrapper, 'model.' +
        its path), ``input_module_io`` ('output', default, or 'input'), ``in_channels`` (the student map's),
        ``mid_channels`` (the benchmark: the teacher map's channels), ``out_channels`` (the teacher map's),
        ``out_size`` (the teacher map's spatial size at the recipe's input size); integers >= 1.
    :param init_pred_var: the initial variance (> 0; the benchmark: 5).
    :param eps: the variance's floor, used here for the initial log_scale (> 0; the benchmark: 1e-5; give
        :class:`ExactVIDLoss` the same).

    .. code-block:: YAML
       :caption: The student of resnet32x4 -> resnet8x4 (three pairs: the stages' outputs).

        auxiliary_model_wrapper:
          key: 'Regressors4ExactVID'
          kwargs:
            regressors:
              - {input_module_path: 'model.layer1', in_channels: 64, mid_channels: 64, out_channels: 64, out_size: 32}
              - {input_module_path: 'model.layer2', in_channels: 128, mid_channels: 128, out_channels: 128,
                 out_size: 16}
              - {input_module_path: 'model.layer3', in_channels: 256, mid_channels: 256, out_channels: 256,
                 out_size: 8}
            init_pred_var: 5.0
            eps: 0.00001
        forward_hook:
          input: []
          output: ['model.layer1', 'model.layer2', 'model.layer3', 'regressors.0', 'regressors.1', 'regressors.2']
        wrapper:
    """

    def __init__(self, regressors: list[dict], device: torch.device, device_ids: list[int] | None, distributed: bool,
                 student_model: nn.Module | None = None, init_pred_var: float = 5.0, eps: float = 1e-5,
                 find_unused_parameters: bool | None = None, **kwargs) -> None:
        super().__init__()
        if student_model is None:
            raise ValueError('Regressors4ExactVID wraps the student: use it under train.student, not train.teacher')
        if not isinstance(regressors, list) or not regressors:
            raise ValueError(f'Regressors4ExactVID: regressors={regressors!r} is invalid: accepted values are a '
                             f'non-empty list of {{{", ".join(sorted(_KEYS))}}}')
        init_pred_var = number('init_pred_var', init_pred_var, 'a finite number > 0', lambda v: v > 0,
                               'Regressors4ExactVID')
        eps = number('eps', eps, 'a finite number > 0', lambda v: v > 0, 'Regressors4ExactVID')
        self.model = wrap_if_distributed(student_model, device, device_ids, distributed, find_unused_parameters)
        self.inputs: list[tuple[str, str, int]] = []
        """(module path, io, in_channels) of each regressor's student map"""
        modules = []
        for index, entry in enumerate(regressors):
            path, io, sizes = self._entry(index, entry)
            self.inputs.append((path, io, sizes[0]))
            modules.append(wrap_if_distributed(VIDRegressor(*sizes, init_pred_var, eps), device, device_ids,
                                               distributed, find_unused_parameters))
        self.regressors = nn.ModuleList(modules)

    @staticmethod
    def _entry(index: int, entry: object) -> tuple[str, str, tuple[int, int, int, int]]:
        owner = f'Regressors4ExactVID: regressors[{index}]'
        if not isinstance(entry, dict) or not _KEYS - {'input_module_io'} <= set(entry) or not set(entry) <= _KEYS:
            raise ValueError(f'{owner}={entry!r} is invalid: accepted values are a mapping of '
                             f'{", ".join(sorted(_KEYS))} (input_module_io optional)')
        path, io = entry['input_module_path'], entry.get('input_module_io', 'output')
        if not isinstance(path, str) or not path.strip() or io not in _IO:
            raise ValueError(f"{owner}: input_module_path={path!r}, input_module_io={io!r} are invalid: accepted "
                             "values are a module path and 'input' or 'output'")
        sizes = tuple(count(owner, key, entry[key]) for key in ('in_channels', 'mid_channels', 'out_channels',
                                                                 'out_size'))
        return path, io, sizes

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def secondary_forward(self, io_dict: dict) -> None:
        for index, ((path, io, channels), regressor) in enumerate(zip(self.inputs, self.regressors, strict=True)):
            feature = io_dict[path][io]
            if feature.dim() != 4 or feature.shape[1] != channels or feature.shape[2] != feature.shape[3]:
                raise ValueError(f'Regressors4ExactVID: regressors[{index}]: expected the {io} of {path!r} of shape '
                                 f'(B, {channels}, H, H) (in_channels={channels}, square), got {tuple(feature.shape)}')
            regressor(feature)


def _recipe(teacher: ModelFeatures, student: ModelFeatures) -> FeatureRecipe:
    """The entries 1..-2 of both feature lists, paired in order: for each pair a regressor of
    :class:`Regressors4ExactVID` (the benchmark's ``VIDLoss(s, t, t)``: middle channels = the teacher's)."""
    t, s = paired_maps(teacher, student)
    regressors = [line for tt, st in zip(t, s, strict=True) for line in (
        f"  - input_module_path: 'model.{st.path}'", f"    input_module_io: '{st.io}'",
        f'    in_channels: {st.channels}', f'    mid_channels: {tt.channels}', f'    out_channels: {tt.channels}',
        f'    out_size: {tt.size}')]
    wrapper = ["key: 'Regressors4ExactVID'", 'kwargs:', '  regressors:', *regressors, '  init_pred_var: 5.0',
               '  eps: 0.00001']
    outputs = tuple(f'regressors.{i}' for i in range(len(t)))
    kwargs = [*tap_pairs('feature_pairs', t, [(o, 'output') for o in outputs]), 'eps: 0.00001']
    return FeatureRecipe(t, s, kwargs, wrapper, outputs)


@register_method(Method('vid', 'ExactVIDLoss', logit=False, separate_ce=True, recipe=_recipe, default_weight=1.0,
                        weight_name='beta', beta=FEATURE_WEIGHT,
                        beta_carries=True))
@register_mid_level_loss
class ExactVIDLoss(PairedFeatureLoss):
    """Variational information distillation as the CRD benchmark's ``distiller_zoo/VID.py`` computes it: over the
    feature pairs in their mapping's order,

    .. math::

       L_{VID} = \\sum_k w_k \\operatorname{mean}_{b,c,h,w} \\frac{1}{2} \\left(
       \\frac{(\\mu^k_{bchw} - t^k_{bchw})^2}{v^k_c} + \\log v^k_c \\right),
       \\quad v^k = \\log(1 + e^{s^k}) + eps

    (:func:`ttm_torchdistill.functional.vid_loss`), with (mu^k, s^k) the output of the student wrapper's regressor
    ``regressors.K`` (:class:`Regressors4ExactVID`) and t^k the teacher's map. Maps of different sizes are matched as
    the benchmark matches them: the regressor pools the student's map when it is larger, and this loss pools the
    teacher's map to mu's size when it is larger. torchdistill's ``VariationalDistributor4VID`` and ``VIDLoss`` (the
    same equation; their variance also softplus + eps) pool neither, so they cannot pair stages of different
    resolutions; on maps of equal sizes the two are equal. The benchmark sums its per-pair losses with weight 1 (a
    pair's ``weight``, default 1, is honoured). This loss has no parameters of its own: the trainable regressors and
    variances are the student wrapper's. Computed in float32 (also under autocast); the teacher's maps are detached.
    :meth:`diagnostics` reports each pair's unweighted term, named by the pair.

    :param feature_pairs: ``{pair name: {student: {io: 'output', path: 'regressors.K'}, teacher: {io, path},
        weight}}``.
    :param eps: the variance's floor (> 0; the benchmark: 1e-5, as the wrapper's).

    .. code-block:: YAML
       :caption: ExactVIDLoss for resnet32x4 -> resnet8x4 (the benchmark's beta 1, beside CE with weight 1).

        vid:
          criterion:
            key: 'ExactVIDLoss'
            kwargs:
              feature_pairs:
                pair1:
                  student: {io: 'output', path: 'regressors.0'}
                  teacher: {io: 'output', path: 'layer1'}
                pair2:
                  student: {io: 'output', path: 'regressors.1'}
                  teacher: {io: 'output', path: 'layer2'}
                pair3:
                  student: {io: 'output', path: 'regressors.2'}
                  teacher: {io: 'output', path: 'layer3'}
              eps: 0.00001
          weight: 1.0
    """

    def __init__(self, feature_pairs: dict, eps: float = 1e-5) -> None:
        super().__init__('ExactVIDLoss: feature_pairs', feature_pairs)
        self.eps = number('eps', eps, 'a finite number > 0 (the benchmark uses 1e-5)', lambda v: v > 0, 'ExactVIDLoss')

    def term(self, pair: FeaturePair, student_io_dict: dict, teacher_io_dict: dict) -> Tensor:
        prediction, target = pair.student(student_io_dict), pair.teacher(teacher_io_dict)
        if not isinstance(prediction, (tuple, list)) or len(prediction) != 2:
            raise ValueError(f"{pair.owner}: the student's {pair.student_path!r} ({pair.student_io}) is not a "
                             "regressor's (mu, log_scale): hook a Regressors4ExactVID regressor ('regressors.K')")
        mean, log_scale = prediction
        if target.dim() == 4 and mean.dim() == 4 and target.shape[2] == target.shape[3]:
            if target.shape[2] > mean.shape[2]:
                target = nnf.adaptive_avg_pool2d(target, tuple(mean.shape[2:]))
            elif target.shape[2] < mean.shape[2]:
                raise ValueError(f"{pair.owner}: the prediction {tuple(mean.shape)} is larger than the teacher's map "
                                 f'{tuple(target.shape)}: set the regressor\'s out_size to the teacher map\'s size')
        try:
            return F.vid_loss(mean, log_scale, target, self.eps)
        except ValueError as exc:
            raise ValueError(f'{pair.owner}: {exc}') from None

    def extra_repr(self) -> str:
        return f'pairs={len(self.pairs)}, eps={self.eps:g}'

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'
