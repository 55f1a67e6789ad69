"""`ttm-distill table`: the table of run summaries, or of a sweep folder by grid point."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError
from ..results import FORMATS, collect, format_rows, group
from ..sweep.plan import MANIFEST
from ..sweep.results import sweep_table

__all__ = ['table']


def _sweep_folder(paths: list[str]) -> Path | None:
    if len(paths) == 1 and (Path(paths[0]).expanduser() / MANIFEST).is_file():
        return Path(paths[0]).expanduser()
    return None


def table(paths: list[str], fmt: str = 'markdown', output: str | None = None) -> str:
    """Render the table of ``paths``; print problems to stderr; write ``output`` when given."""
    if fmt not in FORMATS:
        raise UsageError(f'table: --format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    sweep = _sweep_folder(paths)
    if sweep is not None:
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
