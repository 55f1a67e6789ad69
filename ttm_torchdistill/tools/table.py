"""`ttm-distill table`: the table of run summaries, or of a sweep folder by grid point; sweep.json checked first."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..outputs import check_output_file, write_text
from ..results import FORMATS, collect, format_rows, group, is_finite_number
from ..sweep.manifest import read_manifest
from ..sweep.plan import MANIFEST, RunSpec
from ..sweep.results import sweep_table

__all__ = ['read_sweep', 'sweep_runs', 'table']

_TYPES = {str: 'a string', list: 'a list', dict: 'an object', int: 'an integer'}
_TOP = (('recipe', str), ('overrides', list), ('grid', list), ('seeds', list), ('runs', list))
_RUN = (('point', str), ('values', dict), ('seed', int), ('dir', str), ('ckpt', str))


def _manifest_problem(manifest: object) -> str | None:
    """What in ``manifest`` differs from the structure `ttm-distill sweep` writes and the sweep table reads."""
    if not isinstance(manifest, dict):
        return f'the top level is {type(manifest).__name__}, not an object'
    for key, kind in _TOP:
        if not isinstance(manifest.get(key), kind):
            return f'{key!r} is missing or not {_TYPES[kind]}'
    if not all(isinstance(o, str) for o in manifest['overrides']):
        return "'overrides' holds something other than KEY=VALUE strings"
    labels = []
    for i, axis in enumerate(manifest['grid']):
        if not isinstance(axis, dict) or not all(isinstance(axis.get(k), str) for k in ('key', 'label')):
            return f'grid[{i}] is not an object with a string key and label'
        labels.append(axis['label'])
    for i, run in enumerate(manifest['runs']):
        if not isinstance(run, dict):
            return f'runs[{i}] is not an object'
        for key, kind in _RUN:
            if not isinstance(run.get(key), kind):
                return f'runs[{i}].{key} is missing or not {_TYPES[kind]}'
        missing = [label for label in labels if label not in run['values']]
        if missing:
            return f'runs[{i}].values has no {missing[0]!r} (a grid label)'
    return None


def read_sweep(directory: Path) -> dict:
    """``directory``'s sweep.json, checked to have the structure `ttm-distill sweep` writes (one line if not)."""
    manifest = read_manifest(directory)
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise UsageError(f'{directory / MANIFEST}: not a `ttm-distill sweep` manifest ({problem})')
    return manifest


def sweep_runs(directory: Path, manifest: dict) -> list[RunSpec]:
    """The runs a checked manifest lists, as the sweep reads them."""
    return [RunSpec(e['point'], e['values'], e['seed'], directory / e['dir'], e['ckpt'], []) for e in manifest['runs']]


def _sweep_notes(directory: Path, manifest: dict) -> list[str]:
    """One line per finished run whose summary holds a best validation top-1 that is not a finite number: its grid
    point gets no mean in the sweep table (which counts the run as finished), so the file is named here."""
    notes = []
    for run in sweep_runs(directory, manifest):
        try:
            summary = json.loads(run.summary_path.read_text())
        except (OSError, ValueError):
            continue  # no summary yet, or a cut-off one: the run is not finished, the sweep resumes it
        if isinstance(summary, dict) and not is_finite_number(best := summary.get('best_val_top1')):
            value = 'null' if best is None else str(best) if isinstance(best, float) else repr(best)
            notes.append(f'{run.summary_path}: best_val_top1 is {value}, not a finite number: grid point '
                         f'{run.point} has no mean')
    return notes


def _manifests(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The sweep.json files under ``paths`` (not run summaries: a sweep's runs are counted by their own summaries),
    and a note for each one `ttm-distill sweep` did not write."""
    found, notes = [], []
    for spec in paths:
        path = Path(spec).expanduser()
        for manifest in sorted(path.rglob(MANIFEST)) if path.is_dir() else []:
            found.append(manifest)
            try:
                read_sweep(manifest.parent)
            except UsageError as exc:
                notes.append(f'{exc}: skipped; the run summaries beside it are tabulated')
    return found, notes


def _sweep_folder(paths: list[str]) -> Path | None:
    if len(paths) == 1 and (Path(paths[0]).expanduser() / MANIFEST).is_file():
        return Path(paths[0]).expanduser()
    return None


def table(paths: list[str], fmt: str = 'markdown', output: str | None = None) -> str:
    """Render the table of ``paths``; print notes (files left out, values not finite) to stderr; write ``output``
    (checked before anything is read; an earlier table there is replaced, atomically) when given."""
    if fmt not in FORMATS:
        raise UsageError(f'table: --format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    out = Path(output).expanduser() if output else None
    if out is not None:
        check_output_file(out, 'table -o', replace=True)
    sweep = _sweep_folder(paths)
    if sweep is not None:
        try:
            manifest = read_sweep(sweep)
        except UsageError:  # not ours: noted below, and the folder's run summaries are still a table
            sweep = None
    if sweep is not None:
        notes = _sweep_notes(sweep, manifest)
        text = sweep_table(sweep, fmt)
    else:
        manifests, notes = _manifests(paths)
        summaries, found = collect(paths, exclude=[*manifests, *([out] if out else [])])
        notes += found
    for note in notes:
        print(f'ttm-distill: {note}', file=sys.stderr)
    if sweep is None:
        if not summaries:
            raise UsageError(f'table: no run summaries in {", ".join(paths)} (write them with train --summary; '
                             'test summaries are left out)')
        text = format_rows(group(summaries), fmt)
    if out is not None:
        write_text(out, text + '\n')
    return text
