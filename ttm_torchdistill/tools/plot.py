"""`ttm-distill plot`: per-epoch curves of runs, or of every run of a sweep folder, from their metrics files.

The output path and image format are checked before anything is read, and the figure is written atomically
(rendered in memory, then renamed into place), so the path printed is the file written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..formats.manifest import NAME as MANIFEST
from ..formats.manifest import read_manifest
from ..formats.metrics import SUFFIX, diagnostic_keys, metrics_path, read_records
from ..formats.summary import RunSummary, load_summary
from ..outputs import atomic_write, check_output_file
from ..sweep.runfolder import runs_in
from .figures import pyplot

__all__ = ['find_metrics', 'image_formats', 'load_metrics', 'plot_runs']

PANELS = (('train_loss', 'train loss'), ('lr', 'learning rate'), ('val_top1', 'validation top-1 (%)'))
"""the panels of every figure; then one per diagnostic the runs' losses report (``formats.metrics``)"""
COLUMNS = 3
NEEDS_MORE = {'pgf': 'needs a LaTeX installation'}
"""formats matplotlib lists but cannot write without more software"""
LINESTYLES = ('-', '--', ':', '-.')


@dataclass
class Curve:
    label: str
    path: Path
    """the metrics file"""
    records: list[dict]
    color: int
    linestyle: str = '-'


def find_metrics(run: str) -> Path:
    """A run's metrics file from the file itself, a run log or a --summary JSON."""
    path = Path(run).expanduser()
    if path.name.endswith(SUFFIX) and path.is_file():
        return path
    if path.suffix == '.json' and path.is_file():
        data, problem = load_summary(path)
        if problem is not None:
            raise UsageError(f'{run}: not a --summary JSON ({problem})')
        try:
            metrics = RunSummary.from_json(data).metrics
        except UsageError:  # another file: its name may still lead to the metrics
            metrics = None
        if isinstance(metrics, str) and metrics and Path(metrics).is_file():
            return Path(metrics)
    sibling = metrics_path(path)
    if sibling.is_file():
        return sibling
    raise UsageError(f'{run}: no metrics file (give a .metrics.jsonl, a run log, a --summary JSON, a run folder or '
                     'a sweep folder)')


def load_metrics(path: Path) -> list[dict]:
    """The per-epoch records of a metrics file: one JSON object with an 'epoch' per line; at least one."""
    records = read_records(path)
    if not records:
        raise UsageError(f'{path}: empty metrics file (no epoch has finished in that run yet)')
    return records


def image_formats() -> list[str]:
    """File extensions the figure can be written as (matplotlib's, less those that need more software)."""
    from matplotlib.figure import Figure

    return [f for f in Figure().canvas.get_supported_filetypes() if f not in NEEDS_MORE]


def _output(output: str | Path) -> tuple[Path, str]:
    """The file to write and its format; checked before anything is read. No extension: PNG, PATH.png."""
    path = Path(output).expanduser()
    check_output_file(path, 'plot -o', replace=True)
    fmt = path.suffix[1:].lower()
    if not fmt:
        path, fmt = path.with_name(path.name + '.png'), 'png'
        check_output_file(path, 'plot -o', replace=True)
    formats = image_formats()
    if fmt not in formats:
        why = f'{fmt} {NEEDS_MORE[fmt]}' if fmt in NEEDS_MORE else f'.{fmt} is not an image format matplotlib writes'
        raise UsageError(f'plot -o={str(output)!r}: {why}; give one of {", ".join("." + f for f in formats)}')
    return path, fmt


def _sweep_curves(directory: Path, first_color: int) -> list[Curve]:
    """Every run of a sweep folder that has metrics, labelled by grid point and seed: one colour per point, one
    line style per seed. Runs without metrics yet are named on stderr and left out."""
    runs = runs_in(directory, read_manifest(directory))
    points = list(dict.fromkeys(run.point for run in runs))
    seeds = list(dict.fromkeys(run.seed for run in runs))
    curves = []
    for run in runs:
        found = sorted(run.directory.glob('*' + SUFFIX))
        if len(found) > 1:
            raise UsageError(f'{run.directory}: expected one *.metrics.jsonl in the run folder, found {len(found)}')
        state = run.state()[0]
        records = read_records(found[0]) if found else []
        if not records:
            print(f'ttm-distill: {directory}: {run.name} ({state}): no metrics yet, not plotted', file=sys.stderr)
            continue
        label = run.describe() + (f' ({state})' if state != 'finished' else '')
        curves.append(Curve(label, found[0], records, first_color + points.index(run.point),
                            LINESTYLES[seeds.index(run.seed) % len(LINESTYLES)]))
    if not curves:
        raise UsageError(f'{directory}: no run of the sweep has metrics yet ({len(runs)} run(s) in {MANIFEST})')
    return curves


