"""The paper's vision-transformer run (DeiT III-Small -> DeiT-Tiny on ImageNet, Table 13) and its recipes.

Zheng & Yang (ICLR 2024), appendix A.9, Table 13: KD 76.01 and WTTM 77.03 top-1 for DeiT-Tiny distilled from
DeiT III-Small (student alone 74.42, teacher 82.76), with the DeiT-style training of the code the paper cites
(NKD / ViTKD). The paper does not publish WTTM's gamma and beta for this run; the recipe uses 0.8 and 1.6, its
ResNet ImageNet values (Table 10), and says so. :data:`RUNS` renders ``recipes/ilsvrc2012/ce/deit_tiny.yaml`` and
``recipes/ilsvrc2012/{kd,wttm}/deit_tiny_from_deit3_small.yaml``; edit the table, then run
``python -m ttm_torchdistill.paper``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cifar100_blocks import CE_TERM, logit_term  # the loss-term blocks the recipe families share

__all__ = ['RUNS', 'STUDENT', 'TEACHER', 'DeitRun', 'render', 'render_all']

SOURCE = 'Table 13 (appendix A.9)'
TEACHER = ('deit3_small_patch16_224.fb_in22k_ft_in1k', 'DeiT III-Small', 82.76)
"""timm name, name in the comments, top-1 the paper reports"""
STUDENT = ('deit_tiny_patch16_224', 'DeiT-Tiny', 'deit_tiny', 'deit3_small')
"""timm name, name in the comments, short names of student and teacher in the recipe files' names"""


@dataclass(frozen=True)
class DeitRun:
    """One recipe: ``method`` (ce, kd or wttm), the loss's two values ((temperature, alpha) for KD, (gamma,
    beta) for WTTM with alpha 1, none for CE) and the student top-1 of Table 13."""

    method: str
    params: tuple[float, float] | None
    top1: float

    @property
    def name(self) -> str:
        short = STUDENT[2] if self.method == 'ce' else f'{STUDENT[2]}_from_{STUDENT[3]}'
        return f'ilsvrc2012/{self.method}/{short}'


RUNS = (
    DeitRun('ce', None, 74.42),  # DeiT-Tiny alone, same schedule and data
    DeitRun('kd', (1.0, 0.5), 76.01),  # the cited code's KD: temperature 1, CE and KL weighted 0.5 / 0.5
    DeitRun('wttm', (0.8, 1.6), 77.03),  # gamma and beta not published for this run: Table 10's ResNet values
)


def _intro(run: DeitRun) -> str:
    teacher, student = TEACHER[1], STUDENT[1]
    if run.method == 'ce':
        return (f'# Cross entropy only: {student} trained alone on ImageNet (ILSVRC 2012), the CE baseline of the\n'
                f"# paper's vision-transformer run. Zheng & Yang, ICLR 2024, {SOURCE}: {student} alone\n"
                f'# {run.top1:.2f} top-1 (the distilled students: KD 76.01, WTTM 77.03).\n')
    if run.method == 'kd':
        return (f'# KD: {teacher} -> {student} on ImageNet (ILSVRC 2012), same schedule and data as WTTM.\n'
                f"# The cited code's KD: torchdistill's KDLoss with temperature {run.params[0]:g}, CE and KL\n"
                f'# weighted {run.params[1]:g} / {1 - run.params[1]:g}. Zheng & Yang, ICLR 2024, {SOURCE}: KD '
                f'{run.top1:.2f} top-1.\n')
    gamma, beta = run.params
    return (f'# WTTM: {teacher} -> {student} on ImageNet (ILSVRC 2012).\n'
            f'# Zheng & Yang, ICLR 2024, {SOURCE}: WTTM {run.top1:.2f} top-1 (KD 76.01, {student} alone 74.42).\n'
            "# The paper does NOT publish WTTM's gamma and beta for this run: this recipe uses gamma "
            f'{gamma:g}, beta {beta:g}, alpha 1,\n'
            '# its ResNet ImageNet values (Table 10), untuned for this pair. To tune them (validation only):\n'
            f'#   ttm-distill sweep {run.name} --grid gamma=0.6,0.8,1.0 \\\n'
            '#       --grid beta=1,1.6,3 --seeds 0 --set train.num_epochs=100 -o sweeps/deit_tiny\n')


