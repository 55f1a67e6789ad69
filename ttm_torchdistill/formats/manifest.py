"""The sweep manifest (``DIR/sweep.json``): its fields, version, writing, reading and checking.

`ttm-distill sweep` writes it: what makes the sweep itself (``identity``: recipe, --set overrides, grid names), the
recipe, overrides, grid (name, --set key, label, values) and seeds, and per run its grid point, values, seed, folder,
checkpoint name, description (``run``: what runs it, see ``ttm_torchdistill.description``), command line, state,
best validation top-1, error and lockstep group (``group``: the runs of one group trained together; null: alone);
with ``--launcher slurm`` also the array's record. `sweep` (to continue or grow it), `table` and `plot` read it. Files
without a ``version`` are version 1.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ..errors import UsageError, one_line
from ..outputs import write_json

__all__ = ['NAME', 'VERSION', 'manifest_problem', 'read_manifest', 'write_manifest']

NAME = 'sweep.json'
VERSION = 1
_TYPES = {str: 'a string', list: 'a list', dict: 'an object', int: 'an integer'}
TOP = (('identity', dict), ('recipe', str), ('overrides', list), ('grid', list), ('seeds', list), ('runs', list))
RUN = (('point', str), ('values', dict), ('seed', int), ('dir', str), ('ckpt', str))


def manifest_problem(data: object) -> str | None:
    """What in ``data`` differs from the structure `ttm-distill sweep` writes, or None."""
    if not isinstance(data, dict):
        return f'the top level is {type(data).__name__}, not an object'
    version = data.get('version', 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        return f'version={version!r}: this ttm-distill reads versions up to {VERSION}'
    for key, kind in TOP:
        if not isinstance(data.get(key), kind):
            return f'{key!r} is missing or not {_TYPES[kind]}'
    slurm = data.get('slurm')
    if slurm is not None and not (isinstance(slurm, dict) and isinstance(slurm.get('job_id'), str | None)):
        return "'slurm' is not an object with a string job_id"
    if not all(isinstance(o, str) for o in data['overrides']):
        return "'overrides' holds something other than KEY=VALUE strings"
    labels = []
    for i, axis in enumerate(data['grid']):
        if not isinstance(axis, dict) or not all(isinstance(axis.get(k), str) for k in ('key', 'label')) \
                or not isinstance(axis.get('values'), list):
            return f'grid[{i}] is not an object with a string key and label and a list of values'
        labels.append(axis['label'])
    for i, run in enumerate(data['runs']):
        if not isinstance(run, dict):
            return f'runs[{i}] is not an object'
        for key, kind in RUN:
            if not isinstance(run.get(key), kind) or (kind is int and isinstance(run.get(key), bool)):
                return f'runs[{i}].{key} is missing or not {_TYPES[kind]}'
        folder = PurePosixPath(run['dir'])
        if folder.is_absolute() or not folder.parts or '..' in folder.parts:
            return f'runs[{i}].dir={run["dir"]!r}: expected a folder inside the sweep folder'
        if '/' in run['ckpt'] or run['ckpt'] in ('', '.', '..'):
            return f'runs[{i}].ckpt={run["ckpt"]!r}: expected a file name'
        missing = [label for label in labels if label not in run['values']]
        if missing:
            return f'runs[{i}].values has no {missing[0]!r} (a grid label)'
    return None


def read_manifest(directory: Path) -> dict:
    """DIR's sweep.json, checked to be one `ttm-distill sweep` wrote (else one UsageError line naming it)."""
    path = directory / NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f'{directory}: not a sweep folder (no {NAME})') from None
    except (OSError, ValueError) as exc:
        raise UsageError(f'{path}: unreadable ({one_line(exc)})') from None
    problem = manifest_problem(data)
    if problem:
        raise UsageError(f'{path}: not a sweep.json written by `ttm-distill sweep` ({problem})')
    return data


def write_manifest(directory: Path, data: dict) -> None:
    """Write DIR/sweep.json (with this format's version) atomically."""
    write_json(directory / NAME, {'version': VERSION, **data})
