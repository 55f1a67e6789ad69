"""`ttm-distill train` and `ttm-distill test` on torchdistill's DistillationBox / TrainingBox."""
from __future__ import annotations

import contextlib
import dataclasses
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
from torchdistill.common.module_util import check_if_wrapped
from torchdistill.models.official import get_image_classification_model
from torchdistill.models.registry import get_model

from ..losses import TTMLoss
from . import recipe as recipes
from .build import build_box, recipe_part
from .checkpoint import (
    atomic_save,
    atomic_write,
    last_ckpt_path,
    load_checkpoint,
    load_model_state,
    model_state,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from .datafiles import guard_datasets
from .distributed import DistContext, all_gather_objects, all_reduce_sum, barrier, setup_distributed, teardown
from .errors import DataFileError, TrainingDiverged, UsageError, one_line
from .evaluate import build_eval_loader, evaluate
from .lock import acquire_run_lock
from .tensorboard import EpochWriter
from .tensorboard import require as require_tensorboard
from .validate import check_output_folder

__all__ = ['Run', 'RunOptions', 'Trainer', 'run_test', 'run_train', 'with_context']

logger = logging.getLogger('ttm_torchdistill.runner')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
PART_NAMES = TTMLoss.PART_NAMES
RESUME_KEYS = ('model', 'optimizer', 'lr_scheduler', 'scaler', 'epoch', 'best_value', 'stage_grad_count', 'rng')
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
    check: bool = False
    """validate and build everything, then stop: no training, nothing written"""
    tensorboard: str | None = None
    """folder for TensorBoard per-epoch curves (needs the tensorboard package)"""


class Run:
    """Everything one command needs: context, recipe, models and output paths."""

    def __init__(self, opts: RunOptions, ctx: DistContext, lock: bool = False) -> None:
        """``lock``: hold dst_ckpt's run lock from right after validation (see release)."""
        self.opts, self.ctx = opts, ctx
        self.lock = None
        self.recipe_path = recipes.resolve_recipe(opts.recipe)
        overrides = recipes.parse_overrides(opts.overrides)
        if opts.seed is not None:
            seed_everything(opts.seed)
        try:
            self.config = recipes.load_recipe(self.recipe_path, overrides, self._take_lock if lock else None)
            self._build()
        except BaseException:
            self.release()
            raise

    def _take_lock(self, checked: dict) -> None:
        dst = checked.get('models.student_model.dst_ckpt') or checked.get('models.model.dst_ckpt')
        if not dst:
            return  # _build says dst_ckpt is required
        best = Path(dst).expanduser()
        self.lock = acquire_run_lock(best, self.ctx)
        if self.ctx.is_main:
            for tmp in remove_stale_temporaries(best, last_ckpt_path(best)):
                logger.info('removed %s, a temporary file of an interrupted save', tmp)

    def release(self) -> None:
        """Free the run lock (the process's end frees it too)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _build(self) -> None:
        opts = self.opts
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
        guard_datasets(self.config['datasets'])
        self.teacher = self._build_model('teacher_model', self.teacher_config) if self.teacher_config else None
        self.student = self._build_model(self.student_key, self.student_config)
        if self.teacher is not None:
            self._check_outputs_agree()

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
            raise UsageError(f'{where}: {one_line(exc)}') from None
        except (TypeError, OSError, RuntimeError) as exc:
            raise UsageError(f'{where}: cannot build {key!r}: {one_line(exc)}') from None
        src = model_config.get('src_ckpt')
        if src:
            path = Path(src).expanduser()
            load_model_state(model, model_state(load_checkpoint(path, f'{where}.src_ckpt')), path,
                             f'models.{label}: {key}')
        return model.to(self.ctx.device, memory_format=self.memory_format)

    def _sample_batch(self) -> tuple[str, torch.Tensor] | None:
        """(dataset id, a batch of one sample) from the validation (else test, else training) dataset."""
        for section, name in (('train', 'val_data_loader'), ('test', 'test_data_loader'),
                              ('train', 'train_data_loader')):
            dataset_id = ((self.config.get(section) or {}).get(name) or {}).get('dataset_id')
            dataset = self.config['datasets'].get(dataset_id)
            if dataset is not None and len(dataset) > 0:
                sample = dataset[0]
                sample = sample[0] if isinstance(sample, (tuple, list)) else sample
                return (dataset_id, sample[None]) if isinstance(sample, torch.Tensor) else None
        return None

    @torch.no_grad()
    def _check_outputs_agree(self) -> None:
        """One forward of teacher and student (eval mode) on one sample: their outputs must have one size."""
        found = self._sample_batch()
        if found is None:
            return
        dataset_id, batch = found
        shapes = {}
        for label, model, config in (('teacher_model', self.teacher, self.teacher_config),
                                     (self.student_key, self.student, self.student_config)):
            training = model.training
            model.eval()
            try:
                out = model(batch.to(self.ctx.device))
            except (RuntimeError, TypeError, ValueError) as exc:
                raise UsageError(f'{self.recipe_path}: models.{label} ({config.get("key")}): a forward pass on one '
                                 f'sample of datasets.{dataset_id} fails: {one_line(exc)[:300]}') from None
            finally:
                model.train(training)
            shapes[label] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        teacher, student = shapes['teacher_model'], shapes[self.student_key]
        if teacher is not None and student is not None and teacher != student:
            raise UsageError(f'{self.recipe_path}: models.teacher_model ({self.teacher_config.get("key")}) outputs '
                             f'{list(teacher)} but models.{self.student_key} ({self.student_config.get("key")}) '
                             f'outputs {list(student)} on a sample of datasets.{dataset_id}: teacher and student must '
                             'predict the same classes (check kwargs.num_classes)')

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def test_loader(self):
        test_config = self.config['test'].get('test_data_loader')
        if not isinstance(test_config, dict):
            raise UsageError(f'{self.recipe_path}: test.test_data_loader is required')
        with recipe_part(self.recipe_path, 'test.test_data_loader'):
            return build_eval_loader(self.config['datasets'], test_config, self.ctx, 'test.test_data_loader')

    def load_best(self) -> float | None:
        """Load the best checkpoint into the student; returns its best validation value."""
        if not self.best_ckpt.is_file():
            raise UsageError(f'no best checkpoint at {self.best_ckpt}: train the recipe first')
        ckpt = load_checkpoint(self.best_ckpt, 'test')
        load_model_state(self.student, model_state(ckpt), self.best_ckpt,
                         f'models.{self.student_key}: {self.student_config.get("key")}')
        return ckpt.get('best_value') if isinstance(ckpt, dict) else None

    def test(self) -> tuple[dict, float]:
        """Teacher and student (from the best checkpoint) on the test loader; also the checkpoint's best value."""
        best_value = self.load_best()
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


LOG_FORMAT = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')


def _setup_logging(ctx: DistContext, debug: bool, quiet: bool) -> None:
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if ctx.is_main and not quiet else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(LOG_FORMAT)
    torchdistill_logger = logging.getLogger('torchdistill')
    torchdistill_logger.handlers.clear()
    torchdistill_logger.setLevel(logging.INFO if debug else logging.WARNING)
    _add_handler(console, debug)


def _add_handler(handler: logging.Handler, debug: bool) -> None:
    logger.addHandler(handler)
    if debug:
        logging.getLogger('torchdistill').addHandler(handler)


def _log_to_file(ctx: DistContext, opts: RunOptions) -> None:
    """Also write the log to ``--run-log`` (rank 0; appended to when resuming)."""
    if opts.run_log and ctx.is_main:
        path = Path(opts.run_log).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, mode='a' if opts.resume else 'w')
        except OSError as exc:
            raise UsageError(f'--run-log {opts.run_log}: cannot write there: {exc.strerror}') from None
        handler.setFormatter(LOG_FORMAT)
        _add_handler(handler, opts.debug)


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
        self.log_freq = train_config.get('log_freq', 1000)
        self.box = build_box(run.recipe_path, run.teacher, run.student, run.config['datasets'], train_config,
                             self.ctx.device, self._device_ids(), self.ctx.distributed)
        if self.box.train_data_loader is None:
            raise UsageError(f'{run.recipe_path}: train.train_data_loader.dataset_id is not a key of datasets')
        self.distill = run.teacher is not None
        self._wrap_student()
        val_config = train_config.get('val_data_loader')
        if not isinstance(val_config, dict):
            raise UsageError(f'{run.recipe_path}: train.val_data_loader is required')
        with recipe_part(run.recipe_path, 'train.val_data_loader'):
            self.val_loader = build_eval_loader(run.config['datasets'], val_config, self.ctx, 'train.val_data_loader')
        self.scaler = torch.amp.GradScaler(self.ctx.device.type) if self.opts.amp == 'fp16' else None
        self.ttm_losses = _ttm_losses(self.box.criterion)
        self.start_epoch, self.best_val_top1 = 0, -math.inf

    def _device_ids(self) -> list[int] | None:
        return [self.ctx.device.index] if self.ctx.device.type == 'cuda' else None

    @property
    def model_attr(self) -> str:
        return 'student_model' if self.distill else 'model'

    def _wrap_student(self) -> None:
        """DDP on the student wherever torchdistill did not wrap it (it wraps on CUDA only)."""
        model = getattr(self.box, self.model_attr)
        trainable = any(p.requires_grad for p in model.parameters())
        already = any(isinstance(m, DistributedDataParallel) for m in model.modules())  # e.g. inside Linear4CRD
        if self.ctx.distributed and trainable and not already:
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

    def _aux_modules(self) -> dict[str, nn.Module]:
        """What training changes besides the student: the boxes' auxiliary wrappers (e.g. CRD's embeddings,
        the teacher's included when it learns) and stateful loss terms (e.g. CRD's memory bank)."""
        box = self.box
        modules = {}
        student = getattr(box, self.model_attr)
        student = student.module if check_if_wrapped(student) else student
        if student is not self.run.student:
            modules['student_wrapper'] = student
        if self.distill and box.teacher_updatable:
            modules['teacher_wrapper'] = box.teacher_model
        for name, (term, _) in getattr(box.criterion, 'term_dict', {}).items():
            if isinstance(term, nn.Module) and term.state_dict():
                modules[f'loss.{name}'] = term
        return modules

    def resume(self) -> None:
        path = self.run.last_ckpt
        ckpt = load_checkpoint(path, '--resume')
        missing = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        if missing:
            raise UsageError(f'--resume: {path} is not a checkpoint of ttm-distill train (no {", ".join(missing)})')
        saved_world = len(ckpt['rng'])
        if saved_world != self.ctx.world_size:
            logger.warning('resuming a %d-process run with %d processes: data order and RNG streams differ',
                           saved_world, self.ctx.world_size)
        load_model_state(self.run.student, ckpt['model'], path,
                         f'models.{self.run.student_key}: {self.run.student_config.get("key")}')
        try:
            self.box.optimizer.load_state_dict(ckpt['optimizer'])
            if self.box.lr_scheduler is not None and ckpt['lr_scheduler'] is not None:
                self.box.lr_scheduler.load_state_dict(ckpt['lr_scheduler'])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f'--resume: the optimizer or scheduler state in {path} does not fit the recipe\'s '
                             f'train.optimizer / train.scheduler: {one_line(exc)}') from None
        for name, module in self._aux_modules().items():
            if name in ckpt.get('aux', {}):
                load_model_state(module, ckpt['aux'][name], path, name)
        if self.scaler is not None and ckpt['scaler'] is not None:
            self.scaler.load_state_dict(ckpt['scaler'])
        self.box.stage_grad_count = ckpt['stage_grad_count']
        self.start_epoch, self.best_val_top1 = ckpt['epoch'], ckpt['best_value']
        set_rng_state(ckpt['rng'][self.ctx.rank % saved_world])

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
        curves = EpochWriter(self.opts.tensorboard) if self.opts.tensorboard and self.ctx.is_main else None
        try:
            return self._fit(curves)
        finally:
            if curves is not None:
                curves.close()

    def _fit(self, curves: EpochWriter | None) -> tuple[int, float]:
        box, run, ctx = self.box, self.run, self.ctx
        epochs_run, rates = 0, []
        for epoch in range(self.start_epoch, box.num_epochs):
            box.pre_epoch_process(epoch=epoch)
            if self.distill and not box.teacher_updatable:
                box.teacher_model.eval()
            try:
                stats = self.train_epoch(epoch)
                val = evaluate(run.student, self.val_loader, ctx.device, run.amp_dtype, self.opts.channels_last)
            except DataFileError as exc:
                last = run.last_ckpt
                raise DataFileError(f'{exc}: training stopped in epoch {epoch + 1}' + (
                    f'; the last good checkpoint is kept ({last})' if last.is_file() else '')) from None
            improved = val.top1 > self.best_val_top1
            box.post_epoch_process()
            if improved:
                self.best_val_top1 = val.top1
            rngs = all_gather_objects(rng_state())
            if ctx.is_main:
                state = self._state(epoch + 1)
                if improved:
                    atomic_save(state, run.best_ckpt)
                aux = {name: module.state_dict() for name, module in self._aux_modules().items()}
                atomic_save(dict(state, rng=rngs, aux=aux), run.last_ckpt)
                record = {'epoch': epoch + 1, **stats, 'val_top1': val.top1, 'val_top5': val.top5}
                with run.metrics_path.open('a') as f:
                    f.write(json.dumps(dict(record, recipe=run.name)) + '\n')
                if curves is not None:
                    curves.log(record)
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
        text = json.dumps(summary, indent=2) + '\n'
        atomic_write(Path(run.opts.summary).expanduser(), lambda f: f.write(text.encode()))  # sweeps read it
    return summary


