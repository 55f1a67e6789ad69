"""The CIFAR-100 recipes rendered from the table in :mod:`ttm_torchdistill.paper.cifar100_table`.

Zheng & Yang (ICLR 2024) run 13 teacher-student pairs of the CRD benchmark (Tian et al. 2019):
hyperparameters from Tables 8 and 9, reported top-1 from Tables 1-4 and 6. Every file under
``recipes/cifar100/`` is rendered from :data:`~ttm_torchdistill.paper.cifar100_table.PAIRS` and
:data:`~ttm_torchdistill.paper.cifar100_table.ARCHS`; edit the table, then run
``python -m ttm_torchdistill.paper`` (``--check`` only compares). A test fails when a committed recipe
differs from what this module renders.
"""
from __future__ import annotations

from ..models.cifar import FEATURES
from .cifar100_blocks import (
    CE_TERM,
    CRD_TERM,
    CRD_WRAPPER,
    DATASETS,
    FOOTER,
    ITRD_ROLES,
    ITRD_TERM,
    KD_TERM,
    LOADERS,
    PLAIN_ROLES,
    PROTOCOL,
    SCHEDULE,
    TEST,
    crd_roles,
    logit_term,
)
from .cifar100_table import (
    ARCHS,
    DIST_SETTING,
    DKD_SETTING,
    FEATURE_METHODS,
    FEATURE_TOP1,
    ITRD_BETA_CORR,
    NUM_TRAIN,
    PAIRS,
    Arch,
    Pair,
)

__all__ = ['LABELS', 'distill_body', 'num', 'paper_block', 'render_all', 'render_ce', 'render_distill', 'run_lines',
           'source', 'top1']

LABELS = {'kd': 'KD', 'ttm': 'TTM', 'wttm': 'WTTM', 'wttm_crd': 'WTTM + CRD', 'wttm_wo_ce': 'WTTM without CE',
           'crd': 'CRD', 'itrd': 'ITRD', 'wttm_itrd': 'WTTM + ITRD', 'dist': 'DIST', 'dkd': 'DKD', 'fitnet': 'FitNet',
          'at': 'AT', 'vid': 'VID', 'rkd': 'RKD', 'pkt': 'PKT'}
"""each method's name in the tables"""
_CRD_SETTINGS = ['# feature dimension 128, NCE temperature 0.07, momentum 0.5, with torchdistill\'s',
                 '# CRDDatasetWrapper and Linear4CRD embeddings on the models\' penultimate features.']


def num(value: float) -> str:
    """A YAML float that reads back as the same number (``4`` -> ``4.0``)."""
    return repr(float(value))


def source(pair: Pair, method: str) -> str:
    """Where the paper reports ``method`` on ``pair``: Tables 1, 2, 6 (same architecture) or 3, 4. ITRD and
    WTTM + ITRD are means of 3 runs also on same-architecture pairs (Table 2, following ITRD's paper). DIST's and
    DKD's rows of Tables 1/3 are the numbers of their own papers."""
    if method in ('dist', 'dkd'):
        return f'Table {1 if pair.same_arch else 3}, {LABELS[method]} row, from the {LABELS[method]} paper'
    if method in FEATURE_METHODS:
        return f'Table {1 if pair.same_arch else 3}, {LABELS[method]} row, from the CRD benchmark'
    itrd = method in ('itrd', 'wttm_itrd')
    if pair.same_arch:
        table, runs = {'wttm_crd': 2, 'wttm_wo_ce': 6, 'itrd': 2, 'wttm_itrd': 2}.get(method, 1), 3 if itrd else 5
    else:
        table, runs = {'wttm_crd': 4, 'itrd': 4, 'wttm_itrd': 4}.get(method, 3), 3
    return f'Table {table}, mean of {runs} runs'


