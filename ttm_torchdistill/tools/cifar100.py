"""The paper's CIFAR-100 suite as one table, and the recipes generated from it.

Zheng & Yang (ICLR 2024) run 13 teacher-student pairs of the CRD benchmark (Tian et al. 2019):
hyperparameters from Tables 8 and 9, reported top-1 from Tables 1-4 and 6. Every file under
``recipes/cifar100/`` is rendered from :data:`PAIRS` and :data:`ARCHS`; edit the table, then run
``python -m ttm_torchdistill.tools.cifar100`` (``--check`` only compares). A test fails when a
committed recipe differs from what this module renders.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..models.cifar import FEATURES

__all__ = ['ARCHS', 'METHODS', 'PAIRS', 'Arch', 'Pair', 'render_all', 'write_recipes']

METHODS = ('kd', 'ttm', 'wttm', 'wttm_crd', 'wttm_wo_ce')
NUM_TRAIN = 50_000  # CIFAR-100 training images: CRD's memory bank size


@dataclass(frozen=True)
class Arch:
    """One architecture: registry key, the CRD benchmark's name for it (its released checkpoints are
    ``<name>_vanilla/ckpt_epoch_240.pth``) and its CE top-1 in Tables 1/3. The feature CRD embeds is
    :data:`ttm_torchdistill.models.cifar.FEATURES`."""

    key: str
    name: str
    ce_top1: float
    lr: float = 0.05  # the benchmark's lr 0.01 for MobileNetV2 and ShuffleNet students


@dataclass(frozen=True)
class Pair:
    """One teacher -> student row of Tables 1-4, 6 (top-1) and 8, 9 ((gamma, beta) per method)."""

    teacher: str
    student: str
    ttm: tuple[float, float]
    wttm: tuple[float, float]
    wttm_crd: tuple[float, float]
    top1: dict[str, float]
    wo_ce_gamma: float | None = None  # Table 8's last row: same-architecture pairs only

    @property
    def same_arch(self) -> bool:
        return self.wo_ce_gamma is not None

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS if self.same_arch else METHODS[:-1]


ARCHS = {a.key: a for a in (
    Arch('wrn_40_2', 'wrn_40_2', 75.61),
    Arch('wrn_16_2', 'wrn_16_2', 73.26),
    Arch('wrn_40_1', 'wrn_40_1', 71.98),
    Arch('resnet56', 'resnet56', 72.34),
    Arch('resnet110', 'resnet110', 74.31),
    Arch('resnet20', 'resnet20', 69.06),
    Arch('resnet32', 'resnet32', 71.14),
    Arch('resnet32x4', 'resnet32x4', 79.42),
    Arch('resnet8x4', 'resnet8x4', 72.50),
    Arch('vgg13_cifar', 'vgg13', 74.64),
    Arch('vgg8_cifar', 'vgg8', 70.36),
    Arch('resnet50_cifar', 'ResNet50', 79.34),
    Arch('mobilenetv2_cifar', 'MobileNetV2', 64.6, lr=0.01),
    Arch('shufflenetv1_cifar', 'ShuffleV1', 70.5, lr=0.01),
    Arch('shufflenetv2_cifar', 'ShuffleV2', 71.82, lr=0.01),
)}


def _top1(kd: float, ttm: float, wttm: float, crd: float, wo_ce: float | None = None) -> dict[str, float]:
    top1 = {'kd': kd, 'ttm': ttm, 'wttm': wttm, 'wttm_crd': crd}
    return top1 if wo_ce is None else dict(top1, wttm_wo_ce=wo_ce)


PAIRS = (
    # same architecture (Table 8; top-1 of Tables 1, 2 and 6, mean of 5 runs)
    Pair('wrn_40_2', 'wrn_16_2', (0.1, 101), (0.1, 4), (0.1, 4), _top1(74.92, 76.23, 76.37, 76.61, 75.11), 0.2),
    Pair('wrn_40_2', 'wrn_40_1', (0.1, 76), (0.1, 3), (0.1, 2), _top1(73.54, 74.32, 74.58, 74.94, 73.16), 0.5),
    Pair('resnet56', 'resnet20', (0.3, 7), (0.3, 1.5), (0.3, 0.6), _top1(70.66, 71.83, 71.92, 72.20, 70.95), 0.6),
    Pair('resnet110', 'resnet20', (0.2, 8), (0.2, 2), (0.2, 1.4), _top1(70.67, 71.46, 71.67, 72.13, 70.71), 0.4),
    Pair('resnet110', 'resnet32', (0.1, 33), (0.1, 1.5), (0.2, 1), _top1(73.08, 73.97, 74.13, 74.52, 73.21), 0.4),
    Pair('resnet32x4', 'resnet8x4', (0.1, 100), (0.1, 3), (0.2, 4), _top1(73.33, 76.17, 76.06, 76.65, 72.94), 0.5),
    Pair('vgg13_cifar', 'vgg8_cifar', (0.1, 45), (0.1, 2.25), (0.2, 4), _top1(72.98, 74.33, 74.44, 74.71, 74.04), 0.2),
    # different architectures (Table 9; top-1 of Tables 3 and 4, mean of 3 runs)
    Pair('vgg13_cifar', 'mobilenetv2_cifar', (0.2, 16), (0.2, 3), (0.3, 4.2), _top1(67.37, 68.98, 69.16, 70.30)),
    Pair('resnet50_cifar', 'mobilenetv2_cifar', (0.2, 20), (0.2, 5), (0.3, 3), _top1(67.35, 69.24, 69.59, 70.84)),
    Pair('resnet50_cifar', 'vgg8_cifar', (0.1, 70), (0.1, 2), (0.1, 3), _top1(73.81, 74.87, 74.82, 75.30)),
    Pair('resnet32x4', 'shufflenetv1_cifar', (0.2, 12), (0.2, 1.4), (0.2, 0.4), _top1(74.07, 74.18, 74.37, 75.82)),
    Pair('resnet32x4', 'shufflenetv2_cifar', (0.4, 40), (0.4, 16), (0.4, 12), _top1(74.45, 76.57, 76.55, 77.04)),
    Pair('wrn_40_2', 'shufflenetv1_cifar', (0.3, 8), (0.3, 3), (0.2, 0.16), _top1(74.83, 75.39, 75.42, 76.86)),
)

_LABELS = {'kd': 'KD', 'ttm': 'TTM', 'wttm': 'WTTM', 'wttm_crd': 'WTTM + CRD', 'wttm_wo_ce': 'WTTM without CE'}


def _num(value: float) -> str:
    """A YAML float that reads back as the same number (``4`` -> ``4.0``)."""
    return repr(float(value))


def _source(pair: Pair, method: str) -> str:
    """Where the paper reports ``method`` on ``pair``: Tables 1, 2, 6 (same architecture) or 3, 4."""
    if pair.same_arch:
        table, runs = {'wttm_crd': 2, 'wttm_wo_ce': 6}.get(method, 1), 5
    else:
        table, runs = {'wttm_crd': 4}.get(method, 3), 3
    return f'Table {table}, mean of {runs} runs'


def _hyper_table(pair: Pair) -> str:
    return 'Table 8' if pair.same_arch else 'Table 9'


# ---------------------------------------------------------------- YAML blocks

_DATASETS = """\
datasets:
  &cifar100_train cifar100/train: !import_call
    _name: &dataset_name 'cifar100'
    _root: &root_dir !import_call
      key: 'os.getenv'
      init:
        args: ['CIFAR100_ROOT', '~/datasets/cifar100']
    key: 'torchvision.datasets.CIFAR100'
    init:
      kwargs:
        root: *root_dir
        train: True
        download: False
        transform: !import_call
          key: 'torchvision.transforms.Compose'
          init:
            kwargs:
              transforms:
                - !import_call
                  key: 'torchvision.transforms.RandomCrop'
                  init:
                    kwargs:
                      size: 32
                      padding: 4
                - !import_call
                  key: 'torchvision.transforms.RandomHorizontalFlip'
                  init:
                    kwargs:
                      p: 0.5
                - !import_call
                  key: 'torchvision.transforms.ToTensor'
                  init:
                - !import_call
                  key: 'torchvision.transforms.Normalize'
                  init:
                    kwargs: &normalize_kwargs
                      mean: [0.5071, 0.4867, 0.4408]
                      std: [0.2675, 0.2565, 0.2761]
  &cifar100_test cifar100/test: !import_call
    key: 'torchvision.datasets.CIFAR100'
    init:
      kwargs:
        root: *root_dir
        train: False
        download: False
        transform: !import_call
          key: 'torchvision.transforms.Compose'
          init:
            kwargs:
              transforms:
                - !import_call
                  key: 'torchvision.transforms.ToTensor'
                  init:
                - !import_call
                  key: 'torchvision.transforms.Normalize'
                  init:
                    kwargs: *normalize_kwargs
