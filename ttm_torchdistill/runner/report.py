"""The end of a command: the summary lines in the log and the --summary file (``formats.summary``)."""
from __future__ import annotations

import math

from ..formats.summary import RunSummary, write_summary
from .logs import format_eta, logger
from .run import Run
from .trainer import Trainer

__all__ = ['report', 'report_training']


def report(run: Run, results: dict, wall_s: float, extra: dict, kind: str) -> dict:
    """Log the results and write --summary (strict JSON); ``kind``: 'train' or 'test'; ``results``: the test pass's
    top-1 and top-5 of teacher and student; ``extra``: the other results of ``kind`` (:class:`RunSummary` fields).
    Returns the summary's JSON."""
    summary = RunSummary(
        kind=kind, recipe=run.name, world_size=run.ctx.world_size, device=run.ctx.device.type, **extra, **results,
        wall_s=wall_s, best_ckpt=str(run.best_ckpt), last_ckpt=str(run.last_ckpt),
        metrics=str(run.metrics_path.resolve()), amp=run.opts.amp, channels_last=run.opts.channels_last,
        seed=run.opts.seed, overrides=run.opts.override_texts,
        paper_top1=(run.config.get('paper') or {}).get('top1'))

    def fmt(value):
        return 'n/a' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.2f}'

    lines = [f'== {run.name} ==', f'best val top-1    {fmt(summary.best_val_top1)}']
    for role in ('teacher', 'student'):
        top1, top5 = results[f'{role}_test_top1'], results[f'{role}_test_top5']
        lines.append(f'{role} test  top-1 {fmt(top1)}  top-5 {fmt(top5)}')
    lines.append(f'wall time {format_eta(wall_s)}; best checkpoint {run.best_ckpt}')
    for line in lines:
        logger.info(line)
    if run.opts.summary and run.ctx.is_main:
        write_summary(run.opts.summary, summary)  # atomic: sweeps read it
    return summary.to_json()


def report_training(run: Run, trainer: Trainer, wall_s: float) -> dict:
    """The end of a training run trained by ``trainer``: the test pass unless --no-test, then
    :func:`report` with the epochs trained, the best validation top-1 and the mean training img/s."""
    skipped = {f'{role}_test_top{k}': None for role in ('teacher', 'student') for k in (1, 5)}
    results = run.test()[0] if run.opts.test else skipped
    extra = dict(epochs_run=len(trainer.epoch_rates), best_val_top1=trainer.best_val_top1,
                 train_images_per_s=trainer.mean_rate)
    return report(run, results, wall_s, extra, kind='train')