def top1(pair: Pair, method: str) -> float:
    """The paper's top-1 of ``method`` on ``pair``."""
    if method not in FEATURE_METHODS:
        return pair.top1[method]
    return FEATURE_TOP1[method][[(p.teacher, p.student) for p in PAIRS].index((pair.teacher, pair.student))]


def _hyper_table(pair: Pair) -> str:
    return 'Table 8' if pair.same_arch else 'Table 9'


def paper_block(top1: float, source: str) -> str:
    """The machine-readable reported top-1 (``ttm-distill table`` compares runs with it)."""
    return f"paper:\n  top1: {num(top1)}\n  source: 'Zheng & Yang, ICLR 2024, {source}'\n"


def run_lines(name: str) -> str:
    return (f'# Run:   ttm-distill train {name}\n'
            '#   or, with torchdistill\'s example runner (unmodified; `dependencies` imports this plugin):\n'
            f'#        python examples/torchvision/image_classification.py --config recipes/{name}.yaml \\\n'
            f'#          --run_log log/{name.replace("/", "-")}.log\n')


def render_ce(arch: Arch) -> str:
    """The recipe that trains ``arch`` alone with cross entropy (teachers and CE baselines)."""
    name = f'cifar100/ce/{arch.key}'
    header = (f'# Cross entropy only: {arch.name} (`{arch.key}`) trained alone on CIFAR-100.\n'
              f'# Makes the teachers of the distillation recipes (they load this recipe\'s dst_ckpt) and the\n'
              f'# students\' CE baselines. The benchmark reports {arch.ce_top1} top-1 (Tables 1/3).\n#\n'
              + PROTOCOL.format(lr=arch.lr) + '#\n' + run_lines(name) + FOOTER)
    body = f"""
{paper_block(arch.ce_top1, 'Tables 1/3, CE baseline of the CRD benchmark')}
dependencies:
  - name: 'ttm_torchdistill'

{DATASETS}
models:
  model:
    key: &model_key '{arch.key}'
    kwargs:
      num_classes: 100
    _experiment: &experiment !join [*dataset_name, '-', *model_key]
    src_ckpt:
    dst_ckpt: !join ['./resource/ckpt/cifar100/ce/', *experiment, '.pt']

train:
  log_freq: 200
  num_epochs: 240
{LOADERS.format(wrapper='')}  model:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
    frozen_modules: []
{SCHEDULE.format(lr=arch.lr)}  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
{CE_TERM}
{TEST}"""
    return header + body


def _ttm_term(loss_key: str, gamma: float, beta: float, alpha: float) -> str:
    return f"""\
        {loss_key.lower().removesuffix('loss')}:
          criterion:
            key: '{loss_key}'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              gamma: {num(gamma)}
              beta: {num(beta)}
              alpha: {num(alpha)}
              reduction: 'batchmean'
          weight: 1.0
"""


def _itrd_lines(pair: Pair) -> list[str]:
    return [f'# ITRD (Miles et al., BMVC 2022; Eq. 24) with beta_corr {ITRD_BETA_CORR:g}, '
            f'beta_mi {pair.itrd_beta_mi:g} and alpha_it {pair.itrd_alpha:g}',
            '# (ITRD\'s own values, Appendix A.5), on the pooled penultimate features. Its trainable embedding',
            '# Linear(d_s, d_t) is held by the student\'s Linear4ITRD wrapper and trained by the student\'s SGD.']


def _itrd(pair: Pair) -> dict[str, object]:
    """The fields of ITRD_ROLES and ITRD_TERM for ``pair``."""
    (t_path, t_size), (s_path, s_size) = FEATURES[pair.teacher], FEATURES[pair.student]
    return {'teacher_path': t_path, 'teacher_size': t_size, 'student_path': s_path, 'student_size': s_size,
            'alpha_it': num(pair.itrd_alpha), 'beta_corr': num(ITRD_BETA_CORR), 'beta_mi': num(pair.itrd_beta_mi)}


