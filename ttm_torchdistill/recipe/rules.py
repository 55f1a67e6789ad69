"""The rules a recipe's runner keys follow, checked on the recipe document before anything is built.

RULES maps key paths to what they accept; each part of a path is a pattern (``*`` matches any key
of a mapping or any index of a list, ``*_module_path`` any such key). :meth:`RecipeDocument.validate`
checks the keys that are present; a value is constructed from its node alone, so datasets are never built
there. The losses' own hyperparameters (gamma, beta, ...) are left to the losses, which check them when they
are built; the keys of torchdistill's losses and wrappers that the shipped recipes use and that check nothing
(CRD's, knowledge review's, RKDLoss's factors, the feature pairs' paths and io), the student wrappers' sizes, and
a temperature, which is > 0 for every loss, are checked here.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torchdistill.core.interfaces import registry as processes
from torchdistill.datasets.registry import DATASET_WRAPPER_DICT
from torchdistill.losses import registry as losses
from torchdistill.models.registry import AUXILIARY_MODEL_WRAPPER_DICT
from torchdistill.optim.registry import OPTIM_DICT, SCHEDULER_DICT

__all__ = ['LOADERS', 'REQUIRED', 'RULES', 'Required', 'Rule']


@dataclass(frozen=True)
class Rule:
    accepts: Callable[[object], bool]
    expected: str


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), rule.expected + ' (or null)')


COUNT = Rule(lambda v: _int(v) and v >= 1, 'an integer >= 1')
BATCH = Rule(lambda v: _int(v) and 1 <= v <= 2 ** 31 - 1, 'an integer >= 1 and <= 2147483647')
INDEX = Rule(lambda v: _int(v) and v >= 0, 'an integer >= 0')
POSITIVE = Rule(lambda v: _number(v) and v > 0, 'a number > 0')
NON_NEGATIVE = Rule(lambda v: _number(v) and v >= 0, 'a number >= 0')
NUMBER = Rule(_number, 'a finite number')
FLAG = Rule(lambda v: isinstance(v, bool), 'true or false')
NAME = Rule(lambda v: isinstance(v, str) and v.strip() != '', 'a non-empty string')
PATH = _optional(NAME)
def _one_of(*values: str) -> Rule:
    return Rule(lambda v: v in values, 'one of ' + ', '.join(map(repr, values)))


def _registered(kind: str, *tables: dict) -> Rule:
    """A name in torchdistill's registries (read when checked: plugins register while the recipe loads)."""
    return Rule(lambda v: isinstance(v, str) and any(v in t for t in tables), f'the name of a registered {kind}')


MAPPING = Rule(lambda v: v is None or isinstance(v, dict), 'a mapping of keyword arguments (or null)')
IO = _one_of('input', 'output')
FRACTION = Rule(lambda v: _number(v) and 0 <= v <= 1, 'a number from 0 to 1')
EPOCHS = Rule(lambda v: isinstance(v, list) and all(_int(e) and e >= 0 for e in v),
              'a list of integers >= 0, e.g. [30, 60, 90]')
SIZES = Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(_int(e) and e >= 1 for e in v),
             'a non-empty list of integers >= 1, e.g. [1, 7, 14, 28, 56]')
POOLED_SIZES = Rule(lambda v: isinstance(v, list) and all(_int(e) and e >= 1 for e in v),
                    'a list of integers >= 1, e.g. [4, 2, 1]')


LOADER_RULES = {
    'dataset_id': NAME,
    'kwargs.batch_size': BATCH,
    'kwargs.num_workers': INDEX,
    'kwargs.pin_memory': FLAG,
    'kwargs.drop_last': FLAG,
    'kwargs.shuffle': FLAG,
    'kwargs.persistent_workers': FLAG,
    'kwargs.prefetch_factor': _optional(COUNT),
    'kwargs.timeout': NON_NEGATIVE,
    'sampler.kwargs': MAPPING,
    'cache_output': PATH,
    'dataset_wrapper.key': _registered('dataset wrapper', DATASET_WRAPPER_DICT),
    'dataset_wrapper.kwargs.num_negative_samples': COUNT,
    'dataset_wrapper.kwargs.mode': _one_of('exact', 'relax'),
    'dataset_wrapper.kwargs.ratio': FRACTION,
}
TERM = 'train.criterion.kwargs.sub_terms.*'
VID_REGRESSORS = 'train.*.auxiliary_model_wrapper.kwargs.regressors.*'
LOADERS = ('train.train_data_loader', 'train.val_data_loader', 'test.test_data_loader')

