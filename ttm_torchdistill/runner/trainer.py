"""One run's training on torchdistill's box: its steps, the end of each epoch (validation, checkpoints, metrics),
resume and the non-finite checks; the epoch loop that drives it is :mod:`.loop`'s."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdistill.common.module_util import check_if_wrapped

from ..errors import DataFileError, TrainingDiverged, TrainingFailed, UsageError, one_line
from ..formats.metrics import append_record
from .amp import scale_fp16
from .build import box_student, build_box, set_box_student
from .checkpoint import atomic_save, load_model_state, rng_state, set_rng_state
from .diagnostics import EpochDiagnostics
from .distributed import all_gather_objects, all_reduce_sum, barrier
from .evaluate import evaluate
from .logs import format_eta, log_to_file, logger
from .preflight import STEP_ERRORS, describe_step_failure, evaluation
from .run import Run, on_device
from .schedule import restore_schedule
from .tensorboard import EpochWriter

__all__ = ['CHECK_EVERY', 'RESUME_KEYS', 'Trainer']

POSITION_PER_RANK = ('losses', 'diagnostics', 'checked', 'logged', 'images_seen')
"""what a mid-epoch checkpoint keeps of each rank's epoch so far, besides its generators' states"""
RESUME_KEYS = ('model', 'optimizer', 'lr_scheduler', 'scaler', 'epoch', 'best_value', 'stage_grad_count', 'rng')
CHECK_EVERY = 50
"""iterations between checks for a non-finite loss (each one host synchronisation)"""


class Trainer:
    def __init__(self, run: Run) -> None:
        self.run, self.ctx, self.opts = run, run.ctx, run.opts
        train_config = run.config['train']  # the required keys are there (RecipeView.missing)
        if self.opts.resume and not run.last_ckpt.is_file():
            raise UsageError(f'--resume: no checkpoint to resume from at {run.last_ckpt}')
        self.log_freq = train_config.get('log_freq', 1000)
        self.box = build_box(run.recipe_path, run.teacher, run.student, run.config['datasets'], train_config,
                             self.ctx.device, self._device_ids(), self.ctx.distributed)
        if self.box.train_data_loader is None:
            raise UsageError(f'{run.recipe_path}: train.train_data_loader.dataset_id is not a key of datasets')
        self.box.train_data_loader = on_device(self.box.train_data_loader, self.ctx.device, 'train.train_data_loader')
        if len(self.box.train_data_loader) == 0:
            loader = self.box.train_data_loader
            raise UsageError(f'{run.recipe_path}: train.train_data_loader: an epoch has 0 iterations '
                             f'({len(loader.dataset)} samples per process, batch size {loader.batch_size}, drop_last '
                             f'{loader.drop_last}); lower the batch size')
        self.distill = run.view.has_teacher
        self._wrap_student()
        self.val_loader = run.eval_loader('val')
        self.scaler = scale_fp16(self.box, train_config, run.recipe_path, self.ctx.device) \
            if self.opts.amp == 'fp16' else None
        terms = [(name, term) for name, (term, _) in getattr(self.box.criterion, 'term_dict', {}).items()]
        self.diagnostics = EpochDiagnostics(terms, self.ctx.device)
        self.start_epoch, self.best_val_top1 = 0, -math.inf
        self.resumed_rng: dict | None = None
        """with :meth:`resume`: the random number generators' state the run continues from"""
        self.epoch_rates: list[float] = []
        """each epoch's training img/s, of the epochs this process trained"""
        self.position: dict | None = None
        """with :meth:`resume` of a run stopped inside an epoch: this rank's share of where it stopped
        (:meth:`save_position`)"""

    def _device_ids(self) -> list[int] | None:
        return [self.ctx.device.index] if self.ctx.device.type == 'cuda' else None

    def _wrap_student(self) -> None:
        """DDP on the student wherever torchdistill did not wrap it (it wraps on CUDA only)."""
        model = box_student(self.box)
        trainable = any(p.requires_grad for p in model.parameters())
        already = any(isinstance(m, DistributedDataParallel) for m in model.modules())  # e.g. inside Linear4CRD
        if self.ctx.distributed and trainable and not already:
            set_box_student(self.box, DistributedDataParallel(model, device_ids=self._device_ids()))

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
            'overrides': self.opts.override_texts,
            'fingerprint': self.run.fingerprint,
        }

    def _aux_modules(self) -> dict[str, nn.Module]:
        """What training changes besides the student: the boxes' auxiliary wrappers (e.g. CRD's embeddings,
        the teacher's included when it learns) and stateful loss terms (e.g. CRD's memory bank)."""
        box = self.box
        modules = {}
        student = box_student(box)
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
        path, ckpt = self.run.last_ckpt, self.run.outputs.checkpoint  # read once, when the run claimed its outputs
        self.run.outputs.checkpoint = None
        missing = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        if missing:
            raise UsageError(f'--resume: {path} is not a checkpoint of ttm-distill train (no {", ".join(missing)})')
        saved_world = len(ckpt['rng'])
        if saved_world != self.ctx.world_size:
            logger.warning('resuming a %d-process run with %d processes: data order and RNG streams differ',
                           saved_world, self.ctx.world_size)
        if ckpt['epoch'] > self.box.num_epochs:
            raise UsageError(f'--resume: the run in {path} has done {ckpt["epoch"]} epochs; train.num_epochs='
                             f'{self.box.num_epochs} leaves none to train and is shorter than the run (give at least '
                             f'{ckpt["epoch"]})')
        load_model_state(self.run.student, ckpt['model'], path,
                         f'models.{self.run.student_key}: {self.run.student_config.get("key")}')
        try:
            restore_schedule(self.box, ckpt['lr_scheduler'], ckpt['optimizer'], ckpt['epoch'],
                             len(self.box.train_data_loader), path,
                             (ckpt.get('position') or {}).get('iteration', 0))
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
        self.resumed_rng = ckpt['rng'][self.ctx.rank % saved_world]
        set_rng_state(self.resumed_rng, self.ctx.device)
        if ckpt.get('position') is not None:
            self.position = self._own_position(ckpt['position'], saved_world, path)

    def _own_position(self, saved: dict, saved_world: int, path: Path) -> dict:
        """This rank's share of a mid-epoch checkpoint's position; it resumes exactly only with the same number of
        processes and iterations per epoch."""
        iterations = len(self.box.train_data_loader)
        if saved_world != self.ctx.world_size or saved['num_iters'] != iterations:
            raise UsageError(f'--resume: {path} was saved inside epoch {self.start_epoch + 1} (after iteration '
                             f'{saved["iteration"]} of {saved["num_iters"]}, {saved_world} process(es)); it continues '
                             f'only with {saved_world} process(es) and the same batch size (now {self.ctx.world_size} '
                             f'process(es), {iterations} iterations per epoch)')
        rank = self.ctx.rank
        return {'iteration': saved['iteration'], 'num_iters': saved['num_iters'], 'epoch_rng': saved['epoch_rng'][rank],
                **{key: saved[key][rank] for key in POSITION_PER_RANK}}

    def open_log(self, member: str | None = None) -> logging.Handler | None:
        """Start writing --run-log (``member``: only that lockstep run's lines and its group's), saying where a
        resumed run continues from; returns the file's handler (None without --run-log)."""
        handler = log_to_file(self.ctx, self.opts.run_log, self.opts.resume, self.opts.debug, member=member)
        if self.opts.resume and self.position is not None:
            best = f'{self.best_val_top1:.2f}' if math.isfinite(self.best_val_top1) else 'none yet'
            logger.info('resumed from %s inside epoch %d, after iteration %d of %d (best val top-1 %s); the loader '
                        'replays the epoch\'s first %d batches (data only) so that its random streams continue exactly',
                        self.run.last_ckpt, self.start_epoch + 1, self.position['iteration'],
                        self.position['num_iters'], best, self.position['iteration'])
        elif self.opts.resume:
            logger.info('resumed from %s after epoch %d (best val top-1 %.2f)', self.run.last_ckpt, self.start_epoch,
                        self.best_val_top1)
        return handler

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

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (images.to(self.ctx.device, non_blocking=True, memory_format=self.run.memory_format),
                targets.to(self.ctx.device, non_blocking=True))

    def step(self, it: int, images: torch.Tensor, targets: torch.Tensor, supp_dict: dict) -> None:
        """Iteration ``it`` of the epoch: forward, backward and update; every CHECK_EVERY iterations the check for a
        non-finite loss (TrainingDiverged), and the log line every ``log_freq``."""
        box, ctx, run, epoch = self.box, self.ctx, self.run, self.epoch
        try:
            with run.autocast():
                loss = box.forward_process(images, targets, supp_dict)
        except STEP_ERRORS as exc:
            kept = f' ({run.last_ckpt})' if run.last_ckpt.is_file() else ''
            where = f'the training step at epoch {epoch + 1}, iteration {it + 1} ({len(images)} samples)'
            raise TrainingFailed(describe_step_failure(run, box, exc, where)
                                 + f'; training stopped, the last good checkpoint is kept{kept}') from None
        losses = self.losses
        losses[it] = loss.detach()
        box.post_forward_process(loss=loss)  # under --amp fp16 it scales and steps through the GradScaler
        self.diagnostics.step()
        self.images_seen += len(images)
        self.images_since_log += len(images)
        done, num_iters = it + 1, self.num_iters
        log_now = done % self.log_freq == 0 or done == num_iters
        if log_now or done - self.checked >= CHECK_EVERY:
            self._check_finite(losses, self.checked, done, epoch)
            self.checked = done
        if log_now:
            now = time.perf_counter()
            rate = self.images_since_log * ctx.world_size / max(now - self.last_log, 1e-9)
            eta = (now - self.epoch_start) / done * (num_iters - done)
            logger.info('epoch %d/%d [%d/%d] eta %s  loss %.4f  lr %.5g  img/s %.1f', epoch + 1, box.num_epochs,
                        done, num_iters, format_eta(eta), losses[self.logged:done].mean().item(),
                        box.optimizer.param_groups[0]['lr'], rate)
            self.last_log, self.images_since_log, self.logged = now, 0, done

    def begin_epoch(self, epoch: int, num_iters: int) -> None:
        """Before the first :meth:`step` of an epoch of ``num_iters`` iterations: the recipe's pre-epoch process, a
        frozen teacher in eval mode, the epoch's accounting started."""
        self.box.pre_epoch_process(epoch=epoch)
        if self.distill and not self.box.teacher_updatable:
            self.box.teacher_model.eval()
        self.epoch, self.num_iters = epoch, num_iters
        self.losses = torch.zeros(num_iters, dtype=torch.float32, device=self.ctx.device)
        self.diagnostics.start_epoch()
        self.images_seen = self.images_since_log = self.checked = self.logged = 0
        self.epoch_start = self.last_log = time.perf_counter()

    def continue_epoch(self) -> int:
        """After :meth:`begin_epoch` of the epoch a mid-epoch checkpoint stopped in: its accounting as it was saved;
        returns the iterations done (0 when the run did not stop inside this epoch)."""
        position, self.position = self.position, None
        if position is None:
            return 0
        done = position['iteration']
        self.losses[:done] = position['losses'].to(self.losses.device)
        self.diagnostics.load_sum(position['diagnostics'])
        self.checked, self.logged, self.images_seen = position['checked'], position['logged'], position['images_seen']
        return done

    def save_position(self, epoch: int, done: int, epoch_rng: dict) -> None:
        """Stopped after iteration ``done`` of ``epoch`` (every rank the same): rank 0 writes the last checkpoint
        atomically with each rank's place in the epoch: the generators' state at the epoch's start (``epoch_rng``, to
        replay its loader) and now, its losses and diagnostics so far."""
        run = self.run
        share = {'epoch_rng': epoch_rng, 'losses': self.losses[:done].cpu().clone(),
                 'diagnostics': self.diagnostics.sum(), 'checked': self.checked, 'logged': self.logged,
                 'images_seen': self.images_seen, 'rng': rng_state(self.ctx.device)}
        shares = all_gather_objects(share)
        if self.ctx.is_main:
            position = {'iteration': done, 'num_iters': self.num_iters,
                        **{key: [s[key] for s in shares] for key in ('epoch_rng', *POSITION_PER_RANK)}}
            aux = {name: module.state_dict() for name, module in self._aux_modules().items()}
            atomic_save(dict(self._state(epoch), rng=[s['rng'] for s in shares], aux=aux, position=position),
                        run.last_ckpt)
        barrier()

    @property
    def mean_rate(self) -> float:
        """Mean training img/s over the epochs this process trained (NaN before the first)."""
        return sum(self.epoch_rates) / len(self.epoch_rates) if self.epoch_rates else math.nan

    @contextlib.contextmanager
    def stopping_in(self, epoch: int) -> Iterator[None]:
        """A data file that fails while the epoch reads it says where training stopped and what is kept."""
        try:
            yield
        except DataFileError as exc:
            last = self.run.last_ckpt
            raise DataFileError(f'{exc}: training stopped in epoch {epoch + 1}' + (
                f'; the last good checkpoint is kept ({last})' if last.is_file() else '')) from None

    def _finish_steps(self) -> dict:
        """The epoch's statistics, after its last :meth:`step`."""
        seconds = time.perf_counter() - self.epoch_start
        stats = {
            'train_loss': self.losses.mean().item(),
            'lr': self.box.optimizer.param_groups[0]['lr'],
            'train_images_per_s': self.images_seen * self.ctx.world_size / seconds,
            'train_s': seconds,
        }
        return {**stats, **self.diagnostics.epoch_means(self.num_iters, self.ctx.world_size)}

    def _validate(self, epoch: int):
        """The student on the validation loader after ``epoch``."""
        run = self.run
        with self.stopping_in(epoch), evaluation(run, run.student_key, f'the validation pass after epoch {epoch + 1}',
                                                  run.last_ckpt):
            return evaluate(run.student, run.batches(self.val_loader, 'val'), self.ctx.device, run.amp_dtype,
                            self.opts.channels_last)

    def end_epoch(self, epoch: int, curves: EpochWriter | None) -> None:
        """After the last :meth:`step` of ``epoch``: the validation pass, the scheduler's epoch step, the best and last
        checkpoints, the metrics record, the curves and the epoch's log lines."""
        stats = self._finish_steps()
        val = self._validate(epoch)
        box, run, ctx = self.box, self.run, self.ctx
        self.epoch_rates.append(stats['train_images_per_s'])
        improved = val.top1 > self.best_val_top1
        box.post_epoch_process(metrics=val.top1)  # as torchdistill's runner: ReduceLROnPlateau reads it
        if improved:
            self.best_val_top1 = val.top1
        rngs = all_gather_objects(rng_state(self.ctx.device))
        if ctx.is_main:
            state = self._state(epoch + 1)
            if improved:
                atomic_save(state, run.best_ckpt)
            aux = {name: module.state_dict() for name, module in self._aux_modules().items()}
            atomic_save(dict(state, rng=rngs, aux=aux), run.last_ckpt)
            record = {'epoch': epoch + 1, **stats, 'val_top1': val.top1, 'val_top5': val.top5}
            append_record(run.metrics_path, dict(record, recipe=run.name))
            if curves is not None:
                curves.log(record)
        barrier()
        logger.info('epoch %d/%d  val top-1 %.2f  top-5 %.2f  (best %.2f%s)  train loss %.4f  %.1f img/s',
                    epoch + 1, box.num_epochs, val.top1, val.top5, self.best_val_top1,
                    ', saved' if improved else '', stats['train_loss'], stats['train_images_per_s'])
        if self.diagnostics.keys:
            logger.info('epoch %d/%d  diagnostics: %s', epoch + 1, box.num_epochs,
                        '  '.join(f'{key} {stats[key]:.4f}' for key in self.diagnostics.keys))
