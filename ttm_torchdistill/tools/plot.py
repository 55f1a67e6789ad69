"""`ttm-distill plot`: per-epoch curves of one or more runs from their metrics files."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from .figures import pyplot

__all__ = ['find_metrics', 'load_metrics', 'plot_runs']

PANELS = (('train_loss', 'train loss'), ('lr', 'learning rate'), ('val_top1', 'validation top-1 (%)'),
          ('student_entropy', 'student entropy H(q)'), ('divergence', 'D(p_hat_t || q)'),
          ('u_gamma', 'teacher U_gamma(p_t)'))


def find_metrics(run: str) -> Path:
    """A run's metrics file from the file itself, a run log, a --summary JSON, or a folder holding one."""
    path = Path(run).expanduser()
    if path.is_dir():
        found = sorted(path.rglob('*.metrics.jsonl'))
        if len(found) != 1:
            raise UsageError(f'{run}: expected one *.metrics.jsonl in the folder, found {len(found)}')
        return found[0]
    if path.name.endswith('.metrics.jsonl') and path.is_file():
        return path
    if path.suffix == '.json' and path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f'{run}: not a --summary JSON ({exc})') from None
        metrics = summary.get('metrics') if isinstance(summary, dict) else None
        if metrics and Path(metrics).is_file():
            return Path(metrics)
    sibling = path.with_name(path.stem + '.metrics.jsonl')
    if sibling.is_file():
        return sibling
    raise UsageError(f'{run}: no metrics file (give a .metrics.jsonl, a run log, a --summary JSON or a run folder)')


def load_metrics(path: Path) -> list[dict]:
    """The per-epoch records of a metrics file: one JSON object with an 'epoch' per line."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UsageError(f'{path}: not a metrics file (not text)') from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f'{path}: not a metrics file: line {number} is not JSON ({exc.msg})') from None
        if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
            raise UsageError(f'{path}: not a metrics file: line {number} is not a record with an epoch')
        records.append(record)
    return records


def plot_runs(runs: list[str], output: str | Path = 'runs.png') -> Path:
    """Train loss, lr, validation top-1 and the TTM diagnostics per epoch, one line per run."""
    plt = pyplot()
    if plt is None:
        raise UsageError("plot needs matplotlib: pip install 'ttm-torchdistill[plot]'")
    paths = [find_metrics(run) for run in runs]
    loaded = [load_metrics(path) for path in paths]
    labels = [records[0].get('recipe', run) if records else run for records, run in zip(loaded, runs, strict=True)]
    if len(set(labels)) < len(labels):  # the same recipe twice: tell the runs apart by file
        labels = [f'{label} ({path.parent.name}/{path.name})' for label, path in zip(labels, paths, strict=True)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for i, (records, label) in enumerate(zip(loaded, labels, strict=True)):
        epochs = [r['epoch'] for r in records]
        for ax, (key, _) in zip(axes.flat, PANELS, strict=True):
            values = [r.get(key) for r in records]
            if any(v is not None for v in values):
                ax.plot(epochs, [float('nan') if v is None else v for v in values], marker='.', label=label,
                        color=f'C{i}')
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel('epoch')
        if key == 'lr':
            ax.set_yscale('log')
        if not ax.lines:
            ax.text(0.5, 0.5, 'no data (TTM/WTTM runs only)', ha='center', va='center', transform=ax.transAxes)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