RULES: dict[str, Rule] = {
    'models.*.key': NAME,
    'models.*.kwargs.num_classes': COUNT,
    'models.*.src_ckpt': PATH,
    'models.*.dst_ckpt': PATH,
    'train.num_epochs': COUNT,
    'train.log_freq': COUNT,
    'train.pre_epoch_process': _registered('pre-epoch process', processes.PRE_EPOCH_PROC_FUNC_DICT),
    'train.pre_forward_process': _registered('pre-forward process', processes.PRE_FORWARD_PROC_FUNC_DICT),
    'train.post_forward_process': _registered('post-forward process', processes.POST_FORWARD_PROC_FUNC_DICT),
    'train.post_epoch_process': _registered('post-epoch process', processes.POST_EPOCH_PROC_FUNC_DICT),
    'train.*.forward_proc': _registered('forward process', processes.FORWARD_PROC_FUNC_DICT),
    'train.*.requires_grad': FLAG,
    'train.*.wrapper': _optional(_one_of('DistributedDataParallel', 'DataParallel')),
    'train.*.adaptations': MAPPING,
    'train.*.auxiliary_model_wrapper.key': _registered('auxiliary model wrapper', AUXILIARY_MODEL_WRAPPER_DICT),
    'train.*.auxiliary_model_wrapper.kwargs.*_module_path': NAME,
    'train.*.auxiliary_model_wrapper.kwargs.linear_kwargs.*_features': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.linear_kwargs.bias': FLAG,
    'train.*.auxiliary_model_wrapper.kwargs.power': POSITIVE,
    'train.*.auxiliary_model_wrapper.kwargs.*_module_io': IO,
    'train.*.auxiliary_model_wrapper.kwargs.*_channels': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.*_size': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.init_pred_var': POSITIVE,
    'train.*.auxiliary_model_wrapper.kwargs.eps': POSITIVE,
    f'{VID_REGRESSORS}.input_module_path': NAME,
    f'{VID_REGRESSORS}.input_module_io': IO,
    f'{VID_REGRESSORS}.*_channels': COUNT,
    f'{VID_REGRESSORS}.out_size': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.*_features': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.abfs': Rule(lambda v: isinstance(v, list) and len(v) > 0,
                                                        'a non-empty list of fusion entries (path, io, kwargs)'),
    'train.*.auxiliary_model_wrapper.kwargs.abfs.*.path': NAME,
    'train.*.auxiliary_model_wrapper.kwargs.abfs.*.io': _one_of('input', 'output'),
    'train.*.auxiliary_model_wrapper.kwargs.abfs.*.kwargs.*_channels': COUNT,
    'train.*.auxiliary_model_wrapper.kwargs.sizes': SIZES,
    'train.optimizer.key': _registered('optimizer (torch.optim)', OPTIM_DICT),
    'train.optimizer.kwargs.lr': POSITIVE,
    'train.optimizer.kwargs.momentum': NON_NEGATIVE,
    'train.optimizer.kwargs.dampening': NUMBER,
    'train.optimizer.kwargs.weight_decay': NON_NEGATIVE,
    'train.optimizer.kwargs.nesterov': FLAG,
    'train.optimizer.kwargs.eps': POSITIVE,
    'train.optimizer.grad_accum_step': COUNT,
    'train.optimizer.max_grad_norm': _optional(POSITIVE),
    'train.optimizer.filters_params': FLAG,
    'train.scheduler.key': _registered('scheduler (torch.optim.lr_scheduler)', SCHEDULER_DICT),
    'train.scheduler.kwargs.milestones': EPOCHS,
    'train.scheduler.kwargs.gamma': POSITIVE,
    'train.scheduler.kwargs.step_size': COUNT,
    'train.scheduler.kwargs.T_max': COUNT,
    'train.scheduler.kwargs.eta_min': NON_NEGATIVE,
    'train.scheduler.scheduling_step': INDEX,
    'train.criterion.key': _registered('high-level loss', losses.HIGH_LEVEL_LOSS_DICT),
    f'{TERM}.weight': NON_NEGATIVE,
    f'{TERM}.criterion.key': _registered('loss', losses.MIDDLE_LEVEL_LOSS_DICT, losses.LOW_LEVEL_LOSS_DICT,
                                         losses.LOSS_DICT),
    f'{TERM}.criterion.kwargs.*_module_path': NAME,
    f'{TERM}.criterion.kwargs.*_module_io': IO,
    f'{TERM}.criterion.kwargs.*_output_path': NAME,
    f'{TERM}.criterion.kwargs.*_pairs.*.*.path': NAME,
    f'{TERM}.criterion.kwargs.*_pairs.*.*.io': IO,
    f'{TERM}.criterion.kwargs.*_pairs.*.weight': NON_NEGATIVE,
    f'{TERM}.criterion.kwargs.p': POSITIVE,
    f'{TERM}.criterion.kwargs.dist_factor': NON_NEGATIVE,
    f'{TERM}.criterion.kwargs.angle_factor': NON_NEGATIVE,
    f'{TERM}.criterion.kwargs.reduction': _one_of('mean', 'sum', 'batchmean', 'none'),
    f'{TERM}.criterion.kwargs.eps': POSITIVE,
    f'{TERM}.criterion.kwargs.momentum': FRACTION,
    f'{TERM}.criterion.kwargs.*_size': COUNT,
    f'{TERM}.criterion.kwargs.num_*samples': COUNT,
    f'{TERM}.criterion.kwargs.temperature': _optional(POSITIVE),
    f'{TERM}.criterion.kwargs.output_sizes': POOLED_SIZES,
    f'{TERM}.criterion_wrapper.key': _registered('loss wrapper', losses.LOSS_WRAPPER_DICT),
    f'{TERM}.criterion_wrapper.kwargs.*.io': NAME,
    f'{TERM}.criterion_wrapper.kwargs.*.module_path': NAME,
    f'{TERM}.criterion_wrapper.kwargs.*.is_from_teacher': FLAG,
    f'{TERM}.criterion_wrapper.kwargs.*.uses_label': FLAG,
    **{f'{loader}.{key}': rule for loader in LOADERS for key, rule in LOADER_RULES.items()},
}


@dataclass(frozen=True)
class Required:
    """A key a command needs before anything is built: a non-empty mapping (or a value, ``mapping=False``) at ``path``
    (``{student}``: the student's entry, ``student_model`` or a plain training recipe's ``model``)."""

    path: str
    commands: tuple[str, ...]
    mapping: bool = True
    tested: bool = False
    """needed by ``train`` only with its test pass (not with --no-test)"""

    def message(self, student: str) -> str:
        path = self.path.format(student=student)
        if '.' not in path:
            return f'missing or empty top-level key {path!r}'
        if path == f'models.{student}':
            return 'models needs a student_model (or model) entry'
        return f'{path} is required'


COMMANDS = ('train', 'test', 'calibrate')
REQUIRED = (
    Required('datasets', COMMANDS), Required('models', COMMANDS), Required('test', COMMANDS),
    Required('models.{student}', COMMANDS), Required('models.{student}.dst_ckpt', COMMANDS, mapping=False),
    Required('train', ('train',)), Required('train.train_data_loader', ('train',)),
    Required('train.val_data_loader', ('train',)), Required('test.test_data_loader', ('train', 'test'), tested=True),
)
"""the keys each command needs, in the order they are checked"""
