"""`ttm-distill calibrate`: how calibrated is a recipe's teacher, and which gamma calibrates it."""
from __future__ import annotations

from pathlib import Path

import torch

from ..calibration import expected_calibration_error, fit_temperature, nll, reliability_bins
from ..description import RunDescription
from ..errors import UsageError
from ..formats.summary import RunSummary, write_summary
from ..functional import power_sum
from ..losses import resolve_gamma
from ..methods import methods
from ..outputs import atomic_write, check_output_folder
from ..runner.commands import check_outputs, with_context
from ..runner.distributed import DistContext
from ..runner.logs import logger
from ..runner.run import Run
from .figures import pyplot

__all__ = ['calibrate']


def _recipe_gamma(run: Run) -> float | None:
    """gamma of the recipe's TTMLoss / WTTMLoss term, if it has one."""
    exponents = tuple(m.loss_key for m in methods() if m.gamma is not None and m.gamma.kind == 'exponent')
    term = next(iter(run.view.loss_terms(exponents)), None)
    return None if term is None else resolve_gamma(term.kwargs.get('gamma'), term.kwargs.get('temperature'))


@torch.inference_mode()
def _teacher_logits(run: Run, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if run.loader_config(split) is None:
        raise UsageError(f'{run.recipe_path}: {run.view.loader_path(split)} is required for --split {split}')
    loader = run.eval_loader(split)
    run.teacher.eval()
    logits, targets = [], []
    total, step = len(loader), max(len(loader) // 10, 1)
    for i, batch in enumerate(run.batches(loader, split), 1):
        with run.autocast():
            logits.append(run.teacher(batch[0].to(run.ctx.device, memory_format=run.memory_format)).float().cpu())
        targets.append(batch[1])
        if i % step == 0 or i == total:
            logger.info('calibrate: teacher on %s, batch %d/%d', run.view.loader_path(split), i, total)
    return torch.cat(logits), torch.cat(targets)


def _warn_if_test(run: Run, split: str) -> None:
    """Choosing gamma on the test set sees the test set (as sweep says for choosing a grid point)."""
    test = run.view.dataset_id('test')
    if split == 'test' or run.view.val_is_test:
        logger.warning('warning: calibrating on %s, the recipe\'s test set: a gamma chosen from it has seen the test '
                       'set; calibrate on a held-out part of the training set instead (docs/tuning.md, "Validate '
                       'on held-out training images")',
                       f'{run.view.loader_path(split)} ({test})')


def _diagram(logits: torch.Tensor, targets: torch.Tensor, temperature: float, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, t, title in ((axes[0], 1.0, 'before: T = 1'), (axes[1], temperature, f'after: T* = {temperature:.3f}')):
        count, confidence, accuracy = reliability_bins(logits / t, targets)
        centers = (torch.arange(15) + 0.5) / 15
        ax.bar(centers, accuracy.where(count > 0, torch.zeros_like(accuracy)), width=1 / 15, edgecolor='black',
               label='accuracy')
        ax.plot([0, 1], [0, 1], 'k--', label='perfect calibration')
        ax.scatter(confidence[count > 0], accuracy[count > 0], color='red', s=12, zorder=3, label='(confidence, acc)')
        ax.set_title(f'{title}   ECE {expected_calibration_error(logits / t, targets):.4f}')
        ax.set_xlabel('confidence')
        ax.set_ylabel('accuracy')
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=100, format='png'))
    finally:
        plt.close(fig)
    return path


def calibrate(opts: RunDescription, split: str = 'val', out_dir: str | Path = 'calibration') -> dict:
    """Teacher top-1, NLL and ECE before/after temperature scaling; JSON report (also to ``--summary``) and
    reliability diagram in ``out_dir``. Every output path is checked before the teacher runs."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f'-o={str(out_dir)!r}: is a file, not a folder')
    check_output_folder(out / 'calibration.json', '-o')
    check_outputs(opts)

    def body(ctx: DistContext) -> dict:
        if ctx.distributed:
            raise UsageError('calibrate runs in one process: launch it without torchrun/srun')
        run = Run(opts, ctx)
        if run.teacher is None:
            raise UsageError(f'{run.recipe_path}: the recipe has no models.teacher_model to calibrate')
        stem = run.recipe_path.stem if run.name.endswith('.yaml') else run.name.replace('/', '-')
        report_path, figure_path = out / f'{stem}.calibration.json', out / f'{stem}.reliability.png'
        for path in (report_path, figure_path):  # before the teacher runs
            if opts.summary and Path(opts.summary).expanduser().resolve() == path.resolve():
                raise UsageError(f'--summary={opts.summary!r} is also the report {path} written to -o: one would '
                                 'replace the other; give each output its own path')
        _warn_if_test(run, split)
        logits, targets = _teacher_logits(run, split)
        t_star = fit_temperature(logits, targets)
        gamma = _recipe_gamma(run)
        report = RunSummary(
            kind='calibrate', recipe=run.name, split=split, samples=len(targets),
            top1=100.0 * logits.argmax(1).eq(targets).double().mean().item(),
            nll=nll(logits, targets), ece=expected_calibration_error(logits, targets), temperature=t_star,
            nll_scaled=nll(logits, targets, t_star), ece_scaled=expected_calibration_error(logits / t_star, targets),
            gamma_calibrated=1.0 / t_star, recipe_gamma=gamma,
            u_gamma_recipe=power_sum(logits.double(), gamma).mean().item() if gamma else None,
            u_gamma_calibrated=power_sum(logits.double(), 1.0 / t_star).mean().item())
        write_summary(report_path, report)  # shipped recipes by name (ilsvrc2012-wttm-...), files by their stem
        if opts.summary:
            write_summary(opts.summary, report)
        figure = _diagram(logits, targets, t_star, figure_path)
        logger.info('teacher %s on %s (%d images): top-1 %.2f', run.teacher_config.get('key'), split,
                    report.samples, report.top1)
        logger.info('T = 1      NLL %.4f  ECE %.4f', report.nll, report.ece)
        logger.info('T* = %.4f NLL %.4f  ECE %.4f  -> calibrated gamma = 1/T* = %.4f', t_star,
                    report.nll_scaled, report.ece_scaled, report.gamma_calibrated)
        if gamma:
            logger.info('mean U_gamma: %.4f at the recipe gamma %.4g, %.4f at gamma 1/T*', report.u_gamma_recipe,
                        gamma, report.u_gamma_calibrated)
        logger.info('report %s%s%s', report_path, f'; reliability diagram {figure}' if figure else '',
                    f'; summary {opts.summary}' if opts.summary else '')
        return report.to_json()

    return with_context(opts, body)