def with_context(opts: RunOptions, body, log_file: bool = True) -> dict:
    """Set up processes and logging, run ``body(ctx)``; ``log_file=False``: the body opens --run-log itself."""
    ctx = setup_distributed(opts.device)
    try:
        _setup_logging(ctx, debug=opts.debug, quiet=opts.quiet)
        for path, flag in ((opts.run_log, '--run-log'), (opts.summary, '--summary')):
            if path:
                check_output_folder(Path(path), flag)
        if log_file:
            _log_to_file(ctx, opts)
        return body(ctx)
    finally:
        teardown()


def _check_passed(run: Run, what: str) -> dict:
    logger.info('check passed: %s builds (%s); nothing was trained or written', run.name, what)
    return {'recipe': run.name, 'check': 'passed'}


@torch.no_grad()
def _check_one_batch(trainer: Trainer) -> None:
    """The loss on one training batch (no update): the models' and the loss's inputs and outputs fit."""
    box, run = trainer.box, trainer.run
    images, targets, supp_dict = next(iter(box.train_data_loader))
    criterion = (run.config['train'].get('criterion') or {}).get('key')
    try:
        with run.autocast():
            loss = box.forward_process(images.to(trainer.ctx.device, memory_format=run.memory_format),
                                       targets.to(trainer.ctx.device), supp_dict)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise UsageError(f'{run.recipe_path}: train.criterion ({criterion}): the loss on one training batch fails: '
                         f'{type(exc).__name__}: {one_line(exc)[:300]}') from None
    if not torch.isfinite(loss).all():
        raise UsageError(f'{run.recipe_path}: train.criterion ({criterion}): the loss on one training batch is '
                         f'{loss.item()}')


