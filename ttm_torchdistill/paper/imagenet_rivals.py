"""The paper's feature-based ImageNet rivals (Table 5: CRD, ReviewKD, ITRD) as a table, and their recipes.

Zheng & Yang (ICLR 2024) list CRD, ReviewKD and ITRD beside WTTM on ResNet-34 -> ResNet-18 and ResNet-50 ->
MobileNet v1, with numbers copied from earlier papers. Each recipe here keeps the pair's WTTM recipe (data, teacher,
optimizer, schedule, epochs: :func:`ttm_torchdistill.paper.imagenet.render_recipe`) and uses the method's own loss
weights from its ImageNet setting: torchdistill's CRD (CRDDatasetWrapper, Linear4CRD, CRDLoss) and knowledge review
(Student4KnowledgeReview, HierarchicalContextLoss) modules, and this package's ITRDLoss with Linear4ITRD. Every
such file under ``recipes/ilsvrc2012/`` is rendered from :data:`EXPERIMENTS`; edit the table, then run
``python -m ttm_torchdistill.paper`` (``--check`` only compares).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from .cifar100_blocks import CE_TERM, CRD_TERM, CRD_WRAPPER, ITRD_ROLES, ITRD_TERM, crd_roles
from .imagenet import NETS, Experiment, render_recipe

__all__ = ['EXPERIMENTS', 'IMAGENET_TRAIN', 'LEVELS', 'ORIGINS', 'PARAMS', 'REVIEW_SIZES', 'Levels', 'render',
           'render_all']

IMAGENET_TRAIN = 1_281_167
"""the ImageNet training images: CRD's memory bank holds one embedding of each, per model"""

REVIEW_SIZES = (1, 7, 14, 28, 56)
"""the spatial size of each level knowledge review fuses, deepest first, at 224 px inputs: 1 (pooled), then the
stage outputs at strides 32, 16, 8, 4"""

PARAMS = {'crd': (), 'reviewkd': ('weight', 'mid_channels'), 'itrd': ('beta_corr', 'beta_mi', 'alpha_it')}
"""the names of an Experiment's ``params`` per method, in order (CRD's settings are CRD's only ones:
:data:`~ttm_torchdistill.paper.cifar100_blocks.CRD_TERM`)"""


@dataclass(frozen=True)
class Levels:
    """A network's features for the feature-based rivals: the module paths of its four stage outputs and its pooled
    feature (knowledge review's five levels, shallowest first) and their channels; the last is the pooled
    penultimate feature that CRD and ITRD embed."""

    paths: tuple[str, ...]
    channels: tuple[int, ...]

    @property
    def pooled(self) -> tuple[str, int]:
        return self.paths[-1], self.channels[-1]


_RESNET_STAGES = ('layer1', 'layer2', 'layer3', 'layer4', 'avgpool')
LEVELS = {
    'resnet18': Levels(_RESNET_STAGES, (64, 128, 256, 512, 512)),
    'resnet34': Levels(_RESNET_STAGES, (64, 128, 256, 512, 512)),
    'resnet50': Levels(_RESNET_STAGES, (256, 512, 1024, 2048, 2048)),
    # the last block of each resolution (strides 4, 8, 16, 32), as ReviewKD's MobileNet takes them
    'mobilenet_v1': Levels(('features.3', 'features.5', 'features.11', 'features.13', 'avgpool'),
                           (128, 256, 512, 1024, 1024)),
}

EXPERIMENTS = (
    # CRD's one setting (weight 0.8, 16384 negatives, 128 dimensions, NCE temperature 0.07, momentum 0.5)
    Experiment('crd', 'resnet50', 'mobilenet_v1', (), 71.37, 'Table 5'),
    Experiment('crd', 'resnet34', 'resnet18', (), 71.17, 'Table 5'),
    # ReviewKD's ImageNet loss weight per pair and its fusion modules' mid channels
    Experiment('reviewkd', 'resnet50', 'mobilenet_v1', (8.0, 256), 72.56, 'Table 5'),
    Experiment('reviewkd', 'resnet34', 'resnet18', (1.0, 512), 71.61, 'Table 5'),
    # ITRD's same-architecture values; the paper has no ITRD number for ResNet-50 -> MobileNet
    Experiment('itrd', 'resnet34', 'resnet18', (2.0, 1.0, 1.01), 71.68, 'Table 5'),
)

