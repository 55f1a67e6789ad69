"""What a sweep's launchers start: a job is one run alone (`ttm-distill train`) or, with ``--lockstep``, a group of
runs that share a seed and differ only in their loss (loss parameters of the grid; recipes that differ only in
``train.criterion``), trained together in one process (`ttm-distill lockstep DIR RUN...`,
:mod:`ttm_torchdistill.runner.lockstep`).

A group's process writes each run's files as the run alone would (its console lines in its ``output.log``); its own
output (every run's lines, marked) goes to ``DIR/lockstep/<group>.log``. Groups are formed from the runs that have not
finished, per seed and set of recipes that may share one (:func:`lockstep_sets`), ``--group-size`` at most.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..formats.manifest import read_manifest
from ..runner.lockstep import LOSS_SECTION, group_difference, run_lockstep
from .plan import Sweep, SweepRun
from .recipes import SweepRecipe
from .runfolder import recorded_description, runs_in
from .runs import record_exit, start_run

__all__ = ['GROUPS', 'Job', 'check_lockstep', 'lockstep_note', 'lockstep_sets', 'plan_jobs', 'run_group']

GROUPS = 'lockstep'
"""the sweep folder's subfolder of the groups' own logs"""


@dataclass(eq=False)
class Job:
    runs: list[SweepRun]
    directory: Path
    """the sweep's folder"""
    group: str | None = None
    """the lockstep group's name; None: one run alone"""
    offsets: dict[Path, int] = field(default_factory=dict)
    """where each run's output.log ended when the job started (its error line is looked for after)"""

    @property
    def output_path(self) -> Path:
        return self.runs[0].output_path if self.group is None else self.directory / GROUPS / f'{self.group}.log'

    def describe(self) -> str:
        if self.group is None:
            return self.runs[0].describe()
        return f'lockstep group {self.group} ({len(self.runs)} runs: {", ".join(r.point for r in self.runs)})'

    def argv(self) -> list[str]:
        """Arguments after `ttm-distill` for this job now."""
        if self.group is None:
            return self.runs[0].argv()
        return ['lockstep', str(self.directory), *(run.name for run in self.runs)]

    def start(self) -> list[str]:
        """Prepare the runs' folders (see :func:`.runs.start_run`) and return the job's full command line."""
        for run in self.runs:
            start_run(run)
            self.offsets[run.output_path] = run.output_path.stat().st_size if run.output_path.is_file() else 0
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        return [sys.executable, '-m', 'ttm_torchdistill', *self.argv()]

    def record(self, returncode: int) -> list[tuple[SweepRun, str, float | None, str | None]]:
        """Each run's (run, state, best val top-1, error) after the job's process ended with ``returncode``: in a
        group, a run with a summary finished, the others failed with their own error line (else the group's) or were
        interrupted with it."""
        if self.group is None:
            return [(self.runs[0], *record_exit(self.runs[0], returncode))]
        ended = []
        for run in self.runs:
            code = 0 if run.summary() is not None else (returncode or 1)
            since = self.offsets.get(run.output_path, 0)
            ended.append((run, *record_exit(run, code, since=since, fallback=self.output_path)))
        return ended


def check_lockstep(sweep: Sweep) -> None:
    """Refuse a grid whose points differ in more than loss parameters (one line naming the axis)."""
    for recipe in sweep.recipes:
        for axis, key in zip(sweep.axes, recipe.keys, strict=True):
            if not key.startswith(LOSS_SECTION + '.'):
                given = axis.name if axis.name == key else f'{axis.name} ({key})'
                raise UsageError(f'--lockstep: --grid {given} is outside {LOSS_SECTION}: the points of a lockstep '
                                 'group share their model, data, batch size, optimizer, schedule and seed and may '
                                 "differ only in their loss; sweep it without --lockstep")


def lockstep_sets(sweep: Sweep) -> list[tuple[list[SweepRecipe], tuple[SweepRecipe, str] | None]]:
    """The sweep's recipes in sets whose runs may share a lockstep group (their recipes differ only in
    ``train.criterion``), in the sweep's order; with each set after the first, the first set's recipe it differs from
    and the key (for :func:`lockstep_note`)."""
    sets: list[tuple[list[SweepRecipe], tuple[SweepRecipe, str] | None]] = []
    for recipe in sweep.recipes:
        member = next((members for members, _ in sets if group_difference([members[0].doc, recipe.doc]) is None), None)
        if member is not None:
            member.append(recipe)
            continue
        why = None
        if sets:
            first = sets[0][0][0]
            why = first, group_difference([first.doc, recipe.doc])[1]
        sets.append(([recipe], why))
    return sets


def lockstep_note(sweep: Sweep) -> str | None:
    """One line where the recipes cannot all share a lockstep group (e.g. one needs a dataset wrapper or hooks the
    others lack): which sets train together, and why the others do not; None where they all can."""
    sets = lockstep_sets(sweep)
    if len(sets) == 1:
        return None
    parts = [', '.join(r.label for r in members) for members, _ in sets]
    whys = '; '.join(f'{members[0].label} differs from {first.label} at {key}' for members, (first, key) in
                     sets[1:])
    return (f'note: --lockstep: the recipes train in {len(sets)} lockstep groups per seed ({" | ".join(parts)}): '
            f'recipes share a group only where they differ in {LOSS_SECTION} alone ({whys})')


def plan_jobs(sweep: Sweep, lockstep: bool, group_size: int | None) -> list[Job]:
    """The jobs for the runs that have not finished: one per run, or (``lockstep``) per seed and set of recipes that
    may share a group (:func:`lockstep_sets`), at most ``group_size`` runs (default: all of them). Each run's
    ``group`` is set."""
    todo = [run for run in sweep.runs if run.state()[0] != 'finished']
    if not lockstep:
        for run in todo:
            run.group = None
        return [Job([run], sweep.directory) for run in todo]
    check_lockstep(sweep)
    sets = [{r.label or None for r in members} for members, _ in lockstep_sets(sweep)]
    jobs = []
    for seed in sweep.seeds:
        chunks = []
        for labels in sets:
            runs = [run for run in todo if run.seed == seed and run.recipe in labels]
            size = group_size or len(runs) or 1
            chunks += [runs[i:i + size] for i in range(0, len(runs), size)]
        for k, chunk in enumerate(chunks, 1):
            name = f'seed{seed}' if len(chunks) == 1 else f'seed{seed}.{k}'
            for run in chunk:
                run.group = name
            jobs.append(Job(chunk, sweep.directory, name))
    return jobs


def run_group(directory: str, names: list[str]) -> int:
    """`ttm-distill lockstep DIR RUN...`: train runs of the sweep in DIR (named POINT/seedK, as sweep.json lists them)
    in lockstep; each resumes from its .last.pt where it has one."""
    folder = Path(directory).expanduser().resolve()
    manifest = read_manifest(folder)
    folders = {run.name: (index, run, entry) for index, (run, entry)
               in enumerate(zip(runs_in(folder, manifest), manifest.runs, strict=True))}
    unknown = [name for name in names if name not in folders]
    if unknown:
        raise UsageError(f'lockstep: {folder} has no run {unknown[0]} (its runs are named POINT/seedK, e.g. '
                         f'{next(iter(folders), "none")})')
    if len(set(names)) < len(names):
        raise UsageError('lockstep: a run is named twice')
    descriptions, consoles = [], []
    for name in names:
        index, run, entry = folders[name]
        description = recorded_description(folder, run, entry, index)
        descriptions.append(description.replace(resume=run.last_ckpt.is_file()))
        consoles.append(str(run.output_path))
    return run_lockstep(descriptions, names, consoles)

