"""`ttm-distill train` and `ttm-distill test` on torchdistill's DistillationBox / TrainingBox."""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdistill.common.main_util import load_ckpt
from torchdistill.common.module_util import check_if_wrapped
from torchdistill.core.distillation import get_distillation_box
from torchdistill.core.training import get_training_box
from torchdistill.models.official import get_image_classification_model
from torchdistill.models.registry import get_model

from ..losses import TTMLoss
from . import recipe as recipes
from .checkpoint import atomic_save, last_ckpt_path, rng_state, set_rng_state
from .distributed import DistContext, all_gather_objects, all_reduce_sum, barrier, setup_distributed, teardown
from .errors import TrainingDiverged, UsageError
from .evaluate import build_eval_loader, evaluate
from .tensorboard import EpochWriter

__all__ = ['Run', 'RunOptions', 'Trainer', 'run_test', 'run_train', 'with_context']

logger = logging.getLogger('ttm_torchdistill.runner')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
PART_NAMES = TTMLoss.PART_NAMES
CHECK_EVERY = 50
"""iterations between checks for a non-finite loss (each one host synchronisation)"""


@dataclass
class RunOptions:
    recipe: str
    overrides: list[str] = field(default_factory=list)
    device: str | None = None
    run_log: str | None = None
    summary: str | None = None
    resume: bool = False
    seed: int | None = None
    amp: str | None = None
    channels_last: bool = False
    debug: bool = False
    quiet: bool = False
    """log warnings only (the demo runs many short trainings)"""
    test: bool = True
    """False skips the test pass (hyperparameter searches must not look at the test split)"""
    tensorboard: str | None = None
    """folder for TensorBoard per-epoch curves (needs the tensorboard package)"""