ORIGINS = {
    ('crd', 'resnet34'): 'the CRD paper',
    ('crd', 'resnet50'): "the ReviewKD paper's run of CRD (CRD's paper has no MobileNet run)",
    ('reviewkd', 'resnet34'): 'the ReviewKD paper',
    ('reviewkd', 'resnet50'): 'the ReviewKD paper',
    ('itrd', 'resnet34'): 'the ITRD paper',
}
"""(method, teacher) -> where the paper's number comes from"""

_LABELS = {'crd': 'CRD', 'reviewkd': 'ReviewKD', 'itrd': 'ITRD'}


def _short(value: float) -> str:
    return f'{value:g}'


def _comment(*paragraphs: str) -> str:
    """Paragraphs as comment lines, each wrapped at :data:`_WIDTH` columns (never at a no-break space)."""
    return ''.join(line.replace(_NBSP, ' ') + '\n' for text in paragraphs
                   for line in textwrap.wrap(text, _WIDTH, initial_indent='# ', subsequent_indent='# ',
                                             break_on_hyphens=False, break_long_words=False))


_WIDTH = 110
_NBSP = '\xa0'


def _what(exp: Experiment) -> tuple[str, ...]:
    """The comment paragraphs on the method's loss and its values."""
    values = dict(zip(PARAMS[exp.method], exp.params, strict=True))
    t_size, s_size = LEVELS[exp.teacher].pooled[1], LEVELS[exp.student].pooled[1]
    if exp.method == 'crd':
        return ("CRD (Tian et al., ICLR 2020) with its own settings: cross entropy (weight 1) plus torchdistill's "
                'CRDLoss with weight 0.8, 16384 negatives, feature dimension 128, NCE temperature 0.07, momentum 0.5 '
                f'and a memory bank of all {IMAGENET_TRAIN:,} training images. torchdistill\'s CRDDatasetWrapper '
                f"draws the negatives; Linear4CRD embeds each model's pooled feature ({t_size} and {s_size} -> 128; "
                "the teacher's network stays frozen, its embedding trains).",
                f"Memory: CRDDatasetWrapper keeps each class's negative indices, about 10{_NBSP}GB of host memory per "
                f'training process (1000 classes x 1.28{_NBSP}M int64). Each process keeps its own memory banks '
                f"(2 x 1.28{_NBSP}M x 128 floats, 1.3{_NBSP}GB), updated with that process's batches only.")
    if exp.method == 'reviewkd':
        return ("ReviewKD (knowledge review, Chen et al., CVPR 2021) with torchdistill's Student4KnowledgeReview "
                'and HierarchicalContextLoss: cross entropy (weight 1) plus one HierarchicalContextLoss term per '
                f'level, weight {_short(values["weight"])} each (ReviewKD\'s ImageNet loss weight for this pair). '
                "The student's five levels (four stage outputs, then the pooled feature) are fused deepest first by "
                f'attention-based fusion modules ({values["mid_channels"]} mid channels) into the teacher\'s '
                "channels; each term compares one level with the teacher's by mean squared error, at full size and "
                'pooled to 4x4, 2x2 and 1x1.',
                "The levels are taken after their last ReLU, as torchdistill's own knowledge-review recipe takes "
                "them (ReviewKD's code takes them before it).")
    return ('ITRD (Miles et al., BMVC 2022) on the pooled penultimate features: cross entropy (weight 1) plus '
            f'ITRDLoss (weight 1) with beta_corr {_short(values["beta_corr"])}, beta_mi {_short(values["beta_mi"])} '
            f'and alpha_it {_short(values["alpha_it"])}, ITRD\'s values for same-architecture pairs (as the '
            "paper's A.5 takes them on CIFAR-100; ITRD's public code has no ImageNet setting). Its trainable "
            f"embedding Linear({s_size}, {t_size}) is held by the student's Linear4ITRD wrapper and trained by the "
            "student's SGD.",)


def _intro(exp: Experiment) -> str:
    t, s, label = NETS[exp.teacher], NETS[exp.student], _LABELS[exp.method]
    reported = (f'The paper reports {label} at {exp.top1:.2f} top-1 ({exp.source}), a number it copies from '
                f'{ORIGINS[exp.method, exp.teacher]}, trained with its own set-up (batch, learning rate, schedule); '
                "this recipe keeps the WTTM recipe's set-up, so its result need not match that number.")
    if exp.method == 'itrd':
        reported += ' The paper has no ITRD number for ResNet-50 -> MobileNet.'
    return _comment(f'{label}: {t.name} -> {s.name} on ImageNet (ILSVRC 2012), same schedule and data as WTTM.',
                    *_what(exp), reported)


