"""The paper's ImageNet (ILSVRC 2012) experiments as a table, and the recipes rendered from it.

Zheng & Yang (ICLR 2024) distil ResNet-34 -> ResNet-18 and ResNet-50 -> MobileNet v1 on ImageNet
(Table 5, hyperparameters in Table 10) and ResNet-18 from better teachers (Table 7), beside the logit-based rivals
DIST and DKD of Table 5 (with their authors' ImageNet loss settings); :mod:`.imagenet_rivals` adds the
feature-based rivals with :func:`render_recipe`. Every ResNet/MobileNet file under ``recipes/ilsvrc2012/`` is
rendered from :data:`EXPERIMENTS` (or the rivals' table) and :data:`NETS`; edit the table, then run
``python -m ttm_torchdistill.paper`` (``--check`` only compares). A test fails when a committed recipe
differs from what this module renders.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..methods import method_named
from .cifar100_blocks import CE_TERM, PLAIN_ROLES, logit_term

__all__ = ['EXPERIMENTS', 'NETS', 'NOT_REPORTED', 'RIVAL_PARAMS', 'Experiment', 'Net', 'header', 'render', 'render_all',
           'render_recipe']


@dataclass(frozen=True)
class Net:
    """One network: registry key and the name the comments give it; a teacher also has its torchvision
    weights enum (``IMAGENET1K_V1`` is loaded) and that checkpoint's top-1."""

    key: str
    name: str
    weights: str | None = None
    top1: float | None = None
    torchvision: bool = True  # False: built by this package (`ttm_torchdistill.models`), not torchvision

    @property
    def origin(self) -> str:
        """Where the network comes from, as the recipe's "Student:" line says it."""
        return f"torchvision's {self.name}" if self.torchvision else f"{self.name} (this package's `{self.key}`)"


@dataclass(frozen=True)
class Experiment:
    """One recipe: ``method`` (kd, ttm, wttm, dist or dkd; crd, reviewkd or itrd in :mod:`.imagenet_rivals`) on
    teacher -> student, the loss's values ((gamma, beta) for TTM/WTTM, (temperature, alpha) for KD; TTM and WTTM keep
    alpha 1; :data:`RIVAL_PARAMS` names DIST's and DKD's, ``imagenet_rivals.PARAMS`` the others'), the reported
    student top-1 and the table that reports it (:data:`NOT_REPORTED` and top-1 None where the paper has none)."""

    method: str
    teacher: str
    student: str
    params: tuple[float, ...]
    top1: float | None
    source: str

    @property
    def name(self) -> str:
        return f'ilsvrc2012/{self.method}/{self.student}_from_{self.teacher}'


NOT_REPORTED = 'not reported: the paper tunes no TTM on ImageNet'
RIVAL_PARAMS = {'dist': ('beta', 'gamma', 'tau'), 'dkd': ('alpha', 'beta', 'temperature', 'warmup_epochs')}
"""the names of an Experiment's ``params`` for DIST (ExactDISTLoss) and DKD (DKDLoss), in order"""

NETS = {n.key: n for n in (
    Net('resnet18', 'ResNet-18'),
    Net('resnet34', 'ResNet-34', 'torchvision.models.resnet.ResNet34_Weights', 73.31),
    Net('resnet50', 'ResNet-50', 'torchvision.models.resnet.ResNet50_Weights', 76.13),
    Net('resnet101', 'ResNet-101', 'torchvision.models.resnet.ResNet101_Weights', 77.37),
    Net('resnet152', 'ResNet-152', 'torchvision.models.resnet.ResNet152_Weights', 78.31),
    Net('mobilenet_v1', 'MobileNet v1', torchvision=False),
)}

