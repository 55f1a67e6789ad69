"""A run built from a recipe: its description, the composed recipe and its view, teacher and student, its outputs
(:mod:`.claim`), the test pass."""
from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchdistill.models.official import get_image_classification_model
from torchdistill.models.registry import get_model

from ..data import device_batches
from ..description import RunDescription
from ..errors import DataFileError, UsageError, one_line
from ..recipe import RecipeDocument, RecipeView, parse_overrides, recipe_name, resolve_recipe
from .amp import AMP_DTYPES, autocast
from .build import recipe_part
from .checkpoint import load_checkpoint, load_model_state, model_state
from .claim import RunOutputs
from .compiled import compile_models
from .datafiles import BATCH_ERRORS, batch_error, guard_datasets, guarded_batches
from .distributed import DistContext
from .evaluate import build_eval_loader, evaluate
from .logs import logger
from .preflight import evaluation

__all__ = ['Run', 'on_device', 'seed_everything']


class Run:
    """Everything one command needs: context, recipe, models and outputs."""

    def __init__(self, opts: RunDescription, ctx: DistContext, train: bool = False) -> None:
        """``train``: a training run claims its outputs right after the recipe validates (see :mod:`.claim`)."""
        self.opts, self.ctx = opts, ctx
        self.recipe_path = resolve_recipe(opts.recipe)
        doc = RecipeDocument.open(self.recipe_path, parse_overrides(opts.overrides))
        self.view = RecipeView(doc)
        missing = self.view.missing(opts.command, opts.test)
        if missing is not None:
            raise UsageError(f'{self.recipe_path}: {missing}')
        self.student_key = self.view.student_key
        self.fingerprint = doc.fingerprint()
        self.outputs: RunOutputs | None = None
        if opts.seed is not None:
            seed_everything(opts.seed)
        try:
            self.config = doc.build(self._claim if train else None)
            self._build()
        except BaseException:
            self.release()
            raise

    def _claim(self, checked: dict) -> None:
        dst = checked.get(f'models.{self.student_key}.dst_ckpt')
        if dst:  # else _build says it is required
            self.outputs = RunOutputs(self.opts, self.student_key, dst)
            self.outputs.claim(self.ctx, self.fingerprint)

    def release(self) -> None:
        """Free the run lock (the process's end frees it too)."""
        if self.outputs is not None:
            self.outputs.release()

    @property
    def best_ckpt(self) -> Path:
        return self.outputs.best

    @property
    def last_ckpt(self) -> Path:
        return self.outputs.last

    @property
    def metrics_path(self) -> Path:
        return self.outputs.metrics

    def _build(self) -> None:
        opts = self.opts
        models = self.config['models']  # the required keys are there (RecipeView.missing)
        self.teacher_config = models.get('teacher_model')
        self.student_config = models[self.student_key]
        if self.outputs is None:  # a run that claims nothing (test, calibrate): the paths it reads
            self.outputs = RunOutputs(opts, self.student_key, self.student_config['dst_ckpt'])
        self.amp_dtype = AMP_DTYPES.get(opts.amp) if opts.amp else None
        self.memory_format = torch.channels_last if opts.channels_last else torch.preserve_format
        guard_datasets(self.config['datasets'])
        self._check_splits()
        self.teacher = self._build_model('teacher_model', self.teacher_config) if self.teacher_config else None
        self.student = self._build_model(self.student_key, self.student_config)
        if self.teacher is not None:
            self._check_outputs_agree()
        if opts.compile:  # after the one-sample check, which would compile a batch shape of its own
            compile_models({'student': self.student, 'teacher': self.teacher}, opts.compile)

    def loader_config(self, loader: str) -> dict | None:
        """The built configuration of the 'train', 'val' or 'test' loader (None where the recipe has none)."""
        node: object = self.config
        for key in self.view.loader_path(loader).split('.'):
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else None

    def _dataset(self, loader: str) -> tuple[object, object]:
        """(dataset id, dataset) of a loader; the dataset None where there is none."""
        dataset_id = (self.loader_config(loader) or {}).get('dataset_id')
        return dataset_id, self.config['datasets'].get(dataset_id)

    def _check_splits(self) -> None:
        """Every loader's dataset has samples (an empty split would train or score on nothing)."""
        for loader in ('train', 'val', 'test'):
            dataset_id, dataset = self._dataset(loader)
            if hasattr(dataset, '__len__') and len(dataset) == 0:
                raise UsageError(f'{self.recipe_path}: {self.view.loader_path(loader)}: datasets.{dataset_id} is empty '
                                 '(0 samples); check its root and files, or its indices')

    @property
    def name(self) -> str:
        return recipe_name(self.recipe_path)

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

    def loader_where(self, loader: str) -> str:
        """How a message names the 'train', 'val' or 'test' loader: ``RECIPE: train.train_data_loader
        (datasets.ID)``."""
        return f'{self.recipe_path}: {self.view.loader_where(loader)}'

    def batches(self, loader: object, which: str) -> Iterator:
        """The batches of ``loader``, the recipe's 'train', 'val' or 'test' loader: one that cannot be read or formed
        is one DataFileError line naming the loader, its dataset, the batch and the cause."""
        return guarded_batches(loader, self.loader_where(which), self.view.dataset_id(which))

    def data_error(self, which: str, what: str, exc: BaseException) -> DataFileError:
        """One line for ``what`` (``sample 0``, a batch) of the 'train', 'val' or 'test' loader that cannot be read or
        formed (:func:`.datafiles.batch_error`)."""
        return batch_error(self.loader_where(which), self.view.dataset_id(which), what, exc)

    def _sample_batch(self) -> tuple[str, torch.Tensor] | None:
        """(dataset id, a batch of one sample) from the validation (else test, else training) dataset."""
        for which in ('val', 'test', 'train'):
            dataset_id, dataset = self._dataset(which)
            if dataset is not None and len(dataset) > 0:
                try:
                    sample = dataset[0]
                except (DataFileError, *BATCH_ERRORS) as exc:
                    raise self.data_error(which, 'sample 0', exc) from exc
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
        return autocast(self.ctx.device, self.amp_dtype)

    def eval_loader(self, loader: str):
        """The 'val' or 'test' loader, this rank's shard of its dataset."""
        config, where = self.loader_config(loader), self.view.loader_path(loader)
        if config is None:
            raise UsageError(f'{self.recipe_path}: {where} is required')
        with recipe_part(self.recipe_path, where):
            built = build_eval_loader(self.config['datasets'], config, self.ctx, where)
        return on_device(built, self.ctx.device, where)

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
        loader = self.eval_loader('test')
        results = {}
        for role, model, label in (('teacher', self.teacher, 'teacher_model'), ('student', self.student,
                                                                                self.student_key)):
            if model is None:
                results[f'{role}_test_top1'] = results[f'{role}_test_top5'] = None
                continue
            with evaluation(self, label, 'the test pass'):
                acc = evaluate(model, self.batches(loader, 'test'), self.ctx.device, self.amp_dtype,
                               self.opts.channels_last)
            results[f'{role}_test_top1'], results[f'{role}_test_top5'] = acc.top1, acc.top5
            logger.info('%s test: top-1 %.2f  top-5 %.2f  (%d images)', role, acc.top1, acc.top5, acc.samples)
        return results, best_value


def on_device(loader: object, device: torch.device, where: str) -> object:
    """``loader``, or its batches made on ``device`` when its dataset is an in-memory CIFAR dataset (one line says
    which, or why not)."""
    batches, note = device_batches(loader, device)
    if note:
        logger.warning('%s: %s', where, note)
    elif batches is not loader:
        logger.info('%s: %s in memory on %s, batches made there (the loader\'s workers are not used)', where,
                    type(batches.memory).__name__, device)
    return batches


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)