class Run:
    """Everything one command needs: context, recipe, models and output paths."""

    def __init__(self, opts: RunOptions, ctx: DistContext) -> None:
        self.opts, self.ctx = opts, ctx
        self.recipe_path = recipes.resolve_recipe(opts.recipe)
        overrides = recipes.parse_overrides(opts.overrides)
        if opts.seed is not None:
            seed_everything(opts.seed)
        self.config = recipes.load_recipe(self.recipe_path, overrides)
        for key in ('datasets', 'models', 'test'):
            if not isinstance(self.config.get(key), dict):
                raise UsageError(f'{self.recipe_path}: missing or empty top-level key {key!r}')
        models = self.config['models']
        self.teacher_config = models.get('teacher_model')
        self.student_key = 'student_model' if 'student_model' in models else 'model'
        self.student_config = models.get(self.student_key)
        if not isinstance(self.student_config, dict):
            raise UsageError(f'{self.recipe_path}: models needs a student_model (or model) entry')
        dst = self.student_config.get('dst_ckpt')
        if not dst:
            raise UsageError(f'{self.recipe_path}: models.{self.student_key}.dst_ckpt is required')
        self.best_ckpt = Path(dst).expanduser()
        self.last_ckpt = last_ckpt_path(self.best_ckpt)
        log_base = Path(opts.run_log).expanduser() if opts.run_log else self.best_ckpt
        self.metrics_path = log_base.with_name(log_base.stem + '.metrics.jsonl')
        self.amp_dtype = AMP_DTYPES.get(opts.amp) if opts.amp else None
        self.memory_format = torch.channels_last if opts.channels_last else torch.preserve_format
        self.teacher = self._build_model('teacher_model', self.teacher_config) if self.teacher_config else None
        self.student = self._build_model(self.student_key, self.student_config)

    @property
    def name(self) -> str:
        try:
            return self.recipe_path.resolve().relative_to(recipes.shipped_root().resolve()).with_suffix('').as_posix()
        except ValueError:
            return str(self.recipe_path)

    def _build_model(self, label: str, model_config: dict) -> nn.Module:
        key = model_config.get('key')
        where = f'{self.recipe_path}: models.{label}'
        kwargs = model_config.get('kwargs') or {}
        try:
            model = get_image_classification_model(dict(model_config, kwargs=kwargs), self.ctx.distributed)
            if model is None:
                model = get_model(key, model_config.get('repo_or_dir'), **kwargs)
        except ValueError as exc:
            if 'is not expected' in str(exc):
                raise UsageError(f'{where}.key: unknown model {key!r} (neither a torchvision model nor in '
                                 "torchdistill's model registry)") from None
            raise UsageError(f'{where}: {" ".join(str(exc).split())}') from None
        except (TypeError, OSError, RuntimeError) as exc:
            raise UsageError(f'{where}: cannot build {key!r}: {" ".join(str(exc).split())}') from None
        src = model_config.get('src_ckpt')
        if src:
            if not Path(src).expanduser().is_file():
                raise UsageError(f'{where}.src_ckpt: no file at {src}')
            load_ckpt(str(Path(src).expanduser()), model=model, strict=True)
        return model.to(self.ctx.device, memory_format=self.memory_format)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def test_loader(self):
        test_config = self.config['test'].get('test_data_loader')
        if not isinstance(test_config, dict):
            raise UsageError(f'{self.recipe_path}: test.test_data_loader is required')
        return build_eval_loader(self.config['datasets'], test_config, self.ctx, 'test.test_data_loader')

    def test(self) -> tuple[dict, float]:
        """Teacher and student (from the best checkpoint) on the test loader; also the checkpoint's best value."""
        if not self.best_ckpt.is_file():
            raise UsageError(f'no best checkpoint at {self.best_ckpt}: train the recipe first')
        best_value, _ = load_ckpt(str(self.best_ckpt), model=self.student, strict=True)
        loader = self.test_loader()
        results = {}
        for role, model in (('teacher', self.teacher), ('student', self.student)):
            if model is None:
                results[f'{role}_test_top1'] = results[f'{role}_test_top5'] = None
                continue
            acc = evaluate(model, loader, self.ctx.device, self.amp_dtype, self.opts.channels_last)
            results[f'{role}_test_top1'], results[f'{role}_test_top5'] = acc.top1, acc.top5
            logger.info('%s test: top-1 %.2f  top-5 %.2f  (%d images)', role, acc.top1, acc.top5, acc.samples)
        return results, best_value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _setup_logging(ctx: DistContext, run_log: str | None, append: bool, debug: bool, quiet: bool) -> None:
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if ctx.is_main and not quiet else logging.WARNING)
    fmt = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    handlers = [console]
    if run_log and ctx.is_main:
        path = Path(run_log).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode='a' if append else 'w'))
        handlers[-1].setFormatter(fmt)
    torchdistill_logger = logging.getLogger('torchdistill')
    torchdistill_logger.setLevel(logging.INFO if debug else logging.WARNING)
    for handler in handlers:
        logger.addHandler(handler)
        if debug:
            torchdistill_logger.addHandler(handler)


def _ttm_losses(criterion: nn.Module) -> list[TTMLoss]:
    """TTM/WTTM terms of a high-level loss (torchdistill keeps its terms in a plain dict)."""
    terms = [term for term, _ in getattr(criterion, 'term_dict', {}).values()]
    return [m for term in terms if isinstance(term, nn.Module) for m in term.modules() if isinstance(m, TTMLoss)]