"""

_LOADERS = """\
  train_data_loader:
    dataset_id: *cifar100_train
{wrapper}    sampler:
      class_or_func: !import_get
        key: 'torch.utils.data.RandomSampler'
      kwargs:
    kwargs:
      batch_size: 64
      num_workers: 8
      pin_memory: True
      drop_last: False
    cache_output:
  val_data_loader:
    dataset_id: *cifar100_test
    sampler: &val_sampler
      class_or_func: !import_get
        key: 'torch.utils.data.SequentialSampler'
      kwargs:
    kwargs:
      batch_size: 128
      num_workers: 8
      pin_memory: True
      drop_last: False
"""

_CRD_WRAPPER = """\
    dataset_wrapper:
      key: 'CRDDatasetWrapper'
      kwargs:
        num_negative_samples: &num_negative_samples 16384
        mode: 'exact'
        ratio: 1.0
"""

_SCHEDULE = """\
  optimizer:
    key: 'SGD'
    kwargs:
      lr: {lr}
      momentum: 0.9
      weight_decay: 0.0005
  scheduler:
    key: 'MultiStepLR'
    kwargs:
      milestones: [150, 180, 210]
      gamma: 0.1
"""

_TEST = """\
test:
  test_data_loader:
    dataset_id: *cifar100_test
    sampler: *val_sampler
    kwargs:
      batch_size: 128
      num_workers: 8
      pin_memory: True
      drop_last: False
