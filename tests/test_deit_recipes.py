"""The DeiT III-S -> DeiT-Ti recipes (Table 13): their settings, and runs at reduced size through both runners."""
import math
import re
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401  (torchdistill's registries read torchvision.datasets when imported)
from conftest import RECIPES, ROOT, assert_same_state, ckpt_weights, straight_and_resumed, torchdistill_runner_models
from doc_blocks import hook
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box
from torchdistill.datasets.registry import get_collate_func
from torchdistill.losses.mid_level import KDLoss
from torchdistill.models.registry import get_model

from ttm_torchdistill.data import MixupCutmixCollate
from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.losses import WTTMLoss
from ttm_torchdistill.runner import run_train
from ttm_torchdistill.runner.checkpoint import last_ckpt_path
from ttm_torchdistill.runner.trainer import Trainer

timm = pytest.importorskip('timm')

CE, KD, WTTM = 'ilsvrc2012/ce/deit_tiny', 'ilsvrc2012/kd/deit_tiny_from_deit3_small', \
    'ilsvrc2012/wttm/deit_tiny_from_deit3_small'
TEACHER, STUDENT = 'deit3_small_patch16_224.fb_in22k_ft_in1k', 'deit_tiny_patch16_224'
PAPER = {CE: 74.42, KD: 76.01, WTTM: 77.03}
SIZE = 32  # the tests' input size (the recipes' is 224)
LR, ETA_MIN, START = 1e-3, 1e-5, 1e-3


def _small(epochs, warmup, teacher_ckpt=None, extra=()):
    """Reduced-size overrides: SIZE x SIZE inputs and models, batches of 4, no loader workers."""
    overrides = [f'datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.input_size={SIZE}',
                 f'train.num_epochs={epochs}', f'train.scheduler.kwargs.warmup_epochs={warmup}',
                 'train.train_data_loader.kwargs.batch_size=4', 'train.val_data_loader.kwargs.batch_size=4',
                 'test.test_data_loader.kwargs.batch_size=4', 'train.train_data_loader.kwargs.num_workers=0',
                 'train.val_data_loader.kwargs.num_workers=0', 'test.test_data_loader.kwargs.num_workers=0',
                 *extra]
    return overrides + ([f'models.teacher_model.kwargs.checkpoint={teacher_ckpt}'] if teacher_ckpt else [])


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory) -> Path:
    """Random DeiT III-Small weights at the tests' input size, in timm's bare state-dict format."""
    path = tmp_path_factory.mktemp('deit3') / 'deit3_small.pth'
    torch.manual_seed(0)
    torch.save(timm.create_model(TEACHER, img_size=SIZE, num_classes=1000).state_dict(), path)
    return path


@pytest.fixture
def imagenet(monkeypatch, tmp_path, image_root):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _expected_no_decay(names):
    return [n for n in names if n in ('cls_token', 'pos_embed') or n.endswith('.bias')
            or re.search(r'(^|\.)norm\d?\.weight$', n)]


def _lr(step, iterations, warmup):
    """The schedule the issue states: linear warm-up from START x LR, then cosine to ETA_MIN, per iteration."""
    if step < warmup:
        return LR * (START + (1 - START) * step / warmup)
    return ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * (step - warmup) / (iterations - warmup))) / 2


