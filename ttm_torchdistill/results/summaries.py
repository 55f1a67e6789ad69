"""Run summaries (`--summary` JSON files) grouped into one row per recipe and overrides, and rendered.

Runs of the same recipe with the same overrides, apart from the seed and output paths, are one
row: mean +- std of the best validation top-1 and of the student's test top-1, next to the top-1
the paper reports (the recipe's ``paper.top1``) and the difference. A folder that holds a sweep
(``sweep.json``) is tabulated by grid point instead (:func:`ttm_torchdistill.sweep.results.sweep_table`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UsageError, one_line

__all__ = ['FORMATS', 'Row', 'collect', 'format_rows', 'group', 'mean_std', 'plus_minus']

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


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
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
        val = mean_std(_finite([r['best_val_top1'] for r in runs]))
        test = mean_std(_finite([r['student_test_top1'] for r in runs]))
        papers = _finite([r.get('paper_top1') for r in runs])
        paper = papers[0] if papers else None
        ours = test[0] if test[0] is not None else val[0]
        diff = ours - paper if ours is not None and paper is not None else None
        rows.append(Row(recipe, overrides, len(runs), *val, *test, paper, diff))
    return rows


def plus_minus(mean: float | None, std: float | None) -> str:
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
        lines.append(f'| {r.recipe} | {overrides} | {r.runs} | {plus_minus(r.val_top1_mean, r.val_top1_std)} | '
                     f'{plus_minus(r.test_top1_mean, r.test_top1_std)} | {_num(r.paper_top1)} | {_num(r.diff, True)} |')
    return '\n'.join(lines)
