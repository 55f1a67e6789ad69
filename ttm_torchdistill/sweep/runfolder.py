"""One run of a sweep as a folder, ``DIR/<point>/seed<k>/``: its files and the state they tell.

``summary.json`` (finished, when it is one), ``error.txt`` (failed), a ``.last.pt`` checkpoint (interrupted: the next
call resumes it), else pending. `table` and `plot` read a sweep's runs this way from its manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..formats.metrics import count_records
from ..formats.summary import is_summary, load_summary
from ..runner.checkpoint import last_ckpt_path

__all__ = ['RunFolder', 'runs_in']


@dataclass
class RunFolder:
    point: str
    """the grid point's folder name"""
    values: dict[str, str]
    """axis label -> value as given"""
    seed: int
    directory: Path
    ckpt_name: str

    @property
    def name(self) -> str:
        return f'{self.point}/seed{self.seed}'

    @property
    def summary_path(self) -> Path:
        return self.directory / 'summary.json'

    @property
    def error_path(self) -> Path:
        return self.directory / 'error.txt'

    @property
    def output_path(self) -> Path:
        return self.directory / 'output.log'

    @property
    def log_path(self) -> Path:
        return self.directory / 'run.log'

    @property
    def metrics_path(self) -> Path:
        return self.directory / 'run.metrics.jsonl'

    @property
    def last_ckpt(self) -> Path:
        return last_ckpt_path(self.directory / self.ckpt_name)

    def epochs_done(self) -> int:
        """Epochs recorded in the run's metrics file so far."""
        return count_records(self.metrics_path)

    def describe(self) -> str:
        return ' '.join(f'{k}={v}' for k, v in self.values.items()) + f' seed {self.seed}'

    def summary(self) -> dict | None:
        """The run's summary, when it has a readable one."""
        data = load_summary(self.summary_path)[0] if self.summary_path.is_file() else None
        return data if is_summary(data) else None

    def state(self) -> tuple[str, float | None, str | None]:
        """(finished | failed | interrupted | pending, best val top-1, error line); a cut-off or corrupt
        summary.json does not count as finished, so the run is redone or resumed."""
        summary = self.summary()
        if summary is not None:
            return 'finished', summary.get('best_val_top1'), None
        if self.error_path.is_file():
            return 'failed', None, self.error_path.read_text(errors='replace').strip()
        return ('interrupted' if self.last_ckpt.is_file() else 'pending'), None, None


def runs_in(directory: Path, manifest: dict) -> list[RunFolder]:
    """The runs a checked manifest (``formats.manifest.read_manifest``) lists, as folders of ``directory``."""
    return [RunFolder(e['point'], e['values'], e['seed'], directory / e['dir'], e['ckpt']) for e in manifest['runs']]