def _method_header(pair: Pair, method: str) -> str:
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    reported, where = top1(pair, method), source(pair, method)
    hyper = _hyper_table(pair)
    lines = [f'# {LABELS[method]}: {t.key} -> {s.key} on CIFAR-100 (CRD benchmark names: {t.name} -> {s.name}).']
    if method == 'crd':
        lines += ['# CRD alone (the paper\'s comparison row): cross entropy plus torchdistill\'s CRDLoss with',
                  '# weight 0.8, CRD\'s own settings (as in the WTTM + CRD recipes): 16384 negatives,', *_CRD_SETTINGS]
    elif method == 'itrd':
        lines += ['# ITRD alone (the paper\'s comparison row): cross entropy plus ITRD with weight 1:',
                  *_itrd_lines(pair)]
    elif method == 'kd':
        lines += ['# The benchmark\'s KD: T = 4, loss = 0.1 * CE + 0.9 * T^2 * KL. torchdistill\'s KDLoss weights the',
                  '# cross entropy by `alpha` and the KL term by `beta`, so the benchmark\'s "alpha 0.9" (KL weight)',
                  '# is `alpha: 0.1, beta: 0.9` here.']
    elif method == 'dist':
        d = DIST_SETTING
        lines += ['# DIST (Huang et al., NeurIPS 2022) as its authors\' code computes it: cross entropy (weight 1)',
                  f'# plus ExactDISTLoss with beta {d["beta"]:g}, gamma {d["gamma"]:g}, tau {d["tau"]:g}, DIST\'s '
                  'official CIFAR-100 setting (the paper does not',
                  '# state the one it used). The intra-class term correlates each class over the batch of each',
                  '# process (not gathered across GPUs), as in the authors\' code.',
                  '# The paper copies this number from the DIST paper, trained with DIST\'s own set-up.']
    elif method == 'dkd':
        d, warmup = DKD_SETTING, DKD_SETTING['warmup_epochs']
        lines += ['# DKD (Zhao et al., CVPR 2022) as its authors\' mdistiller computes it: cross entropy (weight 1,',
                  f'# not warmed up) plus DKDLoss with alpha {d["alpha"]:g}, beta {pair.dkd_beta:g} (the DKD authors\' '
                  f'config for this pair), temperature {d["temperature"]:g},',
                  f'# linear warm-up over the first {warmup} epochs (1/{warmup} of the DKD term in epoch 1; the '
                  'pre-epoch process tells',
                  '# the loss the epoch). The paper copies this number from the DKD paper, trained with DKD\'s own '
                  'set-up.']
    elif method == 'wttm_wo_ce':
        gamma = pair.wo_ce_gamma
        lines += [f'# WTTM without the cross entropy (alpha 0): gamma {gamma} ({hyper}, last row).',
                  '# The paper gives only gamma for this variant; beta = 1 is our choice (with alpha 0 it only',
                  '# scales the loss, like the learning rate), not a value from the paper.']
    else:
        gamma, beta = getattr(pair, method)
        loss = 'TTM' if method == 'ttm' else 'WTTM'
        lines.append(f'# {loss} with gamma {gamma}, beta {beta} ({hyper}), alpha 1 (cross entropy weight).')
        if method == 'wttm_crd':
            lines += ['# Plus torchdistill\'s CRDLoss with weight 0.8 (Eq. 23): CRD\'s own settings, 16384 negatives,',
                      *_CRD_SETTINGS]
        elif method == 'wttm_itrd':
            lines += ['# Plus ITRD with weight mu = 1 (Eq. 23):', *_itrd_lines(pair)]
    lines.append(f'# Reported student top-1: {reported} ({where}).')
    lines += ['#', f'# Teacher: the checkpoint that `ttm-distill train cifar100/ce/{t.key}` writes. To use the CRD',
              '# benchmark\'s released teacher instead (a dict with the state dict under "model"), without editing:',
              f'#   --set models.teacher_model.src_ckpt=/path/to/{t.name}_vanilla/ckpt_epoch_240.pth',
              '#']
    return '\n'.join(lines) + '\n'


