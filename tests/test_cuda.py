"""The CUDA paths: recipes in fp32, bf16 + channels-last and fp16, placement, frozen teacher, resume, NCCL.

An ImageNet recipe (224 pixels) and a CIFAR-100 ``wttm_crd`` recipe (32 pixels) train for 16 iterations on generated
data in each mode, through ``run_train`` with the runner's Trainer watched through hooks: the losses are float32 under
autocast, the teacher stays in eval mode and gets no gradient, every module, buffer, optimizer state and CRD's memory
bank is on the GPU, inputs and weights are channels-last, batches come pinned, and under fp16 a forced gradient
overflow makes the GradScaler skip that step and halve its scale, and training goes on. Then ``test`` and ``calibrate``
run on CUDA, a non-finite loss stops a run, a run killed after one epoch and resumed equals an uninterrupted one (bit
for bit under tests/cuda_probe.py's deterministic settings; within rtol 1e-2, atol 1e-3 without them), and
``torchrun --nproc_per_node=1`` trains, also through NCCL.

Every test is marked ``cuda`` and skipped without a GPU, so CI stays green; benchmarks/gpu_check.sh runs them on one.
``TTM_CUDA_TESTS_ON_CPU=1`` runs them on the CPU instead (Gloo, GPU-only checks left out), to try the tests
themselves where no GPU is lent.
"""
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from itertools import chain

import pytest
import torch
from conftest import (
    FAST,
    TESTS,
    TINY,
    accept_generated_cifar,
    cli_env,
    make_cifar100,
    make_image_folder,
    ok,
    straight_and_resumed,
)
from torch import nn

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.errors import TrainingDiverged
from ttm_torchdistill.losses import TTMLoss
from ttm_torchdistill.runner import loop, run_test, run_train
from ttm_torchdistill.runner.checkpoint import last_ckpt_path
from ttm_torchdistill.runner.trainer import Trainer
from ttm_torchdistill.tools.calibrate import calibrate

GPU = os.environ.get('TTM_CUDA_TESTS_ON_CPU') != '1'
DEVICE = 'cuda' if GPU else 'cpu'
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(GPU and not torch.cuda.is_available(), reason='needs a CUDA GPU')]

IMAGENET = 'ilsvrc2012/wttm/resnet18_from_resnet34'
CRD = 'cifar100/wttm_crd/resnet20_from_resnet56'
CRD_LAST = last_ckpt_path('resource/ckpt/cifar100/wttm_crd/cifar100-resnet20_from_resnet56.pt')
MODES = {'fp32': {}, 'bf16-channels-last': {'amp': 'bf16', 'channels_last': True}, 'fp16': {'amp': 'fp16'}}
AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}
ITERATIONS, EVAL_IMAGES = 16, 8  # per epoch at FAST's batch of 4; validation and test images
PROBE = ['train.pre_epoch_process=probe_cuda_epoch', 'dependencies=[{name: ttm_torchdistill}, {name: cuda_probe}]']
DETERMINISTIC = {'TTM_TEST_DETERMINISTIC': '1', 'CUBLAS_WORKSPACE_CONFIG': ':4096:8'}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> dict:
    """64 training and 8 validation/test images per recipe; a TORCH_HOME holding random ResNet-34 weights under
    torchvision's file name; a random ResNet-56 teacher in the released CRD checkpoint format."""
    import torchvision
    from torchdistill.models.registry import get_model

    root = tmp_path_factory.mktemp('cuda_data')
    ckpts = root / 'torch_home/hub/checkpoints'
    ckpts.mkdir(parents=True)
    torch.manual_seed(0)
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    torch.save(torchvision.models.resnet34(num_classes=1000).state_dict(), ckpts / os.path.basename(weights.url))
    teacher = root / 'resnet56_vanilla.pth'
    torch.save({'model': get_model('resnet56', num_classes=100).state_dict(), 'epoch': 240}, teacher)
    return {'ILSVRC2012_ROOT': make_image_folder(root / 'ilsvrc2012', per_split={'train': 32, 'val': 4}),
            'CIFAR100_ROOT': make_cifar100(root / 'cifar100', train=64, test=EVAL_IMAGES),
            'TORCH_HOME': root / 'torch_home', 'teacher': teacher}


