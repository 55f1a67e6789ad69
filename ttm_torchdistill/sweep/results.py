"""A sweep's results: one row per grid point (mean and std of the best validation top-1 over seeds), best first."""
from __future__ import annotations

import csv
import io
import math
import shlex
from pathlib import Path

from ..description import Override, RunDescription
from ..errors import UsageError
from ..formats.manifest import SweepManifest, read_manifest
from ..outputs import dumps_json
from ..results import FORMATS, mean_std, plus_minus
from .runfolder import runs_in

__all__ = ['sweep_rows', 'sweep_table']


def _best_command(manifest: SweepManifest, values: dict) -> str:
    """The command that trains a grid point with its test pass: the sweep's recipe and overrides, and the point's
    values (its own outputs: the recipe's)."""
    grid = (Override(axis.key, values[axis.label]) for axis in manifest.grid)
    return shlex.join(['ttm-distill', *RunDescription(manifest.recipe, (*manifest.overrides, *grid)).argv()])


def sweep_rows(directory: Path, manifest: SweepManifest | None = None) -> list[dict]:
    """One row per grid point: values, finished/failed counts, mean and std of best val top-1; best first.
    ``manifest``: DIR's sweep.json, read when not given."""
    manifest = read_manifest(directory) if manifest is None else manifest
    rows: dict[str, dict] = {}
    for run in runs_in(directory, manifest):
        row = rows.setdefault(run.point, {'point': run.point, 'values': run.values, 'seeds': 0, 'finished': 0,
                                          'failed': 0, 'val_top1': [], 'errors': []})
        state, best, error = run.state()
        row['seeds'] += 1
        if state == 'finished':
            row['finished'] += 1
            row['val_top1'].append(best)
        elif state == 'failed':
            row['failed'] += 1
            row['errors'].append(f'{run.name}: {error}')
    for row in rows.values():
        row['val_top1_mean'], row['val_top1_std'] = mean_std(row['val_top1'])
        row['command'] = _best_command(manifest, row['values'])
    ordered = sorted(rows.values(), key=lambda r: -r['val_top1_mean'] if r['val_top1_mean'] is not None else math.inf)
    for i, row in enumerate(ordered):
        row['best'] = i == 0 and row['val_top1_mean'] is not None
    return ordered


def _groups(manifest: SweepManifest) -> dict[str, list[str]]:
    """Which grid points trained together (``sweep --lockstep``): group name -> points."""
    groups: dict[str, list[str]] = {}
    for entry in manifest.runs:
        if isinstance(entry.group, str):
            groups.setdefault(entry.group, []).append(entry.point)
    return groups


def sweep_table(directory: Path, fmt: str = 'markdown') -> str:
    """The sweep's table: one row per grid point, best mean validation top-1 over seeds first."""
    if fmt not in FORMATS:
        raise UsageError(f'--format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    directory = Path(directory)
    manifest = read_manifest(directory)
    rows = sweep_rows(directory, manifest)
    labels = [axis.label for axis in manifest.grid]
    best = next((r for r in rows if r['best']), None)
    if fmt == 'json':
        return dumps_json({'recipe': manifest.recipe, 'grid': [axis.to_json() for axis in manifest.grid],
                           'seeds': list(manifest.seeds), 'rows': rows, 'best': best,
                           'lockstep_groups': _groups(manifest)}, indent=2)
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(['best', *labels, 'seeds', 'finished', 'failed', 'val_top1_mean', 'val_top1_std', 'errors',
                         'command'])
        for r in rows:
            writer.writerow([int(r['best']), *(r['values'][k] for k in labels), r['seeds'], r['finished'], r['failed'],
                             r['val_top1_mean'], r['val_top1_std'], ' | '.join(r['errors']), r['command']])
        return out.getvalue().rstrip('\n')
    lines = [f'sweep {directory} ({manifest.recipe}, seeds {" ".join(map(str, manifest.seeds))})', '',
             '| best | ' + ' | '.join(labels) + ' | finished | failed | val top-1 (mean +- std) |',
             '|---|' + '---|' * len(labels) + '---|---|---|']
    for r in rows:
        cells = ['*' if r['best'] else '', *(r['values'][k] for k in labels), f'{r["finished"]}/{r["seeds"]}',
                 str(r['failed']), plus_minus(r['val_top1_mean'], r['val_top1_std'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    for r in rows:
        lines += [f'failed {error}' for error in r['errors']]
    lines += [f'lockstep group {name}: {", ".join(points)}' for name, points in _groups(manifest).items()]
    if best is not None:
        point = ' '.join(f'{k}={best["values"][k]}' for k in labels)
        score = plus_minus(best['val_top1_mean'], best['val_top1_std'])
        lines += ['', f'best: {point} (validation top-1 {score} over {best["finished"]} seed(s)); '
                      'train it with the test pass:', f'    {best["command"]}']
    return '\n'.join(lines)
