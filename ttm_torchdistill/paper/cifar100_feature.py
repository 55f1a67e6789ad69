"""The CIFAR-100 recipes of the feature-based rivals of Tables 1 and 3: FitNet, AT, VID, RKD and PKT on all 13 pairs.

The paper copies these rows from the CRD benchmark (Tian et al., ICLR 2020), whose code trains every feature method
as ``1 * CE + beta * L_feat`` (no KD term, one stage) with the CIFAR-100 schedule of every recipe; the weights are
each method's ``default_weight`` (:mod:`ttm_torchdistill.methods`), and the recipe's hooks, wrapper and loss
kwargs are its ``recipe`` parts, which `new-recipe --method` writes too. The features are the entries of the
benchmark's feature list that its ``train_student.py`` takes (:mod:`ttm_torchdistill.models.cifar.features`):
entry 2 for FitNet, entries 1..-2 (paired in order, the longer list cut) for AT and VID, the pooled embedding for
RKD and PKT.
"""
from __future__ import annotations

from ..methods import method_named
from ..models.cifar import model_features
from .cifar100 import LABELS, distill_body, run_lines, source, top1
from .cifar100_blocks import CE_TERM, FOOTER, PROTOCOL
from .cifar100_table import ARCHS, FEATURE_METHODS, PAIRS, Pair

__all__ = ['render_all', 'render_feature']

_WHAT = {
    'fitnet': ['# FitNet (Romero et al., ICLR 2015) as the benchmark trains it: the student\'s entry 2 of the',
               '# feature list (its hint layer) goes through the benchmark\'s regressor (a convolution chosen by the',
               '# two maps\' sizes, batch norm, ReLU; Regressor4FitNet, trained with the student); HintLoss is',
               '# the mean squared error to the teacher\'s entry 2.'],
    'at': ['# AT (Zagoruyko & Komodakis, ICLR 2017) as the benchmark computes it: ExactATLoss sums, over the',
           '# entries 1..-2 of the two feature lists paired in order, the mean squared difference of the',
           '# L2-normalised attention maps mean_c(f^2); a larger map is average-pooled to the smaller first.'],
    'vid': ['# VID (Ahn et al., CVPR 2019) as the benchmark computes it: for each pair of entries 1..-2, a regressor',
            '# (three 1x1 convolutions) and a per-channel log-scale, held by Regressors4ExactVID and trained with the',
            '# student, predict the teacher\'s map; ExactVIDLoss sums the Gaussian negative log-likelihoods',
            '# (variance softplus(log_scale) + 1e-5); a larger map is average-pooled to the smaller first.'],
    'rkd': ['# RKD (Park et al., CVPR 2019) on the pooled embeddings, torchdistill\'s RKDLoss: 25 x the distance',
            '# term plus 50 x the angle term (smooth L1), the benchmark\'s values.'],
    'pkt': ['# PKT (Passalis & Tefas, ECCV 2018) on the pooled embeddings, torchdistill\'s PKTLoss (cosine-kernel',
            '# conditional probabilities, eps 1e-7), the benchmark\'s computation.'],
}


def _indented(lines: list[str], spaces: int) -> str:
    return ''.join(' ' * spaces + line + '\n' for line in lines)


def _header(pair: Pair, method: str) -> str:
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    lines = [f'# {LABELS[method]}: {t.key} -> {s.key} on CIFAR-100 (CRD benchmark names: {t.name} -> {s.name}).',
             f'# Cross entropy (weight 1) plus the {LABELS[method]} term with the CRD benchmark\'s weight '
             f'{method_named(method).default_weight:g}, no KD term, one stage:',
             *_WHAT[method],
             f'# Reported student top-1: {top1(pair, method)} ({source(pair, method)}).',
             '#', f'# Teacher: the checkpoint that `ttm-distill train cifar100/ce/{t.key}` writes. To use the CRD',
             '# benchmark\'s released teacher instead (a dict with the state dict under "model"), without editing:',
             f'#   --set models.teacher_model.src_ckpt=/path/to/{t.name}_vanilla/ckpt_epoch_240.pth', '#']
    name = f'cifar100/{method}/{s.key}_from_{t.key}'
    return '\n'.join(lines) + '\n' + PROTOCOL.format(lr=s.lr) + '#\n' + run_lines(name) + FOOTER


def render_feature(pair: Pair, method: str) -> str:
    """The recipe of ``pair`` with the feature method ``method`` (one of ``FEATURE_METHODS``)."""
    declared = method_named(method)
    parts = declared.recipe(model_features(pair.teacher), model_features(pair.student))
    roles = _indented(parts.teacher_lines() + parts.student_lines(), 2)
    term = _indented(parts.term_lines(method, declared.loss_key, declared.default_weight), 8)
    return _header(pair, method) + distill_body(pair, method, roles, CE_TERM + term)


def render_all() -> dict[str, str]:
    """Every feature-method recipe: path relative to ``recipes/`` -> YAML text."""
    return {f'cifar100/{method}/{pair.student}_from_{pair.teacher}.yaml': render_feature(pair, method)
            for method in FEATURE_METHODS for pair in PAIRS}
