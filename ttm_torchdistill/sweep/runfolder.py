"""One run of a sweep as a folder, ``DIR/<point>/seed<k>/`` (in a sweep of several recipes, ``<point>`` begins with
its recipe's label: ``DIR/kd/gamma0.5/seed0/``, ``DIR/kd/seed0/``): its files and the state they tell.

``summary.json`` (finished, when it is one), ``error.txt`` (failed), a ``.last.pt`` checkpoint (interrupted: the next
call resumes it), else pending. `table` and `plot` read a sweep's runs this way from its manifest.

A sweep folder may be copied or moved: the manifest's run descriptions hold the paths of the place where they were
written, and :func:`recorded_description` moves them to where the folder is now, refusing a record that would
write anywhere but in the run's own folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..description import Override, RunDescription
from ..errors import UsageError
from ..formats.manifest import NAME as MANIFEST
from ..formats.manifest import RunEntry, SweepManifest
from ..formats.metrics import count_records, metrics_path
from ..formats.summary import RunSummary, read_training_summary
from ..runner.checkpoint import last_ckpt_path

__all__ = ['OUTPUT_KEY', 'RunFolder', 'recorded_description', 'runs_in']

OUTPUT_KEY = 'dst_ckpt'
"""the recipe key (under the student's model entry) of the checkpoint path, which a sweep sets per run"""


@dataclass
class RunFolder:
    point: str
    """the grid point's folder (below its recipe's, in a sweep of several recipes)"""
    values: dict[str, str]
    """axis label -> value as given"""
    seed: int
    directory: Path
    ckpt_name: str
    recipe: str | None = None
    """its recipe's label in a sweep of several recipes, else None"""

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
        return metrics_path(self.log_path)

    @property
    def last_ckpt(self) -> Path:
        return last_ckpt_path(self.directory / self.ckpt_name)

    def epochs_done(self) -> int:
        """Epochs recorded in the run's metrics file so far."""
        return count_records(self.metrics_path)

    def describe(self) -> str:
        """The recipe's label, the grid values and the seed: ``kd gamma=0.5 seed 0``."""
        return ' '.join([*([self.recipe] if self.recipe else []), *(f'{k}={v}' for k, v in self.values.items()),
                         f'seed {self.seed}'])

    def read_summary(self) -> tuple[RunSummary | None, str | None]:
        """(the run's summary, when it has one of a finished training run, as `table` reads summaries with
        ``formats.summary.read_training_summary``; one line for a summary.json that is there but does not count: cut
        off, foreign, another command's, of a newer version), read once."""
        if not self.summary_path.is_file():
            return None, None
        summary, problem = read_training_summary(self.summary_path)
        if problem is None:
            return summary, None
        return None, f'{self.summary_path}: {problem}; {self.name} does not count as finished'

    def summary(self) -> RunSummary | None:
        """The run's summary, when it has one of a finished training run (:meth:`read_summary`)."""
        return self.read_summary()[0]

    def summary_note(self) -> str | None:
        """One line for a summary.json that does not count (:meth:`read_summary`), else None."""
        return self.read_summary()[1]

    def state(self) -> tuple[str, float | None, str | None]:
        """(finished | failed | interrupted | pending, best val top-1, error line); a cut-off, corrupt or foreign
        summary.json does not count as finished (:meth:`summary_note` says why), so the run is redone or resumed."""
        summary = self.summary()
        if summary is not None:
            return 'finished', summary.best_val_top1, None
        if self.error_path.is_file():
            return 'failed', None, self.error_path.read_text(errors='replace').strip()
        return ('interrupted' if self.last_ckpt.is_file() else 'pending'), None, None


def runs_in(directory: Path, manifest: SweepManifest) -> list[RunFolder]:
    """The runs a manifest (``formats.manifest.read_manifest``) lists, as folders of ``directory``."""
    return [RunFolder(e.point, e.values, e.seed, directory / e.dir, e.ckpt, e.recipe) for e in manifest.runs]


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.normpath(path)).is_relative_to(folder)


def recorded_description(directory: Path, run: RunFolder, entry: RunEntry, index: int) -> RunDescription:
    """The run description that ``DIR/sweep.json`` records for ``run`` (its ``runs[index]``), with the paths of the
    folder where it was written moved to ``directory``, where the folder is now; one UsageError line for a record
    that is not a run description, or whose run log, summary or checkpoint would lie outside the run's folder (or
    its curves outside ``directory``)."""
    where = f'{directory / MANIFEST}: runs[{index}].run ({run.name})'
    try:
        description = RunDescription.from_json(entry.run)
    except UsageError as exc:
        raise UsageError(f'{where}: {exc}') from None
    if not description.summary:
        raise UsageError(f'{where}: records no summary path; not a run `ttm-distill sweep` planned')
    recorded = Path(os.path.normpath(description.summary)).parent
    parts = Path(entry.dir).parts
    if recorded.parts[-len(parts):] != parts:
        raise UsageError(f'{where}: its summary {description.summary} is not in a folder {entry.dir}; not a run '
                         '`ttm-distill sweep` planned')
    old = Path(*recorded.parts[:-len(parts)])

    def moved(text: str) -> str:
        path = Path(os.path.normpath(text))
        return str(directory / path.relative_to(old)) if path.is_relative_to(old) else text

    overrides = tuple(Override(o.key, moved(o.value)) if o.keys[-1] == OUTPUT_KEY else o
                      for o in description.overrides)
    description = description.replace(
        run_log=moved(description.run_log) if description.run_log else None, summary=moved(description.summary),
        tensorboard=moved(description.tensorboard) if description.tensorboard else None, overrides=overrides,
        error_record=moved(description.error_record) if description.error_record else None)
    outputs = [('--run-log', description.run_log), ('--summary', description.summary),
               *([('--error-record', description.error_record)] if description.error_record else []),
               *((f'--set {o.key}', o.value) for o in overrides if o.keys[-1] == OUTPUT_KEY)]
    for flag, path in outputs:
        if not path or not _inside(Path(path), run.directory):
            raise UsageError(f'{where}: {flag} {path} is outside the run\'s folder {run.directory}; a sweep run '
                             'writes only there')
    if description.tensorboard and not _inside(Path(description.tensorboard), directory):
        raise UsageError(f'{where}: --tensorboard {description.tensorboard} is outside the sweep folder {directory}')
    return description