def _fp16_step(box, loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
    """torchdistill's default post-forward process (accumulation, clipping, step-wise schedule) with a GradScaler."""
    box.stage_grad_count += 1
    scaler.scale(loss / box.grad_accum_step).backward()
    if box.stage_grad_count % box.grad_accum_step == 0:
        if box.max_grad_norm is not None:
            scaler.unscale_(box.optimizer)
            params = [p for group in box.optimizer.param_groups for p in group['params']]
            torch.nn.utils.clip_grad_norm_(params, box.max_grad_norm)
        scaler.step(box.optimizer)
        scaler.update()
        box.optimizer.zero_grad()
        if box.lr_scheduler is not None and box.scheduling_step and box.scheduling_step > 0 \
                and box.stage_grad_count % box.scheduling_step == 0:
            box.lr_scheduler.step()


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Trainer:
    def __init__(self, run: Run) -> None:
        self.run, self.ctx, self.opts = run, run.ctx, run.opts
        train_config = run.config.get('train')
        if not isinstance(train_config, dict):
            raise UsageError(f'{run.recipe_path}: missing or empty top-level key \'train\'')
        if any(k.startswith('stage') for k in train_config):
            raise UsageError(f'{run.recipe_path}: multi-stage recipes (train.stage1, ...) are not supported by '
                             "ttm-distill; run them with torchdistill's example runner")
        if self.opts.resume and not run.last_ckpt.is_file():
            raise UsageError(f'--resume: no checkpoint to resume from at {run.last_ckpt}')
        if not self.opts.resume and run.last_ckpt.is_file():
            raise UsageError(f'{run.last_ckpt} exists from an earlier run: pass --resume to continue it, or point '
                             f'models.{run.student_key}.dst_ckpt elsewhere with --set for a new run')
        self.log_freq = int(train_config.get('log_freq', 1000)) or 1000
        try:
            if run.teacher is None:
                self.box = get_training_box(run.student, run.config['datasets'], train_config, self.ctx.device,
                                            self._device_ids(), self.ctx.distributed, 1)
            else:
                self.box = get_distillation_box(run.teacher, run.student, run.config['datasets'], train_config,
                                                self.ctx.device, self._device_ids(), self.ctx.distributed, 1)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f'{run.recipe_path}: train: {type(exc).__name__}: {" ".join(str(exc).split())}') from None
        if self.box.train_data_loader is None:
            raise UsageError(f'{run.recipe_path}: train.train_data_loader.dataset_id is not a key of datasets')
        self.distill = run.teacher is not None
        self._wrap_student()
        val_config = train_config.get('val_data_loader')
        if not isinstance(val_config, dict):
            raise UsageError(f'{run.recipe_path}: train.val_data_loader is required')
        self.val_loader = build_eval_loader(run.config['datasets'], val_config, self.ctx, 'train.val_data_loader')
        self.scaler = torch.amp.GradScaler(self.ctx.device.type) if self.opts.amp == 'fp16' else None
        self.ttm_losses = _ttm_losses(self.box.criterion)
        self.start_epoch, self.best_val_top1 = 0, -math.inf
        self.curves = EpochWriter(self.opts.tensorboard) if self.opts.tensorboard and self.ctx.is_main else None

    def _device_ids(self) -> list[int] | None:
        return [self.ctx.device.index] if self.ctx.device.type == 'cuda' else None

    @property
    def model_attr(self) -> str:
        return 'student_model' if self.distill else 'model'

    def _wrap_student(self) -> None:
        """DDP on the student wherever torchdistill did not wrap it (it wraps on CUDA only)."""
        model = getattr(self.box, self.model_attr)
        trainable = any(p.requires_grad for p in model.parameters())
        if self.ctx.distributed and trainable and not check_if_wrapped(model):
            setattr(self.box, self.model_attr, DistributedDataParallel(model, device_ids=self._device_ids()))

    def _state(self, epoch: int) -> dict:
        box = self.box
        return {
            'model': self.run.student.state_dict(),
            'optimizer': box.optimizer.state_dict(),
            'lr_scheduler': box.lr_scheduler.state_dict() if box.lr_scheduler is not None else None,
            'scaler': self.scaler.state_dict() if self.scaler is not None else None,
            'epoch': epoch,
            'best_value': self.best_val_top1,
            'stage_grad_count': box.stage_grad_count,
            'recipe': str(self.run.recipe_path),
            'overrides': list(self.opts.overrides),
        }

    def resume(self) -> None:
        ckpt = torch.load(self.run.last_ckpt, map_location='cpu', weights_only=False)
        saved_world = len(ckpt['rng'])
        if saved_world != self.ctx.world_size:
            logger.warning('resuming a %d-process run with %d processes: data order and RNG streams differ',
                           saved_world, self.ctx.world_size)
        self.run.student.load_state_dict(ckpt['model'])
        self.box.optimizer.load_state_dict(ckpt['optimizer'])
        if self.box.lr_scheduler is not None and ckpt['lr_scheduler'] is not None:
            self.box.lr_scheduler.load_state_dict(ckpt['lr_scheduler'])
        if self.scaler is not None and ckpt['scaler'] is not None:
            self.scaler.load_state_dict(ckpt['scaler'])
        self.box.stage_grad_count = ckpt['stage_grad_count']
        self.start_epoch, self.best_val_top1 = ckpt['epoch'], ckpt['best_value']
        set_rng_state(ckpt['rng'][self.ctx.rank % saved_world])
        logger.info('resumed from %s after epoch %d (best val top-1 %.2f)', self.run.last_ckpt, self.start_epoch,
                    self.best_val_top1)

    def _check_finite(self, losses: torch.Tensor, first: int, end: int, epoch: int) -> None:
        """Average ``losses[first:end]`` over ranks in place and stop at the first non-finite one.

        Every rank checks the same rank-averaged values at the same iterations, so all stop together.
        """
        window = losses[first:end]
        all_reduce_sum(window).div_(self.ctx.world_size)
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            it = first + int(bad[0])
            last = self.run.last_ckpt
            raise TrainingDiverged(
                f'non-finite loss ({losses[it].item()}) at epoch {epoch + 1}, iteration {it + 1}: training stopped; '
                f'the last good checkpoint is kept' + (f' ({last})' if last.is_file() else '')
            )

    def train_epoch(self, epoch: int) -> dict:
        """One epoch. Losses and diagnostics stay on the device; the host waits for them only every
        CHECK_EVERY iterations and at log lines, so it keeps queueing work ahead of the GPU."""
        box, ctx, run = self.box, self.ctx, self.run
        loader = box.train_data_loader
        num_iters = len(loader)
        losses = torch.zeros(num_iters, dtype=torch.float32, device=ctx.device)
        part_sums = torch.zeros(len(PART_NAMES), dtype=torch.float64, device=ctx.device)
        images_seen = images_since_log = checked = logged = 0
        start = last_log = time.perf_counter()
        for it, (images, targets, supp_dict) in enumerate(loader):
            images = images.to(ctx.device, non_blocking=True, memory_format=run.memory_format)
            targets = targets.to(ctx.device, non_blocking=True)
            with run.autocast():
                loss = box.forward_process(images, targets, supp_dict)
            losses[it] = loss.detach()
            if self.scaler is not None:
                _fp16_step(box, loss, self.scaler)
            else:
                box.post_forward_process(loss=loss)
            if self.ttm_losses:
                part_sums += self.ttm_losses[0].last_part_means()
            images_seen += len(images)
            images_since_log += len(images)
            done = it + 1
            log_now = done % self.log_freq == 0 or done == num_iters
            if log_now or done - checked >= CHECK_EVERY:
                self._check_finite(losses, checked, done, epoch)
                checked = done
            if log_now:
                now = time.perf_counter()
                rate = images_since_log * ctx.world_size / max(now - last_log, 1e-9)
                eta = (now - start) / done * (num_iters - done)
                logger.info('epoch %d/%d [%d/%d] eta %s  loss %.4f  lr %.5g  img/s %.1f', epoch + 1, box.num_epochs,
                            done, num_iters, _eta(eta), losses[logged:done].mean().item(),
                            box.optimizer.param_groups[0]['lr'], rate)
                last_log, images_since_log, logged = now, 0, done
        seconds = time.perf_counter() - start
        stats = {
            'train_loss': losses.mean().item(),
            'lr': box.optimizer.param_groups[0]['lr'],
            'train_images_per_s': images_seen * ctx.world_size / seconds,
            'train_s': seconds,
        }
        if self.ttm_losses:
            means = all_reduce_sum(part_sums).div_(num_iters * ctx.world_size).tolist()
            stats.update(zip(PART_NAMES, means, strict=True))
        return stats

    def fit(self) -> tuple[int, float]:
        """Train from ``start_epoch``; returns (epochs run, mean train images/s)."""
        box, run, ctx = self.box, self.run, self.ctx
        epochs_run, rates = 0, []
        for epoch in range(self.start_epoch, box.num_epochs):
            box.pre_epoch_process(epoch=epoch)
            if self.distill and not box.teacher_updatable:
                box.teacher_model.eval()
            stats = self.train_epoch(epoch)
            val = evaluate(run.student, self.val_loader, ctx.device, run.amp_dtype, self.opts.channels_last)
            improved = val.top1 > self.best_val_top1
            box.post_epoch_process()
            if improved:
                self.best_val_top1 = val.top1
            rngs = all_gather_objects(rng_state())
            if ctx.is_main:
                state = self._state(epoch + 1)
                if improved:
                    atomic_save(state, run.best_ckpt)
                atomic_save(dict(state, rng=rngs), run.last_ckpt)
                record = {'epoch': epoch + 1, **stats, 'val_top1': val.top1, 'val_top5': val.top5}
                with run.metrics_path.open('a') as f:
                    f.write(json.dumps(dict(record, recipe=run.name)) + '\n')
                if self.curves is not None:
                    self.curves.log(record)
            barrier()
            logger.info('epoch %d/%d  val top-1 %.2f  top-5 %.2f  (best %.2f%s)  train loss %.4f  %.1f img/s',
                        epoch + 1, box.num_epochs, val.top1, val.top5, self.best_val_top1,
                        ', saved' if improved else '', stats['train_loss'], stats['train_images_per_s'])
            if self.ttm_losses:
                logger.info('epoch %d/%d  diagnostics: student entropy %.4f  D(p_hat||q) %.4f  U_gamma %.4f  CE %.4f',
                            epoch + 1, box.num_epochs, stats['student_entropy'], stats['divergence'],
                            stats['u_gamma'], stats['cross_entropy'])
            epochs_run += 1
            rates.append(stats['train_images_per_s'])
        if self.curves is not None:
            self.curves.close()
        return epochs_run, (sum(rates) / len(rates) if rates else math.nan)