"""

_PROTOCOL = """\
# Schedule of the CRD benchmark (Tian et al. 2019), as in the paper: 240 epochs, batch 64 on one GPU,
# SGD (momentum 0.9, weight decay 5e-4), lr {lr}, MultiStepLR at epochs 150/180/210 (x0.1);
# RandomCrop(32, padding 4) + horizontal flip, CIFAR-100 mean/std normalisation.
# Validation and test loaders are both the CIFAR-100 TEST set, as in the benchmark: the paper reports
# the best test top-1 over epochs, which is this runner's best validation top-1. Model selection on
# these numbers therefore sees the test set (see README, "Tuning a new pair", for a held-out split).
#
# Data: torchvision's CIFAR100 files (cifar-100-python/) under $CIFAR100_ROOT (default ~/datasets/cifar100).
"""

_FOOTER = """\
#
# Recipes are code: torchdistill's YAML tags (!import_call, !import_get, ...) import and call
# Python while the file loads. Run recipes you trust.
#
# Generated by `python -m ttm_torchdistill.tools.cifar100` from the table in
# ttm_torchdistill/tools/cifar100.py: edit the table, not this file.
"""


def _paper_block(top1: float, source: str) -> str:
    """The machine-readable reported top-1 (``ttm-distill table`` compares runs with it)."""
    return f"paper:\n  top1: {_num(top1)}\n  source: 'Zheng & Yang, ICLR 2024, {source}'\n"


def _run_lines(name: str) -> str:
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
              + _PROTOCOL.format(lr=arch.lr) + '#\n' + _run_lines(name) + _FOOTER)
    body = f"""
{_paper_block(arch.ce_top1, 'Tables 1/3, CE baseline of the CRD benchmark')}
dependencies:
  - name: 'ttm_torchdistill'