def render_distill(pair: Pair, method: str) -> str:
    """A distillation recipe of ``pair`` with ``method`` (one of :data:`.cifar100_table.METHODS`)."""
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    name = f'cifar100/{method}/{s.key}_from_{t.key}'
    header = _method_header(pair, method) + PROTOCOL.format(lr=s.lr) + '#\n' + run_lines(name) + FOOTER
    crd, itrd = method in ('wttm_crd', 'crd'), method in ('itrd', 'wttm_itrd')
    if method == 'kd':
        terms = KD_TERM
    elif method == 'ttm':
        terms = _ttm_term('TTMLoss', *pair.ttm, 1.0)
    elif method == 'wttm_wo_ce':
        terms = _ttm_term('WTTMLoss', pair.wo_ce_gamma, 1.0, 0.0)
    elif method in ('crd', 'itrd'):
        terms = CE_TERM
    elif method == 'dist':
        terms = CE_TERM + logit_term('dist', 'ExactDISTLoss', {k: num(v) for k, v in DIST_SETTING.items()})
    elif method == 'dkd':
        values = {'alpha': num(DKD_SETTING['alpha']), 'beta': num(pair.dkd_beta),
                  'temperature': num(DKD_SETTING['temperature']), 'warmup_epochs': DKD_SETTING['warmup_epochs']}
        terms = CE_TERM + logit_term('dkd', 'DKDLoss', values)
    else:
        terms = _ttm_term('WTTMLoss', *getattr(pair, method), 1.0)
    if crd:
        terms += CRD_TERM.format(num_train=NUM_TRAIN)
    if itrd:
        terms += ITRD_TERM.format(**_itrd(pair))
    roles = (crd_roles(FEATURES[t.key], FEATURES[s.key]) if crd else ITRD_ROLES.format(**_itrd(pair)) if itrd
             else PLAIN_ROLES)
    return header + distill_body(pair, method, roles, terms, CRD_WRAPPER if crd else '')


def distill_body(pair: Pair, method: str, roles: str, terms: str, wrapper: str = '') -> str:
    """A distillation recipe's YAML (after its header comment): ``pair``'s models, the benchmark's data, loaders and
    schedule, ``roles`` (``train.teacher`` and ``train.student``), ``terms`` (under ``sub_terms``) and the train
    loader's dataset ``wrapper`` (CRD's)."""
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    return f"""
{paper_block(top1(pair, method), source(pair, method))}
dependencies:
  - name: 'ttm_torchdistill'

{DATASETS}
models:
  teacher_model:
    key: &teacher_model_key '{t.key}'
    kwargs:
      num_classes: 100
    src_ckpt: !join ['./resource/ckpt/cifar100/ce/', *dataset_name, '-', *teacher_model_key, '.pt']
  student_model:
    key: &student_model_key '{s.key}'
    kwargs:
      num_classes: 100
    _experiment: &student_experiment !join [*dataset_name, '-', *student_model_key, '_from_', *teacher_model_key]
    src_ckpt:
    dst_ckpt: !join ['./resource/ckpt/cifar100/{method}/', *student_experiment, '.pt']

train:
  log_freq: 200
  num_epochs: 240
  pre_epoch_process: 'pre_epoch_process_with_frozen_teacher'
{LOADERS.format(wrapper=wrapper)}{roles}\
{SCHEDULE.format(lr=s.lr)}  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
{terms}
{TEST}"""


def render_all() -> dict[str, str]:
    """Every CIFAR-100 recipe: path relative to ``recipes/`` -> YAML text."""
    out = {}
    for arch in ARCHS.values():
        out[f'cifar100/ce/{arch.key}.yaml'] = render_ce(arch)
    for pair in PAIRS:
        for method in pair.methods:
            out[f'cifar100/{method}/{pair.student}_from_{pair.teacher}.yaml'] = render_distill(pair, method)
    return out