def _report(run: Run, results: dict, wall_s: float, extra: dict) -> dict:
    summary = {
        'recipe': run.name,
        'world_size': run.ctx.world_size,
        'device': run.ctx.device.type,
        **extra,
        **results,
        'wall_s': wall_s,
        'best_ckpt': str(run.best_ckpt),
        'last_ckpt': str(run.last_ckpt),
        'metrics': str(run.metrics_path.resolve()),
        'amp': run.opts.amp,
        'channels_last': run.opts.channels_last,
        'seed': run.opts.seed,
        'overrides': list(run.opts.overrides),
        'paper_top1': (run.config.get('paper') or {}).get('top1'),
    }

    def fmt(value):
        return 'n/a' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.2f}'

    lines = [f'== {run.name} ==']
    if 'best_val_top1' in summary:
        lines.append(f'best val top-1    {fmt(summary["best_val_top1"])}')
    for role in ('teacher', 'student'):
        top1, top5 = results[f'{role}_test_top1'], results[f'{role}_test_top5']
        lines.append(f'{role} test  top-1 {fmt(top1)}  top-5 {fmt(top5)}')
    lines.append(f'wall time {_eta(wall_s)}; best checkpoint {run.best_ckpt}')
    for line in lines:
        logger.info(line)
    if run.opts.summary and run.ctx.is_main:
        path = Path(run.opts.summary).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def with_context(opts: RunOptions, body) -> dict:
    ctx = setup_distributed(opts.device)
    try:
        _setup_logging(ctx, opts.run_log, append=opts.resume, debug=opts.debug, quiet=opts.quiet)
        return body(ctx)
    finally:
        teardown()