def run_train(opts: RunOptions) -> dict:
    """Train with validation every epoch, keep the best checkpoint, then test teacher and student.

    ``opts.check``: build everything, compute the loss on one batch, then stop; nothing is written.
    """
    if opts.check:
        opts = dataclasses.replace(opts, run_log=None, summary=None, tensorboard=None)
    if opts.tensorboard:
        require_tensorboard('--tensorboard')  # before the lock or anything else is made

    def body(ctx: DistContext) -> dict:
        run = Run(opts, ctx, lock=not opts.check)
        try:
            return train(run)
        finally:
            run.release()

    def train(run: Run) -> dict:
        start, ctx = time.perf_counter(), run.ctx
        trainer = Trainer(run)
        if opts.resume:
            trainer.resume()
        if opts.check:
            _check_one_batch(trainer)
            return _check_passed(run, f'{len(trainer.box.train_data_loader)} training batches per epoch')
        _log_to_file(ctx, opts)
        if opts.resume:
            logger.info('resumed from %s after epoch %d (best val top-1 %.2f)', run.last_ckpt, trainer.start_epoch,
                        trainer.best_val_top1)
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

    return with_context(opts, body, log_file=False)


def run_test(opts: RunOptions) -> dict:
    """Evaluate the teacher and the best student checkpoint on the recipe's test loader."""
    def body(ctx: DistContext) -> dict:
        start = time.perf_counter()
        run = Run(opts, ctx)
        if opts.check:
            run.load_best()
            run.test_loader()
            return _check_passed(run, f'best checkpoint {run.best_ckpt}')
        results, best_value = run.test()
        return _report(run, results, time.perf_counter() - start, {'best_val_top1': best_value})

    if opts.check:
        opts = dataclasses.replace(opts, run_log=None, summary=None)
    return with_context(opts, body)

