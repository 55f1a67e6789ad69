"""The recipe pages' tables in Markdown, made from the tables the recipes are rendered from (ttm_torchdistill.paper).

A page names a table with a marker line ``<!-- table: NAME -->`` (NAME a key of :data:`TABLES`); the site's hook
(``pages.py``) puts the table there at build time, so a page never holds a number the recipes do not.
"""
from __future__ import annotations

from collections.abc import Callable

from ttm_torchdistill.paper import cifar100_table, deit, imagenet, imagenet_rivals

__all__ = ['CIFAR100_RIVALS', 'CIFAR100_TOP1', 'TABLES', 'cifar100', 'cifar100_ce', 'cifar100_feature',
           'cifar100_rivals', 'cifar100_top1', 'deit_table', 'imagenet_table']

_LABELS = {'kd': 'KD', 'ttm': 'TTM', 'wttm': 'WTTM', 'dist': 'DIST', 'dkd': 'DKD', 'crd': 'CRD', 'reviewkd': 'ReviewKD',
           'itrd': 'ITRD'}
_PAIRS = (('resnet34', 'resnet18'), ('resnet50', 'mobilenet_v1'))  # Table 5's pairs, then Table 7's teachers


def _g(value: float) -> str:
    return f'{value:g}'


def _rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows]) + '\n'


def _gb(values: tuple[float, float]) -> str:
    return f'{_g(values[0])} / {_g(values[1])}'


def _pair(pair: cifar100_table.Pair) -> str:
    return f'`{pair.student}_from_{pair.teacher}`'


def cifar100() -> str:
    """One row per pair of :data:`~ttm_torchdistill.paper.cifar100_table.PAIRS`: each method's values (Tables 8 and 9,
    ITRD's beta_mi, DKD's beta of its authors' config)."""
    header = ('student `_from_` teacher', 'TTM γ / β', 'WTTM γ / β', 'WTTM+CRD γ / β', 'w/o CE γ',
              'WTTM+ITRD γ / β; β_mi', 'DKD β')
    rows = [(_pair(pair), _gb(pair.ttm), _gb(pair.wttm), _gb(pair.wttm_crd),
             _g(pair.wo_ce_gamma) if pair.same_arch else '—', f'{_gb(pair.wttm_itrd)}; {_g(pair.itrd_beta_mi)}',
             _g(pair.dkd_beta) if pair.dkd_beta is not None else 'n/a')
            for pair in cifar100_table.PAIRS]
    return _rows(header, rows)


CIFAR100_TOP1 = {'kd': 'KD', 'ttm': 'TTM', 'wttm': 'WTTM', 'wttm_crd': 'WTTM+CRD', 'wttm_wo_ce': 'w/o CE',
                 'wttm_itrd': 'WTTM+ITRD'}
"""the paper's own methods (and KD) in the TTM/WTTM top-1 table, in its column order, with their column titles"""
CIFAR100_RIVALS = {'crd': 'CRD', 'itrd': 'ITRD', 'dist': 'DIST', 'dkd': 'DKD'}
"""the rivals of the rivals' top-1 table (the feature methods have theirs: :func:`cifar100_feature`)"""


def _top1(methods: dict[str, str]) -> str:
    """One row per pair: the paper's top-1 of ``methods`` ('—': no recipe for the pair, 'n/a': the paper has no
    number)."""
    rows = [(_pair(pair), *(f'{pair.top1[m]:.2f}' if m in pair.top1 else 'n/a' if m == 'dkd' else '—'
                            for m in methods))
            for pair in cifar100_table.PAIRS]
    return _rows(('student `_from_` teacher', *methods.values()), rows)


def cifar100_top1() -> str:
    """The paper's top-1 of KD, TTM, WTTM and WTTM's combinations on every pair (:data:`CIFAR100_TOP1`)."""
    return _top1(CIFAR100_TOP1)


def cifar100_rivals() -> str:
    """The paper's top-1 of CRD, ITRD, DIST and DKD on every pair (:data:`CIFAR100_RIVALS`)."""
    return _top1(CIFAR100_RIVALS)


def cifar100_feature() -> str:
    """One row per pair: the paper's top-1 of the CRD benchmark's feature methods
    (:data:`~ttm_torchdistill.paper.cifar100_table.FEATURE_TOP1`)."""
    methods = cifar100_table.FEATURE_METHODS
    rows = [(_pair(pair), *(f'{cifar100_table.FEATURE_TOP1[m][k]:.2f}' for m in methods))
            for k, pair in enumerate(cifar100_table.PAIRS)]
    return _rows(('student `_from_` teacher', 'FitNet', 'AT', 'VID', 'RKD', 'PKT'), rows)


def cifar100_ce() -> str:
    """One row per architecture of :data:`~ttm_torchdistill.paper.cifar100_table.ARCHS`: its ``ce`` recipe, the CRD
    benchmark's name, the learning rate and the paper's top-1 trained alone."""
    rows = [(f'`cifar100/ce/{a.key}`', f'`{a.name}`', _g(a.lr), f'{a.ce_top1:.2f}')
            for a in cifar100_table.ARCHS.values()]
    return _rows(('recipe', "the benchmark's name", 'lr', 'paper top-1 (alone)'), rows)