class Recorder:
    """Global hooks: every ViT forward (mode, grad, input, whether it has trainable parameters), every loss's
    targets, every optimizer step (lrs, groups, gradient norm) and every gradient clipping (max norm, norm
    before)."""

    def __init__(self, monkeypatch):
        self.forwards, self.targets, self.steps, self.clips = [], [], [], []
        self.handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._forward),
                        register_optimizer_step_pre_hook(self._step)]
        clip = torch.nn.utils.clip_grad_norm_

        def recording_clip(params, max_norm, *args, **kwargs):
            total = clip(params, max_norm, *args, **kwargs)
            self.clips.append((max_norm, float(total)))
            return total

        monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', recording_clip)

    def _forward(self, module, args):
        if type(module).__name__ == 'VisionTransformer':
            trainable = any(p.requires_grad for p in module.parameters())
            self.forwards.append((module, module.training, torch.is_grad_enabled(), args[0].detach().clone(),
                                  trainable))
        elif isinstance(module, (WTTMLoss, KDLoss)) and torch.is_grad_enabled():
            self.targets.append(args[2].detach().clone())
        elif isinstance(module, torch.nn.CrossEntropyLoss) and torch.is_grad_enabled():
            self.targets.append(args[1].detach().clone())

    def _step(self, optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g['params'] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.steps.append(([g['lr'] for g in optimizer.param_groups],
                           [(g['weight_decay'], [id(p) for p in g['params']]) for g in optimizer.param_groups],
                           float(norm)))

    def close(self):
        for handle in self.handles:
            handle.remove()

    def models(self, dim):
        found = {id(m): m for m, *_ in self.forwards if m.embed_dim == dim}
        assert len(found) == 1, found
        return next(iter(found.values()))


def _assert_soft_mixed_targets(targets, classes=(0, 1), eps=0.1, k=1000):
    """Label-smoothed one-hot targets mixed in pairs: every row sums to 1, eps/K everywhere, the rest on the
    image classes; some rows hold two classes (a Mixup or CutMix of two labels)."""
    mixed_rows = 0
    for t in targets:
        assert t.dtype == torch.float32 and t.shape[1] == k
        torch.testing.assert_close(t.sum(1), torch.ones(len(t)))
        assert t.min() >= eps / k - 1e-7
        above = t - eps / k
        assert above[:, list(classes)].sum(1).allclose(torch.full((len(t),), 1 - eps), atol=1e-5)
        mixed_rows += int(((above[:, list(classes)] > 1e-4).sum(1) == 2).sum())
    assert mixed_rows > 0


def test_recipe_settings(image_root, monkeypatch):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    for name, top1 in PAPER.items():
        text = (RECIPES / f'{name}.yaml').read_text()
        config = load_yaml_file(str(RECIPES / f'{name}.yaml'))
        method = name.split('/')[1]
        assert config['paper']['top1'] == top1 and 'Table 13' in config['paper']['source']
        assert config['dependencies'] == [{'name': 'ttm_torchdistill'}]
        models, train = config['models'], config['train']
        student = models['model' if method == 'ce' else 'student_model']
        assert student['key'] == 'timm_model' and student['kwargs'] == {
            'name': STUDENT, 'pretrained': False, 'num_classes': 1000, 'drop_path_rate': 0.0, 'img_size': 224}
        pair = 'deit_tiny_patch16_224' + ('' if method == 'ce' else f'_from_{TEACHER}')
        assert student['dst_ckpt'] == f'./resource/ckpt/ilsvrc2012/{method}/ilsvrc2012-{pair}.pt'
        if method != 'ce':
            assert models['teacher_model']['key'] == 'timm_model' and models['teacher_model']['kwargs'] == {
                'name': TEACHER, 'pretrained': True, 'checkpoint': None, 'num_classes': 1000, 'img_size': 224}
            assert train['teacher']['requires_grad'] is False
            assert train['pre_epoch_process'] == 'pre_epoch_process_with_frozen_teacher'
        assert train['num_epochs'] == 300
        loader = train['train_data_loader']
        assert loader['kwargs']['batch_size'] == 128 and '8 GPUs x 128 = 1024' in text
        assert 'lr = 5e-4 * B / 512' in text
        collate = get_collate_func(loader['collate_fn'])
        assert isinstance(collate, MixupCutmixCollate)
        assert (collate.num_classes, collate.mixup_alpha, collate.cutmix_alpha, collate.label_smoothing) == \
            (1000, 0.8, 1.0, 0.1)
        assert train['optimizer'] == {'key': 'adamw_no_decay_norm_bias_tokens', 'filters_params': False,
                                      'max_grad_norm': 5.0, 'kwargs': {'lr': 0.001, 'betas': [0.9, 0.999],
                                                                       'eps': 1e-08, 'weight_decay': 0.05}}
        assert train['scheduler'] == {'key': 'warmup_cosine_lr', 'scheduling_step': 1, 'kwargs': {
            'iterations_per_epoch': 1, 'num_epochs': 300, 'warmup_epochs': 20, 'warmup_start_factor': 0.001,
            'eta_min': 1e-05}}  # 8 training images in batches of 128: one iteration per epoch
        (term_name, term), = train['criterion']['kwargs']['sub_terms'].items()
        kwargs = term['criterion']['kwargs']
        if method == 'kd':
            assert term['criterion']['key'] == 'KDLoss' and (kwargs['temperature'], kwargs['alpha']) == (1.0, 0.5)
        elif method == 'wttm':
            assert term['criterion']['key'] == 'WTTMLoss'
            assert (kwargs['gamma'], kwargs['beta'], kwargs['alpha']) == (0.8, 1.6, 1.0)
            assert 'does NOT publish' in text and f'ttm-distill sweep {WTTM} --grid gamma=' in text
        else:
            assert term['criterion']['key'] == 'CrossEntropyLoss' and term['criterion_wrapper']['kwargs']['target']
        train_tf, val_tf = (config['datasets'][f'ilsvrc2012/{s}'].transform.transforms for s in ('train', 'val'))
        kinds = [type(t).__name__ for t in train_tf]
        assert kinds == ['RandomResizedCropAndInterpolation', 'RandomHorizontalFlip', 'RandAugment', 'MaybeToTensor',
                         'Normalize', 'RandomErasing']
        crop, flip, rand_augment, _, norm, erasing = train_tf
        assert crop.size == (224, 224) and crop.scale == (0.08, 1.0) and 'bicubic' in str(crop.interpolation).lower()
        assert flip.p == 0.5 and rand_augment.num_layers == 2 and len(rand_augment.ops) == 15
        assert {(op.magnitude, op.magnitude_std) for op in rand_augment.ops} == {(9, 0.5)}
        assert 'Increasing' in str(rand_augment)  # the "inc1" variant of the operations
        assert erasing.probability == 0.25 and erasing.mode == 'pixel'
        assert (erasing.min_count, erasing.max_count) == (1, 1)
        assert norm.mean.tolist() == pytest.approx([0.485, 0.456, 0.406])
        resize, center = val_tf[:2]
        assert resize.size == 256 and 'bicubic' in str(resize.interpolation).lower() and center.size == (224, 224)


def test_the_docs_page_lists_the_vision_transformer_recipes():
    """The vision-transformer page: its table (made from the recipes' table) and the commands it shows."""
    section = (ROOT / 'docs' / 'recipes' / 'deit.md').read_text()
    assert '<!-- table: deit -->' in section
    table = hook('paper_tables').deit_table()
    for name, top1 in PAPER.items():
        (row,) = [line for line in table.splitlines() if line.startswith(f'| `{name}` |')]
        assert row.endswith(f' | {top1:.2f} |')
    assert "pip install 'ttm-torchdistill[timm]'" in section and 'torchrun --nproc_per_node=8' in section
    assert 'models.teacher_model.kwargs.checkpoint=' in section and 'ttm-distill sweep' in section


def test_wttm_recipe_trains_with_mixed_targets_no_decay_groups_warmup_cosine_and_clipping(imagenet, teacher_ckpt,
                                                                                           monkeypatch):
    """3 epochs of 2 iterations (8 images, batches of 4), warm-up 1 epoch; clipping at 0.01 so that it acts."""
    recorder = Recorder(monkeypatch)
    try:
        summary = run_train(RunDescription(recipe=WTTM, device='cpu', seed=0, overrides=_small(
            3, 1, teacher_ckpt, ['train.optimizer.max_grad_norm=0.01'])))
    finally:
        recorder.close()
    assert summary['epochs_run'] == 3
    assert summary['teacher_test_top1'] is not None and summary['student_test_top1'] is not None
    teacher, student = recorder.models(384), recorder.models(192)
    # the learning rate of every step, per iteration: warm-up over 2 iterations, then cosine over 4
    lrs = [step[0] for step in recorder.steps]
    assert len(lrs) == 6
    for k, group_lrs in enumerate(lrs):
        assert group_lrs == pytest.approx([_lr(k, 6, 2)] * 2, rel=1e-9), k
    # two groups: weight decay 0.05 on weights, none on exactly the norms, biases, cls token and position embedding
    names = {id(p): n for n, p in student.named_parameters()}
    (decay_wd, decay_ids), (free_wd, free_ids) = recorder.steps[0][1]
    assert (decay_wd, free_wd) == (0.05, 0.0)
    assert [names[i] for i in free_ids] == _expected_no_decay(list(names.values()))
    assert sorted(names[i] for i in decay_ids) == sorted(set(names.values()) - set(_expected_no_decay(names.values())))
    # every step's gradients were clipped to norm 0.01 (they were larger)
    assert len(recorder.clips) == 6 and all(max_norm == 0.01 and before > 0.01 for max_norm, before in recorder.clips)
    assert all(norm <= 0.01 * (1 + 1e-4) for *_, norm in recorder.steps)
    # mixed soft targets reach the loss, and the teacher sees the same (mixed) images as the student, frozen
    assert len(recorder.targets) == 6
    _assert_soft_mixed_targets(recorder.targets)
    training = [f for f in recorder.forwards if f[0] is student and f[2]]
    assert len(training) == 6 and all(f[1] for f in training)
    for _, _, _, images, _ in training:
        seen = [f for f in recorder.forwards if f[0] is teacher and torch.equal(f[3], images)]
        assert seen and all(not mode and not grad and not trainable for _, mode, grad, _, trainable in seen)
    assert all(not m.training for m, *_ in recorder.forwards if m is teacher)
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize('name', [CE, KD])
def test_ce_and_kd_recipes_train_validate_and_test_through_the_runner(imagenet, teacher_ckpt, monkeypatch, name):
    recorder = Recorder(monkeypatch)
    try:
        summary = run_train(RunDescription(recipe=name, device='cpu', seed=0,
                                          overrides=_small(1, 0, None if name == CE else teacher_ckpt)))
    finally:
        recorder.close()
    assert summary['epochs_run'] == 1 and 0 <= summary['student_test_top1'] <= 100
    assert (summary['teacher_test_top1'] is None) == (name == CE)
    # per iteration: CE's targets, or KDLoss's and those of the cross entropy inside it
    assert len(recorder.targets) == (2 if name == CE else 4)
    assert len(recorder.clips) == 2 and recorder.clips[0][0] == 5.0
    _assert_soft_mixed_targets(recorder.targets)


class _Stop(Exception):
    pass


def test_resume_equals_an_uninterrupted_run(imagenet, teacher_ckpt, monkeypatch):
    overrides = _small(2, 1, teacher_ckpt)
    begin_epoch = Trainer.begin_epoch

    def stop_in_the_second_epoch(self, epoch, num_iters):
        if epoch == 1:
            raise _Stop
        return begin_epoch(self, epoch, num_iters)

    def train(stage, folder):
        description = RunDescription(recipe=KD, device='cpu', seed=5, overrides=overrides, test=False,
                                     resume=stage == 'resumed')
        if stage != 'interrupted':
            return run_train(description)
        with monkeypatch.context() as patched, pytest.raises(_Stop):
            patched.setattr(Trainer, 'begin_epoch', stop_in_the_second_epoch)
            run_train(description)

    runs = straight_and_resumed(imagenet, train)
    straight, resumed = runs.straight, runs.resumed
    best = Path(f'resource/ckpt/ilsvrc2012/kd/ilsvrc2012-{STUDENT}_from_{TEACHER}.pt')
    a, b = runs.load(last_ckpt_path(best))
    assert a['epoch'] == b['epoch'] == 2
    assert_same_state(a['model'], b['model'])
    assert a['lr_scheduler']['_last_lr'] == b['lr_scheduler']['_last_lr']
    assert_same_state(ckpt_weights(straight / best), ckpt_weights(resumed / best))


def test_kd_recipe_in_torchdistills_own_pipeline(imagenet, teacher_ckpt, tmp_path):
    """torchdistill's YAML loader, model builders and DistillationBox, as its example runner uses them."""
    text = (RECIPES / f'{KD}.yaml').read_text()
    for old, new in (('&input_size 224', f'&input_size {SIZE}'), ('&batch_size 128', '&batch_size 4'),
                     ('num_workers: 8', 'num_workers: 0'),
                     ('      checkpoint:\n', f'      checkpoint: {teacher_ckpt}\n')):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / 'kd.yaml'
    path.write_text(text)
    config = load_yaml_file(str(path))
    device = torch.device('cpu')
    teacher, student = torchdistill_runner_models(config, device)
    torch.testing.assert_close(teacher.state_dict()['pos_embed'], torch.load(teacher_ckpt)['pos_embed'])
    box = get_distillation_box(teacher, student, config['datasets'], config['train'], device, None, False, 1)
    assert config['train']['scheduler']['kwargs']['iterations_per_epoch'] == len(box.train_data_loader) == 2
    box.pre_epoch_process(epoch=0)
    assert not box.teacher_model.training and box.student_model.training
    lrs = []
    for images, targets, supp in box.train_data_loader:
        assert targets.shape == (4, 1000) and targets.dtype == torch.float32
        lrs.append(box.optimizer.param_groups[0]['lr'])
        loss = box.forward_process(images, targets, supp)
        box.post_forward_process(loss=loss)
        assert torch.isfinite(loss)
    assert lrs == pytest.approx([LR * START, LR * (START + (1 - START) / 40)])  # 20 warm-up epochs of 2 iterations
    assert box.optimizer.param_groups[0]['lr'] == pytest.approx(LR * (START + (1 - START) * 2 / 40))
    assert [g['weight_decay'] for g in box.optimizer.param_groups] == [0.05, 0.0] and box.max_grad_norm == 5.0
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    box.post_epoch_process()  # scheduling_step 1: the epoch end does not step the schedule again
    assert box.optimizer.param_groups[0]['lr'] == pytest.approx(LR * (START + (1 - START) * 2 / 40))
    student_model = get_model('timm_model', name=STUDENT, img_size=SIZE)
    assert student_model.state_dict().keys() == student.state_dict().keys()
