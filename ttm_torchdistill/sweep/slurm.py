"""The sweep's SLURM launcher: one job array through submitit, one task per run that has not finished.

A task runs `ttm-distill train` in a child process. When SLURM signals it before its time limit or for
preemption (USR2, `--signal` set by submitit), submitit calls :meth:`SweepTask.checkpoint`: the run is stopped
at once (its last epoch's checkpoint stays) and submitit requeues the task, which then resumes from ``.last.pt``.
A task requeued from outside (`scontrol requeue`, preemption with requeue) is killed and resumes the same way.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

from ..errors import UsageError, one_line
from ..runner.logs import format_eta
from .folder import save_manifest
from .plan import Sweep, SweepRun
from .results import sweep_table
from .runs import child_setup, record_exit, start_run

__all__ = ['SlurmLauncher', 'SweepTask', 'array_in_queue']

INSTALL = "pip install 'ttm-torchdistill[slurm]'"
DEFAULTS = {'job_name': 'ttm-sweep', 'time': 24 * 60}
"""submitit's own default time limit is 5 minutes"""
STOP_WAIT_S = 60
POLL_S = 2.0
QUEUE_MISSES = 3
"""--wait stops following the array after this many polls in a row that do not find it in the queue"""


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UsageError(f'--launcher slurm needs submitit, which is not installed ({INSTALL})') from None
    return submitit


def parse_parameters(pairs: list[str]) -> dict:
    """``--slurm KEY=VALUE`` options to submitit SlurmExecutor parameters (VALUE is YAML)."""
    submitit = _submitit()
    valid = submitit.SlurmExecutor._valid_parameters()
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        key = key.strip().removeprefix('slurm_')
        if not sep or not key:
            raise UsageError(f'--slurm {pair!r}: expected KEY=VALUE, e.g. partition=gpu or time=240 (minutes)')
        if key not in valid:
            raise UsageError(f'--slurm {key}: not a submitit SlurmExecutor parameter (accepted: '
                             f'{", ".join(sorted(valid))})')
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UsageError(f'--slurm {pair!r}: VALUE is not valid YAML ({one_line(exc)})') from None
    return params


def array_in_queue(job_id: str) -> bool:
    """Whether squeue lists any task of the SLURM job (array) as pending or running; False also when squeue
    is missing, fails or times out."""
    if shutil.which('squeue') is None:
        return False
    try:
        result = subprocess.run(['squeue', '-h', '-j', str(job_id), '-o', '%i'], capture_output=True, text=True,
                                timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


class SweepTask:
    """One run of a sweep as a SLURM array task (pickled by submitit)."""

    def __init__(self, run: SweepRun) -> None:
        self.run = run
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {'run': self.run}

    def __setstate__(self, state: dict) -> None:
        self.run, self._proc = state['run'], None

    def __call__(self) -> str:
        run = self.run
        if run.state()[0] == 'finished':
            return 'finished'
        cmd = start_run(run)
        with run.output_path.open('ab') as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=child_setup(os.getpid()))
            # poll rather than wait(): submitit's signal handler must be able to reap the child itself
            while self._proc.poll() is None:
                time.sleep(0.5)
        return record_exit(run, self._proc.returncode)[0]

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on USR2: stop the run (its last epoch's checkpoint stays); the requeued task resumes."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return _submitit().helpers.DelayedSubmission(SweepTask(self.run))


class SlurmLauncher:
    def __init__(self, sweep: Sweep, parallel: int | None, pairs: list[str], wait: bool) -> None:
        self.sweep, self.wait = sweep, wait
        self.todo = [r for r in sweep.runs if r.state()[0] != 'finished']
        self.params = dict(DEFAULTS, array_parallelism=parallel or max(len(self.todo), 1), **parse_parameters(pairs))

    def describe(self) -> None:
        params = ' '.join(f'{k}={v}' for k, v in self.params.items())
        print(f'slurm launcher: one job array of {len(self.todo)} task(s) through submitit; parameters: {params}')

    def launch(self) -> int:
        """Submit what has not finished (the caller holds the sweep's lock)."""
        sweep = self.sweep
        self.todo = [r for r in sweep.runs if r.state()[0] != 'finished']  # another launcher may have run some
        if not self.todo:
            print(f'all {len(sweep.runs)} runs finished')
            print(sweep_table(sweep.directory), flush=True)
            return 0
        submitit = _submitit()
        try:
            executor = submitit.SlurmExecutor(folder=sweep.directory / 'slurm')
        except RuntimeError as exc:
            raise UsageError(f'--launcher slurm: {exc}') from None
        try:
            executor.update_parameters(**self.params)
        except (ValueError, TypeError) as exc:
            raise UsageError(f'--slurm: {one_line(exc)}') from None
        try:
            with executor.batch():
                jobs = [executor.submit(SweepTask(run)) for run in self.todo]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
            raise UsageError(f'sbatch refused the job array: {one_line(exc)}') from None
        job_id = jobs[0].job_id.split('_')[0]
        sweep.slurm = {'job_id': job_id, 'parameters': self.params,
                       'tasks': {job.job_id: run.name for job, run in zip(jobs, self.todo, strict=True)}}
        save_manifest(sweep)
        print(f'submitted SLURM job array {job_id}: {len(jobs)} task(s), at most {self.params["array_parallelism"]} '
              f'at a time; logs in {sweep.directory / "slurm"}', flush=True)
        if not self.wait:
            print(f'watch it: squeue -j {job_id}; results so far: ttm-distill table {sweep.directory}; the same '
                  'sweep command resubmits what did not finish', flush=True)
            return 0
        return self._follow(job_id)

    def _follow(self, job_id: str) -> int:
        """Print a line per run as it ends, until the array has left the queue (QUEUE_MISSES polls in a row, so a
        passing squeue failure does not end it); then the table."""
        sweep, todo = self.sweep, list(self.todo)
        total = len(sweep.runs)
        done = total - len(todo)
        start, ended, failed, misses = time.monotonic(), 0, 0, 0
        while todo:
            misses = 0 if array_in_queue(job_id) else misses + 1
            for run in list(todo):
                state, best, error = run.state()
                if state not in ('finished', 'failed'):
                    continue
                todo.remove(run)
                done, ended = done + 1, ended + 1
                failed += state == 'failed'
                what = f'best val top-1 {best:.2f}' if state == 'finished' else f'FAILED ({error})'
                eta = (time.monotonic() - start) / ended * len(todo)
                print(f'[{done}/{total}] {run.describe()}: {what}, eta {format_eta(eta)}', flush=True)
            if todo and misses >= QUEUE_MISSES:
                break
            if todo:
                time.sleep(POLL_S)
        save_manifest(sweep)
        print(sweep_table(sweep.directory), flush=True)
        if todo:
            print(f'{len(todo)} run(s) ended unfinished (cancelled or killed); the same command resubmits them',
                  file=sys.stderr, flush=True)
        return 1 if failed or todo else 0
