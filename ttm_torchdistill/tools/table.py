"""`ttm-distill table`: one row per recipe (and overrides) over many runs' `--summary` JSON files.

Runs of the same recipe with the same overrides, apart from the seed and output paths, are one
row: mean +- std of the best validation top-1 and of the student's test top-1, next to the top-1
the paper reports (the recipe's ``paper.top1``) and the difference. A folder that holds a sweep
(``sweep.json``) is tabulated by grid point instead (:func:`ttm_torchdistill.tools.sweep.sweep_table`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..runner.errors import UsageError, one_line

__all__ = ['FORMATS', 'Row', 'collect', 'format_rows', 'group', 'table']

FORMATS = ('markdown', 'csv', 'json')
SUMMARY_KEYS = ('recipe', 'best_val_top1', 'student_test_top1')
OUTPUT_KEYS = ('dst_ckpt',)
"""override keys that only move outputs: runs differing in them share a row"""


@dataclass
class Row:
    recipe: str
    overrides: str
    runs: int
    val_top1_mean: float | None
    val_top1_std: float | None
    test_top1_mean: float | None
    test_top1_std: float | None
    paper_top1: float | None
    diff: float | None
    """test top-1 mean (the best validation top-1 where no test pass ran) minus the paper's top-1"""


def _is_summary(data: object) -> bool:
    return isinstance(data, dict) and all(k in data for k in SUMMARY_KEYS) and isinstance(data['recipe'], str)


def collect(paths: list[str]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Summaries found in ``paths`` (files, or folders searched recursively for ``*.json``), and one
    problem line per file that is unreadable or not a run summary."""
    files: list[Path] = []
    for spec in paths:
        path = Path(spec).expanduser()
        if path.is_dir():
            files.extend(sorted(path.rglob('*.json')))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f'table: {spec}: no such file or folder')
    summaries, problems = [], []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f'{file}: skipped, not readable JSON ({one_line(exc)})')
            continue
        if not _is_summary(data):
            problems.append(f'{file}: skipped, not a `ttm-distill train/test --summary` file')
            continue
        summaries.append((file, data))
    return summaries, problems


def _key(summary: dict) -> tuple[str, str]:
    kept = [o for o in summary.get('overrides') or [] if o.partition('=')[0].rsplit('.', 1)[-1] not in OUTPUT_KEYS]
    return summary['recipe'], ' '.join(kept)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group(summaries: list[dict]) -> list[Row]:
    """One :class:`Row` per (recipe, overrides other than output paths), sorted by recipe."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for summary in summaries:
        groups.setdefault(_key(summary), []).append(summary)
    rows = []
    for (recipe, overrides), runs in sorted(groups.items()):
        val = _mean_std(_finite([r['best_val_top1'] for r in runs]))
        test = _mean_std(_finite([r['student_test_top1'] for r in runs]))
        papers = _finite([r.get('paper_top1') for r in runs])
        paper = papers[0] if papers else None
        ours = test[0] if test[0] is not None else val[0]
        diff = ours - paper if ours is not None and paper is not None else None
        rows.append(Row(recipe, overrides, len(runs), *val, *test, paper, diff))
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    return 'n/a' if mean is None else f'{mean:.2f} +- {std:.2f}'


def _num(value: float | None, signed: bool = False) -> str:
    return 'n/a' if value is None else (f'{value:+.2f}' if signed else f'{value:.2f}')


def format_rows(rows: list[Row], fmt: str) -> str:
    """``rows`` as a Markdown table, CSV or JSON."""
    if fmt == 'json':
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(list(Row.__dataclass_fields__))
        for r in rows:
            writer.writerow(['' if v is None else v for v in asdict(r).values()])
        return out.getvalue().rstrip('\n')
    lines = ['| recipe | overrides | runs | best val top-1 | student test top-1 | paper top-1 | diff |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        overrides = f'`{r.overrides}`' if r.overrides else ''
        lines.append(f'| {r.recipe} | {overrides} | {r.runs} | {_pm(r.val_top1_mean, r.val_top1_std)} | '
                     f'{_pm(r.test_top1_mean, r.test_top1_std)} | {_num(r.paper_top1)} | {_num(r.diff, True)} |')
    return '\n'.join(lines)


def _sweep_folder(paths: list[str]) -> Path | None:
    if len(paths) == 1 and (Path(paths[0]).expanduser() / 'sweep.json').is_file():
        return Path(paths[0]).expanduser()
    return None


def table(paths: list[str], fmt: str = 'markdown', output: str | None = None) -> str:
    """Render the table of ``paths``; print problems to stderr; write ``output`` when given."""
    if fmt not in FORMATS:
        raise UsageError(f'table: --format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    sweep = _sweep_folder(paths)
    if sweep is not None:
        from .sweep import sweep_table

        text = sweep_table(sweep, fmt)
    else:
        summaries, problems = collect(paths)
        for problem in problems:
            print(f'ttm-distill: {problem}', file=sys.stderr)
        if not summaries:
            raise UsageError(f'table: no run summaries in {", ".join(paths)} (write them with train --summary)')
        text = format_rows(group([s for _, s in summaries]), fmt)
    if output:
        path = Path(output).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + '\n')
        except OSError as exc:
            raise UsageError(f'table: cannot write {output}: {exc.strerror}') from None
    return text