EXPERIMENTS = (
    # Table 5: KD baseline with torchdistill's reference ImageNet settings (temperature 1, alpha 0.5)
    Experiment('kd', 'resnet50', 'mobilenet_v1', (1.0, 0.5), 70.50, 'Table 5'),
    Experiment('kd', 'resnet34', 'resnet18', (1.0, 0.5), 70.66, 'Table 5'),
    # no paper value: WTTM's gamma, beta from Eq. (19) with the KD baseline's lambda 0.5 (beta = T = 1 / gamma)
    Experiment('ttm', 'resnet50', 'mobilenet_v1', (0.7, 1.43), None, NOT_REPORTED),
    Experiment('ttm', 'resnet34', 'resnet18', (0.8, 1.25), None, NOT_REPORTED),
    # Table 5 with Table 10's (gamma, beta), then Table 7's better teachers of ResNet-18
    Experiment('wttm', 'resnet50', 'mobilenet_v1', (0.7, 3.5), 73.09, 'Table 5'),
    Experiment('wttm', 'resnet34', 'resnet18', (0.8, 1.6), 72.19, 'Table 5'),
    Experiment('wttm', 'resnet50', 'resnet18', (0.8, 1.6), 72.26, 'Table 7'),
    Experiment('wttm', 'resnet101', 'resnet18', (0.8, 1.6), 72.34, 'Table 7'),
    Experiment('wttm', 'resnet152', 'resnet18', (0.8, 1.6), 72.39, 'Table 7'),
    # Table 5's rivals, with their authors' ImageNet loss settings (DKD: warm-up 1 epoch, i.e. none)
    Experiment('dist', 'resnet50', 'mobilenet_v1', (2.0, 2.0, 1.0), 73.24, 'Table 5'),
    Experiment('dist', 'resnet34', 'resnet18', (2.0, 2.0, 1.0), 72.07, 'Table 5'),
    Experiment('dkd', 'resnet50', 'mobilenet_v1', (1.0, 2.0, 1.0, 1), 72.05, 'Table 5'),
    Experiment('dkd', 'resnet34', 'resnet18', (1.0, 0.5, 1.0, 1), 71.70, 'Table 5'),
)



def _num(value: float) -> str:
    """A YAML float that reads back as the same number (``1`` -> ``1.0``)."""
    return repr(float(value))


def _short(value: float) -> str:
    """A number as the comments write it (``1.0`` -> ``1``, ``1 / 0.7`` -> ``1.429``)."""
    return f'{round(value, 3):g}'


def _intro(exp: Experiment) -> str:
    """The recipe's first comment lines: what it runs, with which values, and what the paper reports."""
    t, s = NETS[exp.teacher], NETS[exp.student]
    if exp.method in RIVAL_PARAMS:
        values = dict(zip(RIVAL_PARAMS[exp.method], exp.params, strict=True))
        if exp.method == 'dist':
            what = ('# DIST (Huang et al., NeurIPS 2022) as its authors\' code computes it: cross entropy (weight 1)\n'
                    f'# plus ExactDISTLoss with beta {_short(values["beta"])}, gamma {_short(values["gamma"])}, tau '
                    f'{_short(values["tau"])} (DIST\'s ImageNet setting). Its intra-class term\n'
                    '# correlates each class over each GPU\'s batch (32 here), not gathered across GPUs, as in the\n'
                    '# authors\' code.\n')
        else:
            what = ('# DKD (Zhao et al., CVPR 2022) as its authors\' mdistiller computes it: cross entropy (weight 1)\n'
                    f'# plus DKDLoss with alpha {_short(values["alpha"])}, beta {_short(values["beta"])}, temperature '
                    f'{_short(values["temperature"])}, no warm-up (DKD\'s ImageNet setting for this pair).\n')
        return (f'# {exp.method.upper()}: {t.name} -> {s.name} on ImageNet (ILSVRC 2012), same schedule and data as '
                'WTTM.\n' + what +
                f'# The paper reports {exp.method.upper()} at {exp.top1:.2f} top-1 ({exp.source}), a number it copies '
                f'from the {exp.method.upper()}\n'
                '# paper, which trained with its own set-up (batch, learning rate, schedule); this recipe keeps\n'
                '# the WTTM recipe\'s set-up, so its result need not match that number.\n')
    a, b = (_short(v) for v in exp.params)
    if exp.method == 'kd':
        return (f'# KD baseline: {t.name} -> {s.name} on ImageNet (ILSVRC 2012), same schedule and data as WTTM.\n'
                f"# torchdistill's KDLoss with its reference ImageNet settings (temperature {a}, alpha {b});\n"
                f'# the paper reports KD at {exp.top1:.2f} top-1 for this pair ({exp.source}).\n')
    if exp.method == 'ttm':
        return (f'# TTM: {t.name} -> {s.name} on ImageNet (ILSVRC 2012).\n'
                "# The paper tunes no TTM on ImageNet (Table 5 reports KD and WTTM only). We keep WTTM's\n"
                f'# gamma {a} (T = {_short(1 / exp.params[0])}) and take beta from Eq. (19), '
                'beta = lambda / (1 - lambda) * T,\n'
                f"# with the KD baseline's lambda = 0.5: beta = T = {b}. "
                'An untuned starting point, not a reported result.\n')
    head = f'# WTTM: {t.name} -> {s.name} on ImageNet (ILSVRC 2012).\n'
    if exp.source == 'Table 5':
        return head + (f'# Zheng & Yang, ICLR 2024, Table 5 / Table 10: gamma {a}, beta {b}, alpha 1; '
                       f'reported student top-1 {exp.top1:.2f}.\n')
    return head + (f"# Zheng & Yang, ICLR 2024, {exp.source} (better teachers) with Table 10's gamma {a}, beta {b}, "
                   f'alpha 1;\n# reported student top-1 {exp.top1:.2f}.\n')


