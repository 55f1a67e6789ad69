"""Run summaries (`--summary` JSON files) grouped into one row per recipe and overrides, and rendered.

Runs of the same recipe with the same overrides, apart from the seed and output paths, are one
row: mean +- std of the best validation top-1 and of the student's test top-1, next to the top-1
the paper reports (the recipe's ``paper.top1``) and the difference. A folder that holds a sweep
(``sweep.json``) is tabulated by grid point instead (:func:`ttm_torchdistill.sweep.results.sweep_table`).

Counting is honest: a file reached through two paths counts once, test summaries (kind ``test``)
are not training runs and are left out with a note, and a run whose result is not a finite number
(NaN, an infinity, or null where a finished run has a number) stays in its row's run count: the row
says how many of its values are finite and names the files.
"""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..description import Override
from ..errors import UsageError
from ..formats.summary import RunSummary, has_test_pass, is_finite_number, nonfinite_values, read_training_summary
from ..outputs import dumps_json

__all__ = ['FORMATS', 'Row', 'collect', 'format_rows', 'group', 'mean_std', 'plus_minus']

FORMATS = ('markdown', 'csv', 'json')
OUTPUT_KEYS = ('dst_ckpt',)
"""override keys that only move outputs: runs differing in them share a row"""


@dataclass
class Row:
    recipe: str
    overrides: str
    runs: int
    """training runs in the row, every one counted, whether its values are finite or not"""
    val_top1_mean: float | None
    val_top1_std: float | None
    test_top1_mean: float | None
    test_top1_std: float | None
    paper_top1: float | None
    diff: float | None
    """test top-1 mean (the best validation top-1 where no test pass ran) minus the paper's top-1"""
    val_top1_finite: int = 0
    """runs whose best validation top-1 is a finite number (the mean and std are over these)"""
    tested: int = 0
    """runs with a test pass (train without --no-test)"""
    test_top1_finite: int = 0
    """tested runs whose student test top-1 is a finite number (the mean and std are over these)"""
    nonfinite_files: list[str] = field(default_factory=list)
    """summaries in the row with a best validation or test top-1 that is not a finite number"""


def _files(paths: list[str], exclude: list[Path]) -> list[Path]:
    """The JSON files of ``paths``, each once however it was reached (resolved path), ``exclude`` left out."""
    found: list[Path] = []
    for spec in paths:
        path = Path(spec).expanduser()
        if path.is_dir():
            found.extend(sorted(path.rglob('*.json')))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f'table: {spec}: no such file or folder')
    seen = {path.resolve() for path in exclude}
    files = []
    for file in found:
        real = file.resolve()
        if real not in seen:
            seen.add(real)
            files.append(file)
    return files


def collect(paths: list[str], exclude: list[Path] = ()) -> tuple[list[tuple[Path, RunSummary]], list[str]]:
    """Training-run summaries found in ``paths`` (files, or folders searched recursively for ``*.json``), each file
    once, and one note per file that is left out (unreadable, not a summary, a test summary) or holds a value that is
    not finite. ``exclude``: files never read (the table's own output, sweep manifests)."""
    summaries, notes = [], []
    for file in _files(paths, exclude):
        data, problem = read_training_summary(file)
        if problem is not None:
            notes.append(f'{file}: {problem}')
            continue
        bad = nonfinite_values(data)
        if bad:
            notes.append(f'{file}: {", ".join(bad)}: not finite; counted in its row and shown as such')
        summaries.append((file, data))
    return summaries, notes


def _key(summary: RunSummary) -> tuple[str, str]:
    kept = [o for o in summary.overrides or () if Override.parse(o).keys[-1] not in OUTPUT_KEYS]
    return summary.recipe, ' '.join(kept)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if is_finite_number(v)]


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample std (0 for one value); (None, None) when there are no values or any is not a finite
    number, so a NaN or a hand-edited string never becomes a mean (callers count the finite values first)."""
    if not values or not all(is_finite_number(v) for v in values):
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group(summaries: list[tuple[Path, RunSummary]]) -> list[Row]:
    """One :class:`Row` per (recipe, overrides other than output paths), sorted by recipe; ``summaries`` as
    :func:`collect` returns them."""
    groups: dict[tuple[str, str], list[tuple[Path, RunSummary]]] = {}
    for file, summary in summaries:
        groups.setdefault(_key(summary), []).append((file, summary))
    rows = []
    for (recipe, overrides), runs in sorted(groups.items()):
        vals = _finite([s.best_val_top1 for _, s in runs])
        with_test = [s for _, s in runs if has_test_pass(s)]
        tests = _finite([s.student_test_top1 for s in with_test])
        val, test = mean_std(vals), mean_std(tests)
        papers = _finite([s.paper_top1 for _, s in runs])
        paper = papers[0] if papers else None
        ours = test[0] if test[0] is not None else val[0]
        diff = ours - paper if ours is not None and paper is not None else None
        bad = [str(file) for file, s in runs if nonfinite_values(s)]
        rows.append(Row(recipe, overrides, len(runs), *val, *test, paper, diff, val_top1_finite=len(vals),
                        tested=len(with_test), test_top1_finite=len(tests), nonfinite_files=bad))
    return rows


def plus_minus(mean: float | None, std: float | None) -> str:
    return 'n/a' if mean is None else f'{mean:.2f} +- {std:.2f}'


def _num(value: float | None, signed: bool = False) -> str:
    return 'n/a' if value is None else (f'{value:+.2f}' if signed else f'{value:.2f}')


def _val_cell(r: Row) -> str:
    cell = plus_minus(r.val_top1_mean, r.val_top1_std)
    return cell if r.val_top1_finite == r.runs else f'{cell} ({r.val_top1_finite} of {r.runs} finite)'


def _test_cell(r: Row) -> str:
    cell = plus_minus(r.test_top1_mean, r.test_top1_std)
    untested, nonfinite = r.runs - r.tested, r.tested - r.test_top1_finite
    if r.tested == 0 or (untested == 0 and nonfinite == 0):
        return cell
    if untested == 0:
        return f'{cell} ({r.test_top1_finite} of {r.runs} finite)'
    if nonfinite == 0:
        return f'{cell} ({r.tested} of {r.runs} tested)'
    return f'{cell} ({r.test_top1_finite} of {r.runs}: {untested} untested, {nonfinite} not finite)'


def format_rows(rows: list[Row], fmt: str) -> str:
    """``rows`` as a Markdown table, CSV or JSON (strict: no NaN)."""
    if fmt == 'json':
        return dumps_json([asdict(r) for r in rows])
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(list(Row.__dataclass_fields__))
        for r in rows:
            writer.writerow(['' if v is None else ' | '.join(v) if isinstance(v, list) else v
                             for v in asdict(r).values()])
        return out.getvalue().rstrip('\n')
    lines = ['| recipe | overrides | runs | best val top-1 | student test top-1 | paper top-1 | diff |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        overrides = f'`{r.overrides}`' if r.overrides else ''
        lines.append(f'| {r.recipe} | {overrides} | {r.runs} | {_val_cell(r)} | {_test_cell(r)} | '
                     f'{_num(r.paper_top1)} | {_num(r.diff, True)} |')
    return '\n'.join(lines)
