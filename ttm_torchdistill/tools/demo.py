"""`ttm-distill demo`: CE, KD, TTM and WTTM students of one teacher on the bundled digits, 3 seeds each."""
from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch

from ..data import DigitsDataset
from ..description import RunDescription
from ..formats.metrics import read_records
from ..formats.summary import RunSummary, read_training_summary
from ..functional import shannon_entropy
from ..models import digits_mlp
from ..recipe import RecipeDocument, RecipeView, resolve_recipe
from ..runner.commands import run_train
from ..sweep.command import run_sweep
from ..sweep.results import sweep_rows
from .figures import pyplot

__all__ = ['GRID', 'METHODS', 'run_demo', 'run_grid']

METHODS = ('ce', 'kd', 'ttm', 'wttm')
LABELS = {'ce': 'student alone (CE)', 'kd': 'KD', 'ttm': 'TTM', 'wttm': 'WTTM'}
COLORS = {'ce': '#999999', 'kd': '#4c72b0', 'ttm': '#dd8452', 'wttm': '#55a868'}
# The validation-split grid behind the demo recipes' hyperparameters (docs/getting-started.md).
GRID = {
    'kd': {'temperature': (1.0, 2.0, 4.0, 8.0), 'alpha': (0.1, 0.5, 0.9)},
    'ttm': {'gamma': (0.25, 0.5, 0.8), 'beta': (0.5, 1.0, 2.0, 4.0)},
    'wttm': {'gamma': (0.25, 0.5, 0.8), 'beta': (0.5, 1.0, 2.0, 4.0)},
}


def _say(message: str) -> None:
    print(message, flush=True)


def _train(recipe: str, run_dir: Path, seed: int, overrides: list[str]) -> RunSummary:
    """One demo training in its own folder (removed first: the demo owns it)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    key = RecipeView(RecipeDocument.open(resolve_recipe(recipe))).student_key
    ckpt = 'digits_cnn.pt' if recipe == 'demo/teacher' else 'digits_mlp.pt'  # the recipes' own file names
    overrides = [f'models.{key}.dst_ckpt={run_dir / ckpt}', *overrides]
    return RunSummary.from_json(run_train(RunDescription(recipe=recipe, overrides=overrides, device='cpu', seed=seed,
                                                         quiet=True, summary=str(run_dir / 'summary.json'))))


def _teacher(out: Path, retrain: bool) -> tuple[Path, RunSummary]:
    ckpt = out / 'teacher' / 'digits_cnn.pt'
    summary_path = out / 'teacher' / 'summary.json'
    if ckpt.is_file() and summary_path.is_file() and not retrain:
        summary, problem = read_training_summary(summary_path)
        if summary is not None:
            _say(f'reusing the trained teacher {ckpt} (--retrain-teacher to train it again)')
            return ckpt, summary
        _say(f'{summary_path}: {problem}; the teacher is trained again')
    _say('training the teacher (digits_cnn, cross entropy) ...')
    summary = _train('demo/teacher', out / 'teacher', 0, [])
    _say(f'teacher: test top-1 {summary.student_test_top1:.2f}')
    return ckpt, summary


def _student_overrides(method: str, teacher_ckpt: Path, epochs: int | None) -> list[str]:
    overrides = [] if method == 'ce' else [f'models.teacher_model.src_ckpt={teacher_ckpt}']
    return overrides + ([f'train.num_epochs={epochs}'] if epochs else [])


@torch.inference_mode()
def _test_entropy(ckpt: Path) -> float:
    """Mean Shannon entropy of the student's softmax over the test split."""
    model = digits_mlp(num_classes=10, hidden=16)
    model.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=False)['model'])
    model.eval()
    data = DigitsDataset('test')
    return shannon_entropy(model(data.images)).mean().item()


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_demo(out: str | Path = 'demo_runs', seeds: tuple[int, ...] = (0, 1, 2), epochs: int | None = None,
             retrain_teacher: bool = False) -> dict:
    """Train the teacher once, every student method for each seed; print a table, write JSON and a PNG."""
    out = Path(out)
    start = time.perf_counter()
    teacher_ckpt, teacher = _teacher(out, retrain_teacher)
    runs = {m: [] for m in METHODS}
    total, done = len(METHODS) * len(seeds), 0
    for seed in seeds:
        for method in METHODS:
            run_dir = out / method / f'seed{seed}'
            t0 = time.perf_counter()
            summary = _train(f'demo/{method}', run_dir, seed, _student_overrides(method, teacher_ckpt, epochs))
            metrics = read_records(Path(summary.metrics))
            runs[method].append({
                'seed': seed, 'test_top1': summary.student_test_top1, 'wall_s': time.perf_counter() - t0,
                'test_entropy': _test_entropy(Path(summary.best_ckpt)),
                'val_top1_per_epoch': [r['val_top1'] for r in metrics],
            })
            done += 1
            _say(f'[{done}/{total}] {LABELS[method]:<20} seed {seed}: test top-1 {summary.student_test_top1:.2f} '
                 f'({runs[method][-1]["wall_s"]:.1f} s)')
    rows = []
    for method in METHODS:
        mean, std = _mean_std([r['test_top1'] for r in runs[method]])
        rows.append({'method': method, 'label': LABELS[method], 'test_top1_mean': mean, 'test_top1_std': std,
                     'test_entropy_mean': statistics.fmean(r['test_entropy'] for r in runs[method]),
                     'wall_s': sum(r['wall_s'] for r in runs[method])})
    result = {'teacher_test_top1': teacher.student_test_top1, 'seeds': list(seeds), 'epochs': epochs,
              'rows': rows, 'runs': runs, 'wall_s': time.perf_counter() - start}
    table = format_table(result)
    _say(table)
    (out / 'demo.json').write_text(json.dumps(result, indent=2) + '\n')
    figure = _figure(result, out / 'demo.png')
    where = f'; figure: {figure}' if figure else ' (no figure: pip install matplotlib)'
    _say(f'results: {out / "demo.json"}{where}')
    return result


