"""A sweep's results: one row per grid point (mean and std of the best validation top-1 over seeds), best first; in a
sweep of several recipes, one row per recipe and point, the recipes in the sweep's order, each beside the top-1 the
paper reports for it."""
from __future__ import annotations

import csv
import io
import math
import shlex
from pathlib import Path

from ..description import Override, RunDescription
from ..errors import UsageError
from ..formats.manifest import RecipeRecord, SweepManifest, read_manifest
from ..formats.summary import is_finite_number
from ..outputs import dumps_json
from ..results import FORMATS, mean_std, plus_minus
from .runfolder import runs_in

__all__ = ['sweep_rows', 'sweep_table']


def _best_command(manifest: SweepManifest, recipe: RecipeRecord, values: dict) -> str:
    """The command that trains a grid point of a recipe with its test pass: the recipe, the sweep's overrides and the
    point's values (its own outputs: the recipe's)."""
    grid = (Override(key, values[axis.label]) for axis, key in zip(manifest.grid, recipe.keys, strict=True))
    return shlex.join(['ttm-distill', *RunDescription(recipe.recipe, (*manifest.overrides, *grid)).argv()])


def _mean_key(row: dict) -> float:
    return -row['val_top1_mean'] if row['val_top1_mean'] is not None else math.inf


def sweep_rows(directory: Path, manifest: SweepManifest | None = None) -> list[dict]:
    """One row per recipe and grid point: the recipe's label (None in a one-recipe sweep), values, finished/failed
    counts, mean and std of best val top-1, the paper's top-1 and the difference; the recipes in the sweep's order,
    each one's points best first, its best point marked (``best``) where the sweep has a grid. ``manifest``: DIR's
    sweep.json, read when not given."""
    manifest = read_manifest(directory) if manifest is None else manifest
    rows: dict[str, dict] = {}
    for run in runs_in(directory, manifest):
        row = rows.setdefault(run.point, {'recipe': run.recipe, 'point': run.point, 'values': run.values, 'seeds': 0,
                                          'finished': 0, 'failed': 0, 'val_top1': [], 'errors': []})
        state, best, error = run.state()
        row['seeds'] += 1
        if state == 'finished':
            row['finished'] += 1
            row['val_top1'].append(best)
        elif state == 'failed':
            row['failed'] += 1
            row['errors'].append(f'{run.name}: {error}')
    for row in rows.values():
        recipe = manifest.recipe_record(row['recipe'])
        row['val_top1_mean'], row['val_top1_std'] = mean_std(row['val_top1'])
        paper = recipe.paper_top1 if is_finite_number(recipe.paper_top1) else None
        row['paper_top1'] = paper
        row['diff'] = row['val_top1_mean'] - paper if paper is not None and row['val_top1_mean'] is not None else None
        row['command'] = _best_command(manifest, recipe, row['values'])
    order = {r.label or None: i for i, r in enumerate(manifest.recipes)}
    ordered = sorted(rows.values(), key=lambda r: (order.get(r['recipe'], len(order)), _mean_key(r)))
    for i, row in enumerate(ordered):
        first = i == 0 or ordered[i - 1]['recipe'] != row['recipe']
        row['best'] = bool(manifest.grid) and first and row['val_top1_mean'] is not None
    return ordered


def _groups(manifest: SweepManifest) -> dict[str, list[str]]:
    """Which grid points trained together (``sweep --lockstep``): group name -> points."""
    groups: dict[str, list[str]] = {}
    for entry in manifest.runs:
        if isinstance(entry.group, str):
            groups.setdefault(entry.group, []).append(entry.point)
    return groups


def _number(value: float | None, signed: bool = False) -> str:
    return 'n/a' if value is None else f'{value:+.2f}' if signed else f'{value:.2f}'


def _csv(manifest: SweepManifest, rows: list[dict]) -> str:
    labels, several = [axis.label for axis in manifest.grid], manifest.several
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow([*(['recipe'] if several else []), 'best', *labels, 'seeds', 'finished', 'failed', 'val_top1_mean',
                     'val_top1_std', *(['paper_top1', 'diff'] if several else []), 'errors', 'command'])
    for r in rows:
        writer.writerow([*([r['recipe']] if several else []), int(r['best']), *(r['values'][k] for k in labels),
                         r['seeds'], r['finished'], r['failed'], r['val_top1_mean'], r['val_top1_std'],
                         *([r['paper_top1'], r['diff']] if several else []), ' | '.join(r['errors']), r['command']])
    return out.getvalue().rstrip('\n')


def _markdown(directory: Path, manifest: SweepManifest, rows: list[dict]) -> str:
    labels, several, grid = [axis.label for axis in manifest.grid], manifest.several, bool(manifest.grid)
    seeds = f'seeds {" ".join(map(str, manifest.seeds))}'
    what = f'{len(manifest.recipes)} recipes of one pair' if several else manifest.recipe
    lines = [f'sweep {directory} ({what}, {seeds})', '']
    if several:
        lines += [f'{r.label}: {r.recipe}' for r in manifest.recipes] + ['']
    head = [*(['recipe'] if several else []), *(['best'] if grid else []), *labels, 'finished', 'failed',
            'val top-1 (mean +- std)', *(['paper top-1', 'diff'] if several else [])]
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [*([r['recipe']] if several else []), *(['*' if r['best'] else ''] if grid else []),
                 *(r['values'][k] for k in labels), f'{r["finished"]}/{r["seeds"]}', str(r['failed']),
                 plus_minus(r['val_top1_mean'], r['val_top1_std']),
                 *([_number(r['paper_top1']), _number(r['diff'], True)] if several else [])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    for r in rows:
        lines += [f'failed {error}' for error in r['errors']]
    lines += [f'lockstep group {name}: {", ".join(points)}' for name, points in _groups(manifest).items()]
    for best in (r for r in rows if r['best']):
        point = ' '.join(f'{k}={best["values"][k]}' for k in labels)
        score = plus_minus(best['val_top1_mean'], best['val_top1_std'])
        of = f'best of {best["recipe"]}' if several else 'best'
        lines += ['', f'{of}: {point} (validation top-1 {score} over {best["finished"]} seed(s)); '
                      'train it with the test pass:', f'    {best["command"]}']
    return '\n'.join(lines)


def sweep_table(directory: Path, fmt: str = 'markdown') -> str:
    """The sweep's table: one row per grid point (and recipe), best mean validation top-1 over seeds first (per
    recipe, the recipes in the sweep's order, each with the paper's top-1). JSON: ``best`` is the one recipe's best
    row (null with several recipes, whose best rows are marked ``best``)."""
    if fmt not in FORMATS:
        raise UsageError(f'--format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    directory = Path(directory)
    manifest = read_manifest(directory)
    rows = sweep_rows(directory, manifest)
    if fmt == 'json':
        best = None if manifest.several else next((r for r in rows if r['best']), None)
        return dumps_json({'recipe': manifest.recipe, 'recipes': [r.to_json() for r in manifest.recipes],
                           'grid': [axis.to_json() for axis in manifest.grid], 'seeds': list(manifest.seeds),
                           'rows': rows, 'best': best, 'lockstep_groups': _groups(manifest)}, indent=2)
    if fmt == 'csv':
        return _csv(manifest, rows)
    return _markdown(directory, manifest, rows)
