"""A training run's outputs and its claim on them, taken right after the recipe validates and before anything is
built: the paths (best and last checkpoint, metrics file, lock), one path for each output, the run lock on the
checkpoint path, an earlier run's files refused, and with --resume the last checkpoint, read once, checked against the
recipe and kept for the trainer."""
from __future__ import annotations

from pathlib import Path

from ..description import RunDescription
from ..errors import UsageError
from ..formats.metrics import metrics_path
from ..outputs import check_output_file, check_output_folder
from ..recipe import RecipeDocument, RecipeView, parse_overrides, resolve_recipe
from .checkpoint import last_ckpt_path, load_checkpoint, remove_stale_temporaries
from .distributed import DistContext
from .lock import RunLock, acquire_run_lock, lock_path
from .logs import logger

__all__ = ['RunOutputs', 'check_outputs', 'check_submission']


class RunOutputs:
    """The files a run of ``opts`` writes beside ``models.<student_key>.dst_ckpt``; the metrics file goes beside
    --run-log when there is one, else beside the checkpoint."""

    def __init__(self, opts: RunDescription, student_key: str, dst_ckpt: str) -> None:
        self.opts, self.student_key = opts, student_key
        self.best = Path(dst_ckpt).expanduser()
        self.last = last_ckpt_path(self.best)
        log_base = Path(opts.run_log).expanduser() if opts.run_log else self.best
        self.metrics = metrics_path(log_base)
        self.lock: RunLock | None = None
        self.checkpoint: dict | None = None
        """with --resume, the last checkpoint (read here, once)"""

    def claim(self, ctx: DistContext, fingerprint: dict[str, str]) -> None:
        """Check the paths, take the run lock (not with --check), then refuse what an earlier run left here, or, with
        --resume, read its last checkpoint and refuse another experiment's."""
        self._check_distinct()
        if not self.opts.check:
            self.lock = acquire_run_lock(self.best, ctx)
            if ctx.is_main:
                for tmp in remove_stale_temporaries(self.best, self.last):
                    logger.info('removed %s, a temporary file of an interrupted save', tmp)
        if self.opts.resume:
            if self.last.is_file():  # else the trainer says there is nothing to resume
                self.checkpoint = load_checkpoint(self.last, '--resume')
                self._check_same_experiment(fingerprint)
            return
        self._refuse_earlier()

    def _refuse_earlier(self) -> None:
        """Without --resume: no file of an earlier run here."""
        key = f'models.{self.student_key}.dst_ckpt'
        if self.last.is_file():
            raise UsageError(f'{self.last} exists from an earlier run: pass --resume to continue it, or point {key} '
                             'elsewhere with --set for a new run')
        for path, what in ((self.best, 'best checkpoint'), (self.metrics, 'metrics file')):
            if path.exists():
                raise UsageError(f'{path} exists (the {what} of an earlier run): nothing is replaced; point {key} (or '
                                 '--run-log) elsewhere for a new run, or move it away')

    def check_free(self) -> None:
        """Before a job that will claim them is submitted: the paths are distinct, no run holds the lock, and without
        --resume no earlier run's file is here (with it, its last checkpoint is)."""
        self._check_distinct()
        path = lock_path(self.best)
        if path.exists():
            RunLock(path).release()  # held: one line naming the holder; a killed run's file: taken over and removed
        if not self.opts.resume:
            self._refuse_earlier()
        elif not self.last.is_file():
            raise UsageError(f'--resume: no checkpoint to resume from at {self.last}')

    def _check_distinct(self) -> None:
        """Every output of the run has a path of its own: one file would replace another's (--summary on the
        checkpoint, --run-log on the summary, ...)."""
        outputs = {f'models.{self.student_key}.dst_ckpt (the best checkpoint)': self.best,
                   'the last checkpoint': self.last, 'the metrics file': self.metrics,
                   'the run lock': lock_path(self.best)}
        opts = self.opts
        given = {'--run-log': opts.run_log, '--summary': opts.summary, '--tensorboard': opts.tensorboard}
        paths = {**outputs, **{flag: Path(p) for flag, p in given.items() if p}}
        seen: dict[Path, str] = {}
        for what, path in paths.items():
            real = path.expanduser().resolve()
            if real in seen:
                raise UsageError(f'{what}={str(path)!r} is also {seen[real]}: one would replace the other; give each '
                                 'output its own path')
            seen[real] = what

    def _check_same_experiment(self, now: dict[str, str]) -> None:
        """Refuse to resume where the recipe's models, data, loss, optimizer or scheduler changed since the checkpoint
        (the first differing key is named), unless --allow-recipe-change."""
        ckpt = self.checkpoint
        saved = ckpt.get('fingerprint') if isinstance(ckpt, dict) else None
        if saved is None:
            logger.warning('%s does not record its recipe (an older version wrote it): resuming without checking that '
                           'the recipe is unchanged', self.last)
            return
        differ = next((k for k in [*now, *(k for k in saved if k not in now)] if now.get(k) != saved.get(k)), None)
        if differ is None:
            return
        change = f'{saved.get(differ, "(absent)")!s} -> {now.get(differ, "(absent)")!s}'
        if self.opts.allow_recipe_change:
            logger.warning('resuming with a changed recipe: %s: %s (--allow-recipe-change)', differ.removesuffix('.!'),
                           change)
            return
        raise UsageError(f'--resume: the recipe differs from the run in {self.last} at {differ.removesuffix(".!")} '
                         f'({change}): resume the same experiment, or pass --allow-recipe-change to accept the change')

    def release(self) -> None:
        """Free the run lock (the process's end frees it too); its file goes with it."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def check_outputs(opts: RunDescription) -> None:
    """Before any work: --run-log and --summary can be written and, unless resuming, hold no earlier run's file;
    a --tensorboard folder can be written and, unless resuming, holds no earlier run's curves."""
    for path, flag in ((opts.run_log, '--run-log'), (opts.summary, '--summary')):
        if path:
            check_output_file(Path(path), flag, replace=opts.resume)
    if opts.tensorboard:
        folder = Path(opts.tensorboard).expanduser()
        check_output_folder(folder / 'events', '--tensorboard')
        if folder.exists() and not folder.is_dir():
            raise UsageError(f'--tensorboard={opts.tensorboard!r}: is a file, not a folder')
        if not opts.resume and folder.is_dir() and any(folder.glob('events.out.tfevents*')):
            raise UsageError(f'--tensorboard={opts.tensorboard!r}: holds the curves of an earlier run; give a new '
                             'folder (or --resume that run)')


def check_submission(opts: RunDescription) -> RunOutputs:
    """Before a training job is submitted (`train --launcher slurm`), in one line each: the recipe validates as a
    document (its plugins imported, its values checked; nothing built, the data may live on the cluster only), and
    --run-log, --summary and --tensorboard can be written. Returns the run's outputs, for
    :meth:`RunOutputs.check_free`."""
    recipe = resolve_recipe(opts.recipe)
    doc = RecipeDocument.open(recipe, parse_overrides(opts.overrides))
    view = RecipeView(doc)
    missing = view.missing(opts.command, opts.test)
    if missing is not None:
        raise UsageError(f'{recipe}: {missing}')
    doc.import_dependencies()
    checked = doc.validate()
    dst = checked.get(f'models.{view.student_key}.dst_ckpt')
    if not dst:
        raise UsageError(f'{recipe}: models.{view.student_key}.dst_ckpt is required')
    check_outputs(opts)
    return RunOutputs(opts, view.student_key, dst)
