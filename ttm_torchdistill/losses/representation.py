"""The feature-based rivals whose losses are torchdistill's own, declared as methods (:mod:`ttm_torchdistill.methods`):
CRD (torchdistill's ``CRDLoss``) and ReviewKD (its ``HierarchicalContextLoss``).

CRD (Tian et al., ICLR 2020) contrasts L2-normalised linear embeddings of the pooled features (Linear4CRD) with
memory banks that hold each model's embedding of every training sample, updated with momentum. For the student's
embedding s of a sample, t^+ the teacher bank's entry of the same sample and t^-_1..t^-_N its entries of N samples of
other classes (drawn by CRDDatasetWrapper), M training samples and Z a normaliser fixed on the first batch,

.. math::

   L_{CRD} = -\\log h(s, t^+) - \\sum_{j=1}^{N} \\log\\left(1 - h(s, t^-_j)\\right)
             \\; + \\; \\text{(the same with the models' roles swapped)},
   \\quad h(s, t) = \\frac{e^{s \\cdot t / \\tau} / Z}{e^{s \\cdot t / \\tau} / Z + N / M}

(tau the NCE temperature; averaged over the batch; weight 0.8 beside the cross entropy). Knowledge review (Chen et
al., CVPR 2021) fuses the student's levels deepest first (Student4KnowledgeReview) and compares each fused level F_s
with the teacher's F_t:

.. math::

   L_{HCL} = \\frac{\\mathrm{MSE}(F_s, F_t) + \\sum_k 2^{-k} \\mathrm{MSE}(P_{s_k}(F_s), P_{s_k}(F_t))}
                  {1 + \\sum_k 2^{-k}}

(P_s: adaptive average pooling to s x s, for each s of 4, 2, 1 below the level's size; k counts them). The recipes
``recipes/ilsvrc2012/crd/*``, ``recipes/cifar100/crd/*`` and ``recipes/ilsvrc2012/reviewkd/*`` use them.
`sweep --grid` short names: CRD's term weight is ``mu`` (Eq. 23), its NCE temperature and memory momentum are
``nce_temperature`` and ``nce_momentum`` (``temperature`` is KD's, DKD's and TTM's in recipes that hold both terms,
WTTM + CRD). Knowledge review has none: each of its five levels is a term with a weight of its own (sweep them by
their full keys).
"""
from __future__ import annotations

from ..methods import Method, register_method

__all__: list[str] = []

register_method(Method('crd', 'CRDLoss', logit=False, weight_name='mu', aliases={  # torchdistill's CRDLoss
    'nce_temperature': 'temperature', 'nce_momentum': 'momentum'}))(None)
register_method(Method('reviewkd', 'HierarchicalContextLoss', logit=False))(None)  # torchdistill's