def format_table(result: dict) -> str:
    n = len(result['seeds'])
    lines = [f'teacher (digits_cnn) test top-1: {result["teacher_test_top1"]:.2f}',
             f'{"method":<22}{f"test top-1 (mean +- std, {n} seeds)":>36}{"test entropy":>14}{"wall s":>9}']
    for row in result['rows']:
        acc = f'{row["test_top1_mean"]:.2f} +- {row["test_top1_std"]:.2f}'
        lines.append(f'{row["label"]:<22}{acc:>36}{row["test_entropy_mean"]:>14.3f}{row["wall_s"]:>9.1f}')
    return '\n'.join(lines)


def _figure(result: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    rows = result['rows']
    x = range(len(rows))
    bars.bar(x, [r['test_top1_mean'] for r in rows], yerr=[r['test_top1_std'] for r in rows], capsize=6,
             color=[COLORS[r['method']] for r in rows])
    for i, r in enumerate(rows):
        tops = [run['test_top1'] for run in result['runs'][r['method']]]
        bars.scatter([i] * len(tops), tops, color='black', s=10, zorder=3)
    low = min(run['test_top1'] for runs in result['runs'].values() for run in runs)
    bars.set_ylim(max(0.0, math.floor(low) - 2), 100)
    bars.set_xticks(list(x), [r['label'] for r in rows], rotation=15)
    bars.set_ylabel('student test top-1 (%)')
    bars.axhline(result['teacher_test_top1'], color='black', linestyle='--', linewidth=1, label='teacher')
    bars.legend(loc='lower right')
    bars.set_title(f'digits: mean +- std over {len(result["seeds"])} seeds')
    for r in rows:
        per_seed = [run['val_top1_per_epoch'] for run in result['runs'][r['method']]]
        mean = [statistics.fmean(v) for v in zip(*per_seed, strict=True)]
        curves.plot(range(1, len(mean) + 1), mean, label=r['label'], color=COLORS[r['method']])
    curves.set_xlabel('epoch')
    curves.set_ylabel('validation top-1 (%), mean over seeds')
    curves.set_ylim(80, 100)
    curves.legend(loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_grid(out: str | Path = 'demo_runs/grid', seeds: tuple[int, ...] = (0, 1), epochs: int | None = None,
             retrain_teacher: bool = False) -> list[dict]:
    """Validation top-1 of every GRID point, one `ttm-distill sweep` per method (the test split is not evaluated);
    ``epochs``: the students' epochs (default: the recipes')."""
    out = Path(out)
    teacher_ckpt, _ = _teacher(out, retrain_teacher)
    results = []
    for method, grid in GRID.items():
        axes = [f'{name}={",".join(map(str, values))}' for name, values in grid.items()]
        _say(f'{method}: ttm-distill sweep demo/{method} ' + ' '.join(f'--grid {a}' for a in axes))
        if run_sweep([f'demo/{method}'], axes, list(seeds), _student_overrides(method, teacher_ckpt, epochs),
                     str(out / method)) == 130:
            raise KeyboardInterrupt  # the sweep stopped its runs; `demo --grid` again resumes them
        for row in sweep_rows(out / method):
            point = {name: float(row['values'][name]) for name in grid}
            results.append({'method': method, **point, 'val_top1_mean': row['val_top1_mean']})
    (out / 'grid.json').write_text(json.dumps(results, indent=2) + '\n')
    for method in GRID:
        best = next(r for r in results if r['method'] == method)  # the sweep's table lists the best point first
        score = 'no run finished' if best['val_top1_mean'] is None else f'val top-1 {best["val_top1_mean"]:.2f}'
        _say(f'best {method}: ' + ', '.join(f'{k}={best[k]}' for k in GRID[method]) + f' ({score})')
    return results