def _header(run: DeitRun) -> str:
    teacher_line = '' if run.method == 'ce' else (
        f"# Teacher: timm's {TEACHER[0]} ({TEACHER[2]:.2f} top-1 in the paper),\n"
        "# frozen, in eval mode. `pretrained: True` gets timm's weights from the Hugging Face Hub (or its cache);\n"
        '# offline, give the weights file: --set models.teacher_model.kwargs.checkpoint=PATH (docs/recipes/deit.md,\n'
        '# "The teacher\'s weights, offline", says how to fetch it).\n')
    log = run.name.replace('/', '-')
    return _intro(run) + f"""\
#
# DeiT-style training of the cited code (NKD / ViTKD): 300 epochs, GLOBAL batch 1024, AdamW (lr 1e-3 =
# 5e-4 x 1024 / 512, betas 0.9 / 0.999, weight decay 0.05, none on norms, biases, cls token and position
# embeddings), 20 linear warm-up epochs then cosine to 1e-5, updated every iteration, gradients clipped at
# norm 5. Training data: RandomResizedCrop 224 (bicubic), flip, timm's RandAugment rand-m9-mstd0.5-inc1,
# RandomErasing p 0.25 (pixel mode), then Mixup 0.8 or CutMix 1.0 (one of the two per batch) and label
# smoothing 0.1; the losses get the mixed soft targets. No drop path, no EMA. Evaluation: Resize 256 and
# centre crop 224, bicubic.
# `train_data_loader.kwargs.batch_size` is PER PROCESS: this recipe assumes 8 GPUs x 128 = 1024. For another
# global batch B, scale the lr: lr = 5e-4 * B / 512, e.g. `--set train.optimizer.kwargs.lr=0.0005` for 8 x 64.
# The schedule counts an epoch's iterations from the dataset, the batch size and the number of processes.
#
# Data: ImageFolder trees train/ and val/ under $ILSVRC2012_ROOT (default ~/datasets/ilsvrc2012).
{teacher_line}# Student: timm's {STUDENT[0]}, trained from scratch. Needs timm: pip install 'ttm-torchdistill[timm]'.
#
# Run:   torchrun --nproc_per_node=8 -m ttm_torchdistill train {run.name} --amp bf16
#   or, with torchdistill's example runner (unmodified; `dependencies` imports this plugin):
#        torchrun --nproc_per_node=8 examples/torchvision/image_classification.py \\
#          --config recipes/{run.name}.yaml --run_log log/{log}.log --world_size 8
#
# Recipes are code: torchdistill's YAML tags (!import_call, !import_get, ...) import and call
# Python while the file loads. Run recipes you trust.
#
# Generated by `python -m ttm_torchdistill.paper` from the table in
# ttm_torchdistill/paper/deit.py: edit the table, not this file.
"""


_DATASETS = """\
datasets:
  &imagenet_train ilsvrc2012/train: &imagenet_train_set !import_call
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
          key: 'ttm_torchdistill.data.timm_transform'
          init:
            kwargs:
              input_size: &input_size 224
              is_training: True
              scale: [0.08, 1.0]
              hflip: 0.5
              interpolation: 'bicubic'
              auto_augment: 'rand-m9-mstd0.5-inc1'
              re_prob: 0.25
              re_mode: 'pixel'
              re_count: 1
              mean: &mean [0.485, 0.456, 0.406]
              std: &std [0.229, 0.224, 0.225]
  &imagenet_val ilsvrc2012/val: !import_call
    key: 'torchvision.datasets.ImageFolder'
    init:
      kwargs:
        root: !pathjoin [*root_dir, 'val']
        transform: !import_call
          key: 'ttm_torchdistill.data.timm_transform'
          init:
            kwargs:
              input_size: *input_size
              is_training: False
              interpolation: 'bicubic'
              crop_pct: 0.875
              mean: *mean
              std: *std
"""