def _imagenet_loss(exp: imagenet.Experiment) -> tuple[str, str]:
    """The loss column and the values column of one ImageNet recipe."""
    if exp.method in ('ttm', 'wttm'):
        return f'{exp.method.upper()}Loss', f'γ {_g(exp.params[0])}, β {_g(exp.params[1])}, α 1'
    if exp.method == 'kd':
        return 'KDLoss', f'T {_g(exp.params[0])}, α {_g(exp.params[1])}'
    names = {**imagenet.RIVAL_PARAMS, **imagenet_rivals.PARAMS}[exp.method]
    values = dict(zip(names, exp.params, strict=True))
    if exp.method == 'dist':
        return 'CE + ExactDISTLoss', f"β {_g(values['beta'])}, γ {_g(values['gamma'])}, τ {_g(values['tau'])}"
    if exp.method == 'dkd':
        warmup = 'no warm-up' if values['warmup_epochs'] <= 1 else f"warm-up {_g(values['warmup_epochs'])} epochs"
        return ('CE + DKDLoss', f"α {_g(values['alpha'])}, β {_g(values['beta'])}, T {_g(values['temperature'])}, "
                                f'{warmup}')
    if exp.method == 'crd':
        return 'CE + CRDLoss', "weight 0.8 (CRD's own settings)"
    if exp.method == 'reviewkd':
        return 'CE + 5 × HierarchicalContextLoss', f"weight {_g(values['weight'])} each, mid {values['mid_channels']}"
    return 'CE + ITRDLoss', f"β_corr {_g(values['beta_corr'])}, β_mi {_g(values['beta_mi'])}, α_it " \
                            f"{_g(values['alpha_it'])}"


def imagenet_table() -> str:
    """One row per ResNet/MobileNet ImageNet recipe (:data:`~ttm_torchdistill.paper.imagenet.EXPERIMENTS` and the
    feature-based rivals' :data:`~ttm_torchdistill.paper.imagenet_rivals.EXPERIMENTS`), Table 5's two pairs first."""
    experiments = [*imagenet.EXPERIMENTS, *imagenet_rivals.EXPERIMENTS]
    nets, methods = list(imagenet.NETS), ['wttm', 'ttm', 'kd', 'dist', 'dkd', 'crd', 'reviewkd', 'itrd']

    def order(exp: imagenet.Experiment) -> tuple:
        pair = (exp.teacher, exp.student)
        return (_PAIRS.index(pair) if pair in _PAIRS else len(_PAIRS), nets.index(exp.teacher),
                methods.index(exp.method) if exp.method in methods else len(methods), exp.name)

    rows = []
    for exp in sorted(experiments, key=order):
        loss, values = _imagenet_loss(exp)
        if exp.top1 is None:
            top1, source = '—', 'not reported'
        elif exp.method in ('kd', 'ttm', 'wttm'):
            top1, source = f'{exp.top1:.2f}', exp.source
        else:  # a number the paper copies from another paper: the rival's own, or (CRD on MobileNet) ReviewKD's
            paper = 'ReviewKD' if 'ReviewKD' in imagenet_rivals.ORIGINS.get((exp.method, exp.teacher), '') \
                else _LABELS[exp.method]
            top1, source = f'{exp.top1:.2f}', f'{exp.source} ({paper})'
        rows.append((f'`{exp.name}`', loss, values, top1, source))
    return _rows(('recipe', 'loss', 'values', 'paper top-1', 'reported in'), rows)


def deit_table() -> str:
    """One row per DeiT recipe of :data:`~ttm_torchdistill.paper.deit.RUNS`, with Table 13's top-1."""
    rows = []
    for run in deit.RUNS:
        if run.method == 'ce':
            loss, values = 'cross entropy (the student alone)', '—'
        elif run.method == 'kd':
            loss, values = 'KDLoss (CE weighted α, KL 1 − α)', f'T {_g(run.params[0])}, α {_g(run.params[1])}'
        else:
            loss = f'{run.method.upper()}Loss'
            values = f'γ {_g(run.params[0])}, β {_g(run.params[1])}, α 1 (untuned: not the paper\'s, see below)'
        rows.append((f'`{run.name}`', loss, values, f'{run.top1:.2f}'))
    return _rows(('recipe', 'loss', 'values', 'paper top-1'), rows)


TABLES: dict[str, Callable[[], str]] = {
    'cifar100': cifar100, 'cifar100_top1': cifar100_top1, 'cifar100_rivals': cifar100_rivals,
    'cifar100_feature': cifar100_feature, 'cifar100_ce': cifar100_ce,
    'imagenet': imagenet_table, 'deit': deit_table}
"""marker name -> the function that makes its table"""