@pytest.fixture
def env(data, tmp_path, monkeypatch) -> dict:
    """The data's environment in this process and the ones it starts (the generated CIFAR files accepted)."""
    for key in ('ILSVRC2012_ROOT', 'TORCH_HOME'):
        monkeypatch.setenv(key, str(data[key]))
    accept_generated_cifar(monkeypatch, data['CIFAR100_ROOT'])
    monkeypatch.chdir(tmp_path)
    return data


def _overrides(recipe: str, data: dict, *extra: str) -> list[str]:
    teacher = [f'models.teacher_model.src_ckpt={data["teacher"]}'] if recipe == CRD else []
    return [*FAST, *teacher, *extra]


class Watched(Trainer):
    """The runner's Trainer, watched through hooks. Under fp16 the gradients of one iteration are made infinite: the
    first after an optimizer step, so the scale in use is one that works."""

    last = None

    def __init__(self, run) -> None:
        super().__init__(run)
        Watched.last = self
        self.seen = defaultdict(list)
        self.steps, self.forcing, self.forced, self.after_forced = 0, False, None, None
        self.teacher_before = None

    def begin_epoch(self, epoch: int, num_iters: int) -> None:
        if self.teacher_before is None:  # watched from the first epoch on (the pre-flight step runs before it)
            self._watch()
        super().begin_epoch(epoch, num_iters)

    def end_epoch(self, epoch: int, curves) -> None:
        super().end_epoch(epoch, curves)
        if epoch + 1 == self.box.num_epochs:
            self._trained()

    def _watch(self) -> None:
        run = self.run
        self.teacher_before = {k: v.clone() for k, v in run.teacher.state_dict().items()}
        self.box.optimizer.register_step_post_hook(self._stepped)
        run.teacher.register_forward_pre_hook(self._teacher_forward)
        run.student.register_forward_pre_hook(self._student_forward)
        terms = [term for term, _ in self.box.criterion.term_dict.values() if isinstance(term, nn.Module)]
        for loss in [m for term in terms for m in term.modules() if isinstance(m, TTMLoss)]:
            loss.register_forward_hook(self._ttm_loss, with_kwargs=True)
        self.box.criterion.register_forward_hook(lambda m, args, out: self.seen['loss_dtype'].append(out.dtype))
        fc = [m for m in run.student.modules() if isinstance(m, nn.Linear)][-1]
        fc.weight.register_hook(lambda grad: torch.full_like(grad, math.inf) if self.forcing else grad)

    def _stepped(self, optimizer, args, kwargs) -> None:
        self.steps += 1

    def _teacher_forward(self, module, args) -> None:
        self.seen['teacher'].append((module.training, torch.is_grad_enabled()))
        self.seen['teacher_input_channels_last'].append(args[0].is_contiguous(memory_format=torch.channels_last))

    def _snapshot(self) -> tuple:
        return self.scaler.get_scale(), self.steps, [p.detach().clone() for p in self.run.student.parameters()]

    def _student_forward(self, module, args) -> None:
        if not module.training:
            return  # validation
        self.seen['input_channels_last'].append(args[0].is_contiguous(memory_format=torch.channels_last))
        self.seen['autocast'].append(torch.is_autocast_enabled(DEVICE))
        self.seen['cudnn_benchmark'].append(torch.backends.cudnn.benchmark)
        if self.scaler is None:
            return
        if self.forcing:
            self.forcing, self.after_forced = False, self._snapshot()
        elif self.forced is None and self.steps > 0:
            self.forcing, self.forced = True, self._snapshot()

    def _ttm_loss(self, module, args, kwargs, output) -> None:
        student_io = args[0] if args else kwargs['student_io_dict']
        self.seen['logits_dtype'].append(student_io[module.student_module_path][module.student_module_io].dtype)
        self.seen['ttm_loss_dtype'].append(output.dtype)

    def _trained(self) -> None:
        teacher = self.teacher_before
        if self.forcing:  # the forced iteration was the last one
            self.forcing, self.after_forced = False, self._snapshot()
        self.teacher_changed = [k for k, v in self.run.teacher.state_dict().items() if not torch.equal(v, teacher[k])]
        self.placement = self._placement()
        self.not_channels_last = [n for n, p in chain(self.run.student.named_parameters(),
                                                      self.run.teacher.named_parameters())
                                  if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)]
        loader = self.box.train_data_loader
        self.pinned = GPU and loader.pin_memory and next(iter(loader))[0].is_pinned()

    def _placement(self) -> dict[str, str]:
        """Device type of every parameter and buffer of the models, their wrappers and the loss terms (CRD's memory
        bank), of the optimizer's state and of the GradScaler's scale."""
        box, run = self.box, self.run
        modules = [('teacher', run.teacher), ('student', run.student), ('box.teacher_model', box.teacher_model),
                   ('box.student_model', box.student_model), ('criterion', box.criterion)]
        modules += [(f'criterion.{name}', term) for name, (term, _) in box.criterion.term_dict.items()
                    if isinstance(term, nn.Module)]
        named = {f'{label}.{name}': t for label, module in modules
                 for name, t in chain(module.named_parameters(), module.named_buffers())}
        for i, state in enumerate(box.optimizer.state.values()):
            named.update({f'optimizer.state[{i}].{k}': v for k, v in state.items() if torch.is_tensor(v)})
        if self.scaler is not None:
            named['scaler._scale'] = self.scaler._scale  # GradScaler has no public accessor for the tensor
        return {name: t.device.type for name, t in named.items()}