def _models(run: DeitRun) -> str:
    if run.method == 'ce':
        return f"""\
models:
  model:
    key: 'timm_model'
    kwargs:
      name: &model_name '{STUDENT[0]}'
      pretrained: False
      num_classes: &num_classes 1000
      drop_path_rate: 0.0
      img_size: *input_size
    _experiment: &experiment !join [*dataset_name, '-', *model_name]
    src_ckpt:
    dst_ckpt: !join ['./resource/ckpt/ilsvrc2012/ce/', *experiment, '.pt']
"""
    return f"""\
models:
  teacher_model:
    key: 'timm_model'
    kwargs:
      name: &teacher_model_name '{TEACHER[0]}'
      pretrained: True
      checkpoint:
      num_classes: &num_classes 1000
      img_size: *input_size
    src_ckpt:
  student_model:
    key: 'timm_model'
    kwargs:
      name: &student_model_name '{STUDENT[0]}'
      pretrained: False
      num_classes: *num_classes
      drop_path_rate: 0.0
      img_size: *input_size
    _experiment: &student_experiment !join [*dataset_name, '-', *student_model_name, '_from_', *teacher_model_name]
    src_ckpt:
    dst_ckpt: !join ['./resource/ckpt/ilsvrc2012/{run.method}/', *student_experiment, '.pt']
"""


_LOADERS = """\
  train_data_loader:
    dataset_id: *imagenet_train
    sampler:
      class_or_func: !import_get
        key: 'torch.utils.data.RandomSampler'
      kwargs:
    collate_fn: !import_call
      key: 'ttm_torchdistill.data.mixup_cutmix_collate'
      init:
        kwargs:
          num_classes: *num_classes
          mixup_alpha: 0.8
          cutmix_alpha: 1.0
          label_smoothing: 0.1
    kwargs:
      batch_size: &batch_size 128
      num_workers: 8
      pin_memory: True
      drop_last: &drop_last False
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
"""

_ROLES = {
    'ce': """\
  model:
    forward_proc: 'forward_batch_only'
    adaptations:
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
    frozen_modules: []
""",
    'distill': """\
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
""",
}

_SCHEDULE = """\
  optimizer:
    key: 'adamw_no_decay_norm_bias_tokens'
    filters_params: False
    max_grad_norm: 5.0
    kwargs:
      lr: 0.001
      betas: [0.9, 0.999]
      eps: 1.0e-08
      weight_decay: 0.05
  scheduler:
    key: 'warmup_cosine_lr'
    scheduling_step: 1
    kwargs:
      iterations_per_epoch: !import_call
        key: 'ttm_torchdistill.data.iterations_per_epoch'
        init:
          kwargs:
            dataset: *imagenet_train_set
            batch_size: *batch_size
            drop_last: *drop_last
      num_epochs: *num_epochs
      warmup_epochs: 20
      warmup_start_factor: 0.001
      eta_min: 1.0e-05
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


def _term(run: DeitRun) -> str:
    if run.method == 'ce':
        return CE_TERM
    first, second = (repr(float(v)) for v in run.params)
    if run.method == 'kd':
        key, values = 'KDLoss', {'temperature': first, 'alpha': second}
    else:
        key, values = 'WTTMLoss', {'gamma': first, 'beta': second, 'alpha': '1.0'}
    return logit_term(run.method, key, {**values, 'reduction': "'batchmean'"})


def render(run: DeitRun) -> str:
    """The recipe of one row of :data:`RUNS`."""
    distill = run.method != 'ce'
    frozen = "  pre_epoch_process: 'pre_epoch_process_with_frozen_teacher'\n" if distill else ''
    return f"""{_header(run)}
paper:
  top1: {run.top1:.2f}
  source: 'Zheng & Yang, ICLR 2024, {SOURCE}'

dependencies:
  - name: 'ttm_torchdistill'

{_DATASETS}
{_models(run)}
train:
  log_freq: 500
  num_epochs: &num_epochs 300
{frozen}{_LOADERS}{_ROLES['distill' if distill else 'ce']}{_SCHEDULE}{_term(run)}
{_TEST}"""


def render_all() -> dict[str, str]:
    """The three DeiT recipes: path relative to ``recipes/`` -> YAML text."""
    return {f'{run.name}.yaml': render(run) for run in RUNS}