{_DATASETS}
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
{_LOADERS.format(wrapper='')}  model:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
    frozen_modules: []
{_SCHEDULE.format(lr=arch.lr)}  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        ce:
          criterion:
            key: 'CrossEntropyLoss'
            kwargs:
              reduction: 'mean'
          criterion_wrapper:
            key: 'SimpleLossWrapper'
            kwargs:
              input:
                is_from_teacher: False
                module_path: '.'
                io: 'output'
              target:
                uses_label: True
          weight: 1.0

{_TEST}"""
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
              gamma: {_num(gamma)}
              beta: {_num(beta)}
              alpha: {_num(alpha)}
              reduction: 'batchmean'
          weight: 1.0
"""


_KD_TERM = """\
        kd:
          criterion:
            key: 'KDLoss'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              temperature: 4.0
              alpha: 0.1
              beta: 0.9
              reduction: 'batchmean'
          weight: 1.0
"""

_CRD_TERM = """\
        crd:
          criterion:
            key: 'CRDLoss'
            kwargs:
              teacher_norm_module_path: 'normalizer'
              student_norm_module_path: 'normalizer'
              student_empty_module_path: 'empty'
              input_size: *feature_dim
              output_size: &num_samples {num_train}
              num_negative_samples: *num_negative_samples
              num_samples: *num_samples
              temperature: 0.07
              momentum: 0.5
              eps: 0.0000001
          weight: 0.8
"""


_PLAIN_ROLES = """\
  teacher:
    forward_proc: 'forward_batch_only'
    sequential: []
    requires_grad: False
  student:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
    frozen_modules: []
"""


def _crd_roles(teacher: Arch, student: Arch) -> str:
    # CRD trains a linear embedding on each side: the teacher's network stays frozen, its embedding learns.
    # Linear4CRD wraps the student and its embedding in DDP itself, so the student takes no wrapper here.
    def aux(arch: Arch, anchor: str) -> str:
        return f"""\
    auxiliary_model_wrapper:
      key: 'Linear4CRD'
      kwargs:
        input_module_path: 'model.{FEATURES[arch.key][0]}'
        linear_kwargs:
          in_features: {FEATURES[arch.key][1]}
          out_features: {anchor}128
          bias: True
        power: 2
"""
    return f"""\
  teacher:
    forward_proc: 'forward_batch_supp_dict'
    sequential: []
{aux(teacher, '')}    forward_hook:
      input: []
      output: ['model.{FEATURES[teacher.key][0]}', 'normalizer']
    wrapper:
    requires_grad: True
    frozen_modules: ['model']
  student:
    forward_proc: 'forward_batch_supp_dict'
    adaptations:
    sequential: []
{aux(student, '&feature_dim ')}    forward_hook:
      input: ['empty']
      output: ['model.{FEATURES[student.key][0]}', 'normalizer']
    wrapper:
    requires_grad: True
    frozen_modules: []
"""


