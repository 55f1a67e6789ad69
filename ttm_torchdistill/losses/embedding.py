"""The CRD benchmark's methods on the pooled embedding, RKD and PKT, declared on torchdistill's own ``RKDLoss`` and
``PKTLoss``, which compute exactly what the benchmark's ``distiller_zoo/RKD.py`` and ``PKT.py`` compute (float32, bit
for bit: tests/test_feature_losses.py; the math is also :func:`ttm_torchdistill.functional.rkd_loss` and
:func:`~ttm_torchdistill.functional.pkt_loss`).

RKD (Park et al., CVPR 2019): torchdistill's ``RKDLoss`` flattens the ``output`` of ``student_output_path`` and
``teacher_output_path`` (hook the pooling module whose output is the embedding, e.g. 'avgpool'); the benchmark's
weights are ``dist_factor: 25.0``, ``angle_factor: 50.0``, ``reduction: 'mean'``, the term's weight 1:

.. code-block:: YAML

    rkd:
      criterion:
        key: 'RKDLoss'
        kwargs:
          student_output_path: 'avgpool'
          teacher_output_path: 'avgpool'
          dist_factor: 25.0
          angle_factor: 50.0
          reduction: 'mean'
      weight: 1.0

PKT (Passalis & Tefas, ECCV 2018): torchdistill's ``PKTLoss`` reads the module's input or output as it is, (B, d):
hook the classifier's ``input`` (the flattened pooled embedding); the benchmark's eps is 1e-7 and its weight 30000:

.. code-block:: YAML

    pkt:
      criterion:
        key: 'PKTLoss'
        kwargs:
          student_module_path: 'fc'
          student_module_io: 'input'
          teacher_module_path: 'fc'
          teacher_module_io: 'input'
          eps: 0.0000001
      weight: 30000.0

Both compute in the dtype of their inputs (under autocast, the matrix products run in half precision), whereas the
functional forms compute in float32.
"""
from __future__ import annotations

from ..methods import FEATURE_WEIGHT, FeatureRecipe, Method, ModelFeatures, register_method

__all__: list[str] = []



def _rkd(teacher: ModelFeatures, student: ModelFeatures) -> FeatureRecipe:
    """The pooled maps (RKDLoss flattens them: the embeddings)."""
    t, s = teacher.pooled, student.pooled
    return FeatureRecipe((t,), (s,), [f"student_output_path: '{s.path}'", f"teacher_output_path: '{t.path}'",
                                      'dist_factor: 25.0', 'angle_factor: 50.0', "reduction: 'mean'"])


def _pkt(teacher: ModelFeatures, student: ModelFeatures) -> FeatureRecipe:
    """The last entries of the feature lists (the flattened embeddings)."""
    t, s = teacher.entries[-1], student.entries[-1]
    return FeatureRecipe((t,), (s,), [f"student_module_path: '{s.path}'", f"student_module_io: '{s.io}'",
                                      f"teacher_module_path: '{t.path}'", f"teacher_module_io: '{t.io}'",
                                      'eps: 0.0000001'])


register_method(Method('rkd', 'RKDLoss', short_names={'dist_factor': "the weight of RKD's distance term",
                                                      'angle_factor': "the weight of RKD's angle term"},
                       logit=False, separate_ce=True, recipe=_rkd, default_weight=1.0,
                       weight_name='beta', beta=FEATURE_WEIGHT,
                       beta_carries=True))(None)
register_method(Method('pkt', 'PKTLoss', logit=False, separate_ce=True, recipe=_pkt, default_weight=30000.0,
                       weight_name='beta', beta=FEATURE_WEIGHT,
                       beta_carries=True))(None)