def _skip_crd_fp16_on_cpu() -> None:
    if not GPU:
        pytest.skip("CPU autocast leaves CRDLoss's exp(score / 0.07) in float16, which overflows at once (CUDA "
                    'autocast runs exp in float32)')


def _check_forced_overflow(w: Watched) -> None:
    assert w.forced is not None and w.after_forced is not None, f'no step before the last iteration ({w.steps} steps)'
    (scale, steps, params), (scale_after, steps_after, params_after) = w.forced, w.after_forced
    assert steps_after == steps, 'the optimizer stepped on infinite gradients'
    assert all(torch.equal(a, b) for a, b in zip(params, params_after, strict=True))
    assert scale_after == scale * 0.5  # GradScaler's backoff factor
    assert w.steps > steps_after, 'no optimizer step after the overflow'
    assert all(torch.isfinite(p).all() for p in w.run.student.parameters())


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('recipe', [IMAGENET, CRD], ids=['imagenet', 'cifar100-wttm_crd'])
def test_a_recipe_trains_and_tests_on_the_device(recipe, mode, env, monkeypatch):
    if recipe == CRD and mode == 'fp16':
        _skip_crd_fp16_on_cpu()
    monkeypatch.setattr(loop, 'Trainer', Watched)
    Watched.last = None
    opts = dict(recipe=recipe, overrides=_overrides(recipe, env), device=DEVICE, seed=0, quiet=True, **MODES[mode])
    summary = run_train(RunDescription(**opts, summary='train.json'))
    w, amp, channels_last = Watched.last, AMP.get(MODES[mode].get('amp')), MODES[mode].get('channels_last', False)
    assert (summary['device'], summary['epochs_run'], summary['amp']) == (DEVICE, 1, MODES[mode].get('amp'))
    assert len(w.seen['autocast']) == len(w.box.train_data_loader) == ITERATIONS
    # autocast: the student's logits in the autocast dtype, the TTM loss and the total loss in float32
    assert set(w.seen['autocast']) == {amp is not None}
    assert set(w.seen['logits_dtype']) == {amp or torch.float32}
    assert set(w.seen['ttm_loss_dtype']) == {torch.float32}
    if GPU or recipe != CRD:  # CPU autocast keeps CRDLoss's exp in low precision, and its (1,)-shaped loss wins
        assert set(w.seen['loss_dtype']) == {torch.float32}
    # the teacher: eval mode and no autograd in every forward, no gradient, its batch-norm statistics unchanged
    assert set(w.seen['teacher']) == {(False, False)}
    assert all(p.grad is None for p in w.run.teacher.parameters())
    assert w.teacher_changed == []
    # placement: models, wrappers, loss terms (CRD's memory bank), optimizer state, scaler
    assert [name for name, device in w.placement.items() if device != DEVICE] == []
    if recipe == CRD:
        assert {'criterion.crd.memory_v1', 'criterion.crd.memory_v2'} <= set(w.placement)
    assert set(w.seen['input_channels_last']) == set(w.seen['teacher_input_channels_last']) == {channels_last}
    if channels_last:
        assert w.not_channels_last == []
    if GPU:
        assert w.pinned and set(w.seen['cudnn_benchmark']) == {True}
    if mode == 'fp16':
        _check_forced_overflow(w)
    # `test` on the device: the best checkpoint gives what the training run's test pass gave (an image at most apart:
    # another process's convolution algorithms)
    tested = run_test(RunDescription(**opts, summary='test.json'))
    assert tested['device'] == DEVICE and tested['kind'] == 'test'
    for role in ('teacher', 'student'):
        assert abs(tested[f'{role}_test_top1'] - summary[f'{role}_test_top1']) <= 100 / EVAL_IMAGES + 1e-9