def _method_header(pair: Pair, method: str) -> str:
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    top1, source = pair.top1[method], _source(pair, method)
    hyper = _hyper_table(pair)
    lines = [f'# {_LABELS[method]}: {t.key} -> {s.key} on CIFAR-100 (CRD benchmark names: {t.name} -> {s.name}).']
    if method == 'kd':
        lines += ['# The benchmark\'s KD: T = 4, loss = 0.1 * CE + 0.9 * T^2 * KL. torchdistill\'s KDLoss weights the',
                  '# cross entropy by `alpha` and the KL term by `beta`, so the benchmark\'s "alpha 0.9" (KL weight)',
                  '# is `alpha: 0.1, beta: 0.9` here.']
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
                      '# feature dimension 128, NCE temperature 0.07, momentum 0.5, with torchdistill\'s',
                      '# CRDDatasetWrapper and Linear4CRD embeddings on the models\' penultimate features.']
    lines.append(f'# Reported student top-1: {top1} ({source}).')
    lines += ['#', f'# Teacher: the checkpoint that `ttm-distill train cifar100/ce/{t.key}` writes. To use the CRD',
              '# benchmark\'s released teacher instead (a dict with the state dict under "model"), without editing:',
              f'#   --set models.teacher_model.src_ckpt=/path/to/{t.name}_vanilla/ckpt_epoch_240.pth',
              '#']
    return '\n'.join(lines) + '\n'


def render_distill(pair: Pair, method: str) -> str:
    """A distillation recipe of ``pair`` with ``method`` (one of :data:`METHODS`)."""
    t, s = ARCHS[pair.teacher], ARCHS[pair.student]
    name = f'cifar100/{method}/{s.key}_from_{t.key}'
    header = _method_header(pair, method) + _PROTOCOL.format(lr=s.lr) + '#\n' + _run_lines(name) + _FOOTER
    crd = method == 'wttm_crd'
    if method == 'kd':
        terms = _KD_TERM
    elif method == 'ttm':
        terms = _ttm_term('TTMLoss', *pair.ttm, 1.0)
    elif method == 'wttm_wo_ce':
        terms = _ttm_term('WTTMLoss', pair.wo_ce_gamma, 1.0, 0.0)
    else:
        terms = _ttm_term('WTTMLoss', *getattr(pair, method), 1.0)
    if crd:
        terms += _CRD_TERM.format(num_train=NUM_TRAIN)
    body = f"""
{_paper_block(pair.top1[method], _source(pair, method))}
dependencies:
  - name: 'ttm_torchdistill'

{_DATASETS}
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
{_LOADERS.format(wrapper=_CRD_WRAPPER if crd else '')}{_crd_roles(t, s) if crd else _PLAIN_ROLES}\
{_SCHEDULE.format(lr=s.lr)}  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
{terms}
{_TEST}"""
    return header + body


def render_all() -> dict[str, str]:
    """Every CIFAR-100 recipe: path relative to ``recipes/`` -> YAML text."""
    out = {}
    for arch in ARCHS.values():
        out[f'cifar100/ce/{arch.key}.yaml'] = render_ce(arch)
    for pair in PAIRS:
        for method in pair.methods:
            out[f'cifar100/{method}/{pair.student}_from_{pair.teacher}.yaml'] = render_distill(pair, method)
    return out


def write_recipes(root: Path, check: bool = False) -> list[str]:
    """Write (or with ``check``, only compare) the rendered recipes under ``root``; returns the paths that
    differ from (or are missing in) ``root``, and, with ``check``, committed files the table does not render."""
    rendered = render_all()
    differ = [rel for rel, text in rendered.items()
              if not (root / rel).is_file() or (root / rel).read_text() != text]
    if check:
        extra = [p.relative_to(root).as_posix() for p in (root / 'cifar100').rglob('*.yaml')
                 if p.relative_to(root).as_posix() not in rendered]
        return differ + extra
    for rel in differ:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rendered[rel])
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m ttm_torchdistill.tools.cifar100', description=__doc__)
    parser.add_argument('--check', action='store_true', help='only report recipes that differ from the table')
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent / 'recipes'
    changed = write_recipes(root, check=args.check)
    verb = 'differ' if args.check else 'written'
    print(f'{len(changed)} recipe(s) {verb}' + ''.join(f'\n  {p}' for p in changed))
    return 1 if args.check and changed else 0


if __name__ == '__main__':
    sys.exit(main())