def _run_curve(metrics: Path, records: list[dict], color: int) -> Curve:
    label = records[0].get('recipe', str(metrics))
    return Curve(label if isinstance(label, str) else str(metrics), metrics, records, color)


def _ours(sweep: Path) -> bool:
    """Whether the folder's sweep.json was written by `ttm-distill sweep` (else a note says it is skipped)."""
    try:
        read_manifest(sweep)
    except UsageError as exc:
        print(f'ttm-distill: {exc}: skipped, its runs are drawn as plain runs', file=sys.stderr)
        return False
    return True


def _folder_curves(folder: Path, first_color: int) -> list[Curve]:
    """Every run below a folder: the runs of each sweep folder in it (labelled by grid point and seed), and each
    other metrics file; runs with no epoch yet, and sweep.json files not written by `ttm-distill sweep`, are named on
    stderr and left out (a foreign one's runs are drawn as plain runs)."""
    sweeps = [manifest.parent for manifest in sorted(folder.rglob(MANIFEST)) if _ours(manifest.parent)]
    if folder in sweeps:  # a sweep folder itself
        return _sweep_curves(folder, first_color)
    curves: list[Curve] = []
    for sweep in sweeps:
        try:
            curves += _sweep_curves(sweep, first_color + len(curves))
        except UsageError as exc:  # none of its runs has an epoch yet
            print(f'ttm-distill: {exc}: not plotted', file=sys.stderr)
    for metrics in sorted(folder.rglob('*' + SUFFIX)):
        if any(sweep in metrics.parents for sweep in sweeps):
            continue
        records = read_records(metrics)
        if not records:
            print(f'ttm-distill: {metrics}: no epoch has finished in that run yet, not plotted', file=sys.stderr)
            continue
        curves.append(_run_curve(metrics, records, first_color + len(curves)))
    if not curves:
        raise UsageError(f'{folder}: no run with metrics in the folder (no *.metrics.jsonl with a finished epoch)')
    return curves


def _curves(runs: list[str]) -> list[Curve]:
    curves: list[Curve] = []
    for run in runs:
        path = Path(run).expanduser()
        if path.is_dir():
            curves += _folder_curves(path, len(curves))
            continue
        metrics = find_metrics(run)
        curves.append(_run_curve(metrics, load_metrics(metrics), len(curves)))
    labels = [c.label for c in curves]
    for curve in curves:  # the same recipe twice: tell the runs apart by file
        if labels.count(curve.label) > 1:
            curve.label = f'{curve.label} ({curve.path.parent.name}/{curve.path.name})'
    return curves


def plot_runs(runs: list[str], output: str | Path = 'runs.png') -> Path:
    """Train loss, lr, validation top-1 and every diagnostic of the runs' losses per epoch, one line per run (a sweep
    folder: per run of the sweep); returns the file written."""
    plt = pyplot()
    if plt is None:
        raise UsageError("plot needs matplotlib: pip install 'ttm-torchdistill[plot]'")
    path, fmt = _output(output)
    curves = _curves(runs)
    panels = [*PANELS, *((key, key) for key in diagnostic_keys([r for c in curves for r in c.records]))]
    rows = -(-len(panels) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(5 * COLUMNS, 4 * rows), squeeze=False)
    try:
        for curve in curves:
            epochs = [r['epoch'] for r in curve.records]
            for ax, (key, _) in zip(axes.flat, panels, strict=False):  # the last row may have room to spare
                values = [r.get(key) for r in curve.records]
                if any(v is not None for v in values):
                    ax.plot(epochs, [float('nan') if v is None else v for v in values], marker='.', label=curve.label,
                            color=f'C{curve.color % 10}', linestyle=curve.linestyle)
        for ax, (key, title) in zip(axes.flat, panels, strict=False):
            ax.set_title(title)
            ax.set_xlabel('epoch')
            if key == 'lr':
                ax.set_yscale('log')
            if not ax.lines:
                ax.text(0.5, 0.5, 'no data in these runs', ha='center', va='center', transform=ax.transAxes)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=100))
    finally:
        plt.close(fig)
    return path