def header(exp: Experiment, intro: str) -> str:
    """The recipe's comment header: ``intro`` (what it runs, with which values, what the paper reports), then the
    schedule, data, models and how to run it, which every ImageNet recipe shares."""
    t, s, name = NETS[exp.teacher], NETS[exp.student], exp.name
    weights = t.weights.rsplit('.', 1)[-1]  # the enum's class name, e.g. ResNet34_Weights
    return intro + f"""\
#
# Standard torchdistill ImageNet settings: 100 epochs, SGD (momentum 0.9, weight decay 1e-4),
# lr 0.1 for a GLOBAL batch of 256, MultiStepLR at epochs 30/60/90 (x0.1).
# `train_data_loader.kwargs.batch_size` is PER PROCESS: this recipe assumes 8 GPUs x 32 = 256.
# For N GPUs keep 256 (batch_size = 256 / N), or scale the learning rate linearly:
# lr = 0.1 * (N * batch_size) / 256, e.g. `--set train.optimizer.kwargs.lr=0.2` for 8 x 64.
#
# Data: ImageFolder trees train/ and val/ under $ILSVRC2012_ROOT (default ~/datasets/ilsvrc2012).
# Teacher: torchvision's {weights}.IMAGENET1K_V1 weights ({t.top1:.2f} top-1), frozen, in eval mode.
# Student: {s.origin}, trained from scratch.
#
# Run:   torchrun --nproc_per_node=8 -m ttm_torchdistill train {name}
#   or, with torchdistill's example runner (unmodified; `dependencies` imports this plugin):
#        torchrun --nproc_per_node=8 examples/torchvision/image_classification.py \\
#          --config recipes/{name}.yaml --run_log log/{name.replace('/', '-')}.log --world_size 8
#
# Recipes are code: torchdistill's YAML tags (!import_call, !import_get, ...) import and call
# Python while the file loads. Run recipes you trust.
"""


def _paper_block(exp: Experiment) -> str:
    """The machine-readable reported top-1 (``ttm-distill table`` compares runs with it); null if none."""
    top1 = 'null' if exp.top1 is None else f'{exp.top1:.2f}'
    return f"paper:\n  top1: {top1}\n  source: 'Zheng & Yang, ICLR 2024, {exp.source}'\n"


_DATASETS = """\
datasets:
  &imagenet_train ilsvrc2012/train: !import_call
    _name: &dataset_name 'ilsvrc2012'
    _root: &root_dir !import_call
      key: 'os.getenv'
      init:
        args: ['ILSVRC2012_ROOT', '~/datasets/ilsvrc2012']
    key: 'torchvision.datasets.ImageFolder'
    init:
      kwargs:
        root: !pathjoin [*root_dir, 'train']
        transform: !import_call
          key: 'torchvision.transforms.Compose'
          init:
            kwargs:
              transforms:
                - !import_call
                  key: 'torchvision.transforms.RandomResizedCrop'
                  init:
                    kwargs:
                      size: &input_size [224, 224]
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
                      mean: [0.485, 0.456, 0.406]
                      std: [0.229, 0.224, 0.225]
  &imagenet_val ilsvrc2012/val: !import_call
    key: 'torchvision.datasets.ImageFolder'
    init:
      kwargs:
        root: !pathjoin [*root_dir, 'val']
        transform: !import_call
          key: 'torchvision.transforms.Compose'
          init:
            kwargs:
              transforms:
                - !import_call
                  key: 'torchvision.transforms.Resize'
                  init:
                    kwargs:
                      size: 256
                - !import_call
                  key: 'torchvision.transforms.CenterCrop'
                  init:
                    kwargs:
                      size: *input_size
                - !import_call
                  key: 'torchvision.transforms.ToTensor'
                  init:
                - !import_call
                  key: 'torchvision.transforms.Normalize'
                  init:
                    kwargs: *normalize_kwargs
"""