def run_train(opts: RunOptions) -> dict:
    """Train with validation every epoch, keep the best checkpoint, then test teacher and student."""
    def body(ctx: DistContext) -> dict:
        start = time.perf_counter()
        run = Run(opts, ctx)
        trainer = Trainer(run)
        if opts.resume:
            trainer.resume()
        elif opts.seed is not None:
            seed_everything(opts.seed + ctx.rank)  # per-rank augmentation streams after identical model init
        logger.info('training %s on %d process(es), device %s, %d epochs', run.name, ctx.world_size,
                    ctx.device.type, trainer.box.num_epochs)
        epochs_run, rate = trainer.fit()
        trainer.box.clean_modules()
        skipped = {f'{role}_test_top{k}': None for role in ('teacher', 'student') for k in (1, 5)}
        results = run.test()[0] if opts.test else skipped
        extra = {'epochs_run': epochs_run, 'best_val_top1': trainer.best_val_top1, 'train_images_per_s': rate}
        return _report(run, results, time.perf_counter() - start, extra)

    return with_context(opts, body)


def run_test(opts: RunOptions) -> dict:
    """Evaluate the teacher and the best student checkpoint on the recipe's test loader."""
    def body(ctx: DistContext) -> dict:
        start = time.perf_counter()
        run = Run(opts, ctx)
        results, best_value = run.test()
        return _report(run, results, time.perf_counter() - start, {'best_val_top1': best_value})

    return with_context(opts, body)