def _review_roles(exp: Experiment) -> str:
    """The teacher (its five levels hooked) and the student in Student4KnowledgeReview (its five levels hooked,
    and the fusion modules' outputs that the loss reads)."""
    t, s = LEVELS[exp.teacher], LEVELS[exp.student]
    mid = dict(zip(PARAMS['reviewkd'], exp.params, strict=True))['mid_channels']
    abfs = ''.join(f"""\
          - path: 'student_model.{path}'
            io: 'output'
            kwargs:
              in_channels: {s_channels}
              mid_channels: {mid}
              out_channels: {t_channels}
""" for path, s_channels, t_channels in zip(s.paths, s.channels, t.channels, strict=True))
    student_hooks = ', '.join([*(f"'student_model.{p}'" for p in s.paths),
                               *(f"'abf_modules.{i}'" for i in range(len(s.paths)))])
    return f"""\
  teacher:
    forward_proc: 'forward_batch_only'
    sequential: []
    forward_hook:
      input: []
      output: [{', '.join(f"'{p}'" for p in t.paths)}]
    requires_grad: False
  student:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    auxiliary_model_wrapper:
      key: 'Student4KnowledgeReview'
      kwargs:
        abfs:
{abfs}\
        # the spatial size of each level, deepest first: [1, S/32, S/16, S/8, S/4] for S x S inputs
        # ([1, 7, 14, 28, 56] at this recipe's 224 px); change it with the input size
        sizes: [{', '.join(map(str, REVIEW_SIZES))}]
    forward_hook:
      input: []
      output: [{student_hooks}]
    wrapper:
    requires_grad: True
    frozen_modules: []
"""


def _review_terms(exp: Experiment) -> str:
    """One HierarchicalContextLoss per level: fusion module ``abf_modules.i`` (deepest first) against the teacher's
    level."""
    weight = dict(zip(PARAMS['reviewkd'], exp.params, strict=True))['weight']
    paths = LEVELS[exp.teacher].paths
    terms = []
    for level, path in enumerate(paths):
        first = level == 0
        terms.append(f"""\
        reviewkd_{path.replace('.', '_')}:
          criterion:
            key: {"&hcl 'HierarchicalContextLoss'" if first else '*hcl'}
            kwargs:
              student_module_path: 'abf_modules.{len(paths) - 1 - level}'
              student_module_io: 'output'
              teacher_module_path: '{path}'
              teacher_module_io: 'output'
              reduction: 'mean'
              output_sizes: {'&output_sizes [4, 2, 1]' if first else '*output_sizes'}
          weight: {float(weight)!r}
""")
    return ''.join(terms)


def _itrd_fields(exp: Experiment) -> dict[str, object]:
    """The fields of ITRD_ROLES and ITRD_TERM for ``exp``."""
    (t_path, t_size), (s_path, s_size) = LEVELS[exp.teacher].pooled, LEVELS[exp.student].pooled
    values = {k: repr(float(v)) for k, v in zip(PARAMS['itrd'], exp.params, strict=True)}
    return {'teacher_path': t_path, 'teacher_size': t_size, 'student_path': s_path, 'student_size': s_size, **values}


def render(exp: Experiment) -> str:
    """The recipe of one row of :data:`EXPERIMENTS`."""
    intro = _intro(exp)
    if exp.method == 'crd':
        return render_recipe(exp, intro, CE_TERM + CRD_TERM.format(num_train=IMAGENET_TRAIN),
                             roles=crd_roles(LEVELS[exp.teacher].pooled, LEVELS[exp.student].pooled),
                             wrapper=CRD_WRAPPER)
    if exp.method == 'reviewkd':
        return render_recipe(exp, intro, CE_TERM + _review_terms(exp), roles=_review_roles(exp))
    fields = _itrd_fields(exp)
    return render_recipe(exp, intro, CE_TERM + ITRD_TERM.format(**fields), roles=ITRD_ROLES.format(**fields))


def render_all() -> dict[str, str]:
    """Every feature-based rival's ImageNet recipe: path relative to ``recipes/`` -> YAML text."""
    return {f'{exp.name}.yaml': render(exp) for exp in EXPERIMENTS}