_TRAIN = """\
train:
  log_freq: 1000
  num_epochs: 100
  pre_epoch_process: 'pre_epoch_process_with_frozen_teacher'
  train_data_loader:
    dataset_id: *imagenet_train
{wrapper}    sampler:
      class_or_func: !import_get
        key: 'torch.utils.data.RandomSampler'
      kwargs:
    kwargs:
      batch_size: 32
      num_workers: 8
      pin_memory: True
      drop_last: False
    cache_output:
  val_data_loader:
    dataset_id: *imagenet_val
    sampler: &val_sampler
      class_or_func: !import_get
        key: 'torch.utils.data.SequentialSampler'
      kwargs:
    kwargs:
      batch_size: 128
      num_workers: 8
      pin_memory: True
      drop_last: False
{roles}  optimizer:
    key: 'SGD'
    kwargs:
      lr: 0.1
      momentum: 0.9
      weight_decay: 0.0001
  scheduler:
    key: 'MultiStepLR'
    kwargs:
      milestones: [30, 60, 90]
      gamma: 0.1
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
"""

_TEST = """\
test:
  test_data_loader:
    dataset_id: *imagenet_val
    sampler: *val_sampler
    kwargs:
      batch_size: 128
      num_workers: 8
      pin_memory: True
      drop_last: False
"""


def _term(exp: Experiment) -> str:
    """The sub-terms of the recipe's WeightedSumLoss: one loss, or cross entropy and DIST or DKD."""
    if exp.method in RIVAL_PARAMS:
        values = {k: v if k == 'warmup_epochs' else _num(v) for k, v in zip(RIVAL_PARAMS[exp.method], exp.params,
                                                                               strict=True)}
        return CE_TERM + logit_term(exp.method, method_named(exp.method).loss_key, values)
    first, second = (_num(v) for v in exp.params)
    values = {'temperature': first, 'alpha': second} if exp.method == 'kd' else {'gamma': first, 'beta': second,
                                                                                 'alpha': '1.0'}
    return logit_term(exp.method, method_named(exp.method).loss_key, {**values, 'reduction': "'batchmean'"})


def render_recipe(exp: Experiment, intro: str, terms: str, roles: str = PLAIN_ROLES, wrapper: str = '') -> str:
    """A recipe of ``exp``'s pair with the shared data, models, schedule and test: ``intro`` heads the comments
    (:func:`header`), ``terms`` are the sub-terms of its WeightedSumLoss, ``roles`` the teacher and student entries
    under ``train`` and ``wrapper`` the training loader's ``dataset_wrapper`` entry (none by default)."""
    t, s = NETS[exp.teacher], NETS[exp.student]
    return f"""{header(exp, intro)}
{_paper_block(exp)}
dependencies:
  - name: 'ttm_torchdistill'

{_DATASETS}
models:
  teacher_model:
    key: &teacher_model_key '{t.key}'
    _weights: &teacher_weights !import_get
      key: '{t.weights}'
    kwargs:
      num_classes: 1000
      weights: !getattr [*teacher_weights, 'IMAGENET1K_V1']
    src_ckpt:
  student_model:
    key: &student_model_key '{s.key}'
    kwargs:
      num_classes: 1000
    _experiment: &student_experiment !join [*dataset_name, '-', *student_model_key, '_from_', *teacher_model_key]
    src_ckpt:
    dst_ckpt: !join ['./resource/ckpt/ilsvrc2012/{exp.method}/', *student_experiment, '.pt']

{_TRAIN.format(wrapper=wrapper, roles=roles)}{terms}
{_TEST}"""


def render(exp: Experiment) -> str:
    """The recipe of one row of :data:`EXPERIMENTS`."""
    return render_recipe(exp, _intro(exp), _term(exp))


def render_all() -> dict[str, str]:
    """Every ImageNet recipe: path relative to ``recipes/`` -> YAML text."""
    return {f'{exp.name}.yaml': render(exp) for exp in EXPERIMENTS}
