"""`ttm-distill table`: the table of run summaries, or of a sweep folder by grid point (and recipe); sweep.json checked
first."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError
from ..formats.manifest import NAME as MANIFEST
from ..formats.manifest import SweepManifest, read_manifest
from ..formats.summary import is_finite_number
from ..outputs import check_output_file, write_text
from ..results import FORMATS, collect, format_rows, group
from ..sweep.results import sweep_table
from ..sweep.runfolder import runs_in

__all__ = ['table']


def _sweep_notes(directory: Path, manifest: SweepManifest) -> list[str]:
    """One line per finished run whose summary holds a best validation top-1 that is not a finite number: its grid
    point gets no mean in the sweep table (which counts the run as finished), so the file is named here; and one per
    summary.json that does not count (cut off, foreign, of a newer version: the run is not finished)."""
    notes = []
    for run in runs_in(directory, manifest):
        summary, skipped = run.read_summary()  # none yet, or one that does not count: the sweep resumes the run
        if skipped is not None:
            notes.append(skipped)
        if summary is not None and not is_finite_number(best := summary.best_val_top1):
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
                read_manifest(manifest.parent)
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
            manifest = read_manifest(sweep)
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
