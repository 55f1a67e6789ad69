"""ExactATLoss: attention transfer (Zagoruyko & Komodakis, ICLR 2017) as the CRD benchmark computes it, maps of
different sizes pooled; and the method AT declared."""
from __future__ import annotations

from torch import Tensor
from torchdistill.losses.registry import register_mid_level_loss

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
from .checks import number
from .pairs import FeaturePair, PairedFeatureLoss

__all__ = ['ExactATLoss']


def _recipe(teacher: ModelFeatures, student: ModelFeatures) -> FeatureRecipe:
    """The entries 1..-2 of both feature lists, paired in order."""
    t, s = paired_maps(teacher, student)
    return FeatureRecipe(t, s, [*tap_pairs('at_pairs', t, [(tap.path, tap.io) for tap in s]), 'p: 2.0'])


@register_method(Method('at', 'ExactATLoss', short_names={'p': "the exponent p of AT's attention maps mean_c |f|^p"},
                        logit=False, separate_ce=True, recipe=_recipe, default_weight=1000.0,
                        weight_name='beta', beta=FEATURE_WEIGHT,
                        beta_carries=True))
@register_mid_level_loss
class ExactATLoss(PairedFeatureLoss):
    """Attention transfer as the CRD benchmark's ``distiller_zoo/AT.py`` computes it, over the feature pairs
    ``at_pairs`` in their mapping's order:

    .. math::

       L_{AT} = \\sum_k w_k \\operatorname{mean}_{b, j} \\left( a(f_s^k)_{bj} - a(f_t^k)_{bj} \\right)^2,
       \\quad a(f) = \\frac{\\operatorname{vec}(\\operatorname{mean}_c |f|^p)}
       {\\lVert \\operatorname{vec}(\\operatorname{mean}_c |f|^p) \\rVert_2}

    (:func:`ttm_torchdistill.functional.at_terms`). Where a pair's two maps differ in spatial size, the larger is
    adaptive-average-pooled to the smaller's size first, as the benchmark does; torchdistill's ``ATLoss`` (mode
    'code', the same equation) does not pool, so it cannot pair a student's and a teacher's stages of different
    resolutions (e.g. resnet32x4 -> ShuffleNetV1). On maps of equal sizes the two are equal. Maps must be square
    (the benchmark compares heights only and pools to a square). A pair's ``weight`` (default 1, the benchmark's) is
    honoured as torchdistill's ATLoss honours it. Computed in float32 (also under autocast); the teacher's maps are
    detached. :meth:`diagnostics` reports each pair's unweighted term, named by the pair.

    :param at_pairs: ``{pair name: {student: {io, path}, teacher: {io, path}, weight}}``: where the maps are hooked
        ('input' or 'output' of a module of each model), paired in the mapping's order.
    :param p: the exponent p (> 0; the benchmark: 2).

    .. code-block:: YAML
       :caption: ExactATLoss for resnet32x4 -> resnet8x4 (the benchmark's beta 1000, beside CE with weight 1).

        at:
          criterion:
            key: 'ExactATLoss'
            kwargs:
              at_pairs:
                pair1:
                  student: {io: 'output', path: 'layer1'}
                  teacher: {io: 'output', path: 'layer1'}
                pair2:
                  student: {io: 'output', path: 'layer2'}
                  teacher: {io: 'output', path: 'layer2'}
                pair3:
                  student: {io: 'output', path: 'layer3'}
                  teacher: {io: 'output', path: 'layer3'}
              p: 2.0
          weight: 1000.0
    """

    def __init__(self, at_pairs: dict, p: float = 2.0) -> None:
        super().__init__('ExactATLoss: at_pairs', at_pairs)
        self.p = number('p', p, 'a finite number > 0 (the benchmark uses 2)', lambda v: v > 0, 'ExactATLoss')

    def term(self, pair: FeaturePair, student_io_dict: dict, teacher_io_dict: dict) -> Tensor:
        f_s, f_t = pair.student(student_io_dict), pair.teacher(teacher_io_dict)
        try:
            return F.at_terms([f_s], [f_t], self.p)[0]
        except ValueError as exc:
            raise ValueError(f'{pair.owner}: {exc}') from None

    def extra_repr(self) -> str:
        return f'pairs={len(self.pairs)}, p={self.p:g}'

    def __str__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'