@pytest.mark.parametrize('mode', ['fp32', 'bf16-channels-last'])
def test_calibrate_runs_the_teacher_on_the_device(mode, env):
    report = calibrate(RunDescription(recipe=IMAGENET, overrides=list(FAST), device=DEVICE, **MODES[mode]), split='val',
                       out_dir='cal')
    assert report['samples'] == EVAL_IMAGES
    assert all(math.isfinite(report[k]) for k in ('top1', 'nll', 'ece', 'temperature', 'nll_scaled'))
    if mode == 'fp32':  # the same teacher on the CPU (TF32 convolutions on the GPU: about 1e-3 apart)
        on_cpu = calibrate(RunDescription(recipe=IMAGENET, overrides=list(FAST), device='cpu'), split='val',
                           out_dir='cal_cpu')
        assert report['nll'] == pytest.approx(on_cpu['nll'], rel=0.02)


@pytest.mark.parametrize('mode', ['fp32', 'fp16'])
def test_a_non_finite_loss_stops_the_run(mode, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ['train.train_data_loader.sampler.class_or_func=!import_get {key: torch.utils.data.SequentialSampler}',
                 'datasets.blobs/train.init.kwargs.nan_from=8']  # the second batch of 8 is NaN
    with pytest.raises(TrainingDiverged, match=r'non-finite loss \(nan\) at epoch 1, iteration 2'):
        run_train(RunDescription(recipe=str(TINY), overrides=overrides, device=DEVICE, seed=0, quiet=True,
                                 **MODES[mode]))
    assert not (tmp_path / last_ckpt_path('ckpt/tiny/wttm/student.pt')).exists()


def _cli(args: list, cwd, env: dict, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(launcher or ['-m', 'ttm_torchdistill']), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _crd_args(data: dict, *extra: str) -> list[str]:
    sets = [a for o in _overrides(CRD, data, *PROBE, *extra) for a in ('--set', o)]
    return ['train', CRD, '--device', DEVICE, '--seed', '0', *sets]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _flat(obj, prefix='') -> dict:
    """The tensors and numbers of nested dicts and lists, by path."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f'{prefix}{key}.').items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in _flat(value, f'{prefix}{i}.').items()}
    return {prefix.rstrip('.'): obj} if torch.is_tensor(obj) or isinstance(obj, (int, float)) else {}


RESUME = {'deterministic': (DETERMINISTIC, []), 'deterministic-fp16': (DETERMINISTIC, ['--amp', 'fp16']),
          'default-settings': ({}, [])}


@pytest.mark.parametrize('setting', RESUME)
def test_killed_after_one_epoch_and_resumed_equals_an_uninterrupted_run(setting, data, tmp_path):
    """CRD trains the student, both embeddings and the memory bank: all of it, and the optimizer's and the GradScaler's
    state, must match. Bit for bit under the deterministic settings (tests/cuda_probe.py); under the runner's own
    (cudnn.benchmark, nondeterministic kernels, TF32 convolutions) within rtol 1e-2, atol 1e-3: rounding differences of
    32 steps, where a state not restored (memory bank, momentum, data order) is off by far more."""
    extra_env, flags = RESUME[setting]
    if flags:
        _skip_crd_fp16_on_cpu()
    args = [*_crd_args(data, 'train.num_epochs=2'), *flags]

    def env(name, **more):
        return cli_env(CIFAR100_ROOT=data['CIFAR100_ROOT'], TTM_TEST_OFFLINE_CIFAR=1,
                       CUDA_PROBE_LOG=tmp_path / f'{name}.jsonl', **extra_env, **more)

    def train(stage, folder):
        if stage != 'interrupted':
            return ok(_cli([*args, *(['--resume'] if stage == 'resumed' else [])], folder, env(stage)))
        result = _cli(args, folder, env('killed', CUDA_PROBE_KILL_AT_EPOCH=2))
        assert result.returncode == -9, result.stderr[-3000:]  # SIGKILL at the start of epoch 2
        assert torch.load(folder / CRD_LAST, map_location='cpu', weights_only=False)['epoch'] == 1
        return result

    a, b = straight_and_resumed(tmp_path, train, folders=('straight', 'killed')).load(CRD_LAST)
    assert a['epoch'] == b['epoch'] == 2 and set(a['aux']) == {'student_wrapper', 'teacher_wrapper', 'loss.crd'}
    assert (a['scaler'] is not None) == ('fp16' in flags)
    mine, theirs = (_flat({k: c[k] for k in ('model', 'aux', 'optimizer', 'scaler')}) for c in (a, b))
    assert mine.keys() == theirs.keys() and 'aux.loss.crd.memory_v1' in mine
    for key, value in mine.items():
        if not torch.is_tensor(value):
            assert value == theirs[key], key
        elif extra_env:
            assert torch.equal(value, theirs[key]), key
        else:
            torch.testing.assert_close(value, theirs[key], rtol=1e-2, atol=1e-3, msg=key)
    records = [r for name in ('straight', 'killed', 'resumed') for r in _records(tmp_path / f'{name}.jsonl')]
    assert len(records) == 2 + 1 + 1  # epochs started: 2, 1 (then killed) and 1 (epoch 2)
    assert {r['deterministic'] for r in records} == {bool(extra_env)}
    if GPU:
        assert {r['cudnn_benchmark'] for r in records} == {not extra_env}
    assert {d for r in records for d in r['devices']} == {f'{DEVICE}:0' if GPU else 'cpu'}


@pytest.mark.parametrize('launcher', ['torchrun', 'torchrun-nccl'])
def test_torchrun_with_one_process(launcher, data, tmp_path):
    """``torchrun --nproc_per_node=1`` trains on the GPU; the runner joins no process group for one process, so
    ``torchrun-nccl`` runs tests/cuda_probe.py, which joins it: NCCL, DDP (inside CRD's Linear4CRD), all-reduce,
    all-gather and barrier on one GPU."""
    torchrun = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1']
    target = ['-m', 'ttm_torchdistill'] if launcher == 'torchrun' else [str(TESTS / 'cuda_probe.py')]
    env = cli_env(CIFAR100_ROOT=data['CIFAR100_ROOT'], TTM_TEST_OFFLINE_CIFAR=1,
                  CUDA_PROBE_LOG=tmp_path / 'probe.jsonl')
    ok(_cli([*_crd_args(data), '--summary', 's.json'], tmp_path, env, launcher=[*torchrun, *target]))
    summary = json.loads((tmp_path / 's.json').read_text())
    assert (summary['world_size'], summary['device'], summary['epochs_run']) == (1, DEVICE, 1)
    assert summary['student_test_top1'] is not None
    (record,) = _records(tmp_path / 'probe.jsonl')
    backend = None if launcher == 'torchrun' else 'nccl' if GPU else 'gloo'
    assert (record['backend'], record['student_ddp']) == (backend, launcher != 'torchrun')
    assert record['devices'] == [f'{DEVICE}:0' if GPU else 'cpu'] and record['teacher_training'] is False
