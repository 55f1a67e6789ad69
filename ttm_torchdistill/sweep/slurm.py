"""The sweep's SLURM launcher: one job array through submitit, one task per job (:mod:`.jobs`: a run that has not
finished, or with --lockstep a group of them).

A task runs `ttm-distill train` (a group: `ttm-distill lockstep`) in a child process. When SLURM signals it before
its time limit or for preemption (USR2, `--signal` set by submitit), submitit calls :meth:`SweepTask.checkpoint`: the
run is stopped at once (its last epoch's checkpoint stays) and submitit requeues the task, which then resumes from
``.last.pt`` (a group: each of its runs). A task requeued from outside (`scontrol requeue`, preemption with
requeue) is killed and resumes the same way.
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
from .jobs import Job, plan_jobs
from .plan import Sweep
from .results import sweep_table
from .runs import child_setup

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
    """One job of a sweep as a SLURM array task (pickled by submitit)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {'job': self.job}

    def __setstate__(self, state: dict) -> None:
        self.job, self._proc = state['job'], None

    def __call__(self) -> str:
        job = self.job
        if all(run.state()[0] == 'finished' for run in job.runs):
            return 'finished'
        cmd = job.start()
        with job.output_path.open('ab') as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=child_setup(os.getpid()))
            # poll rather than wait(): submitit's signal handler must be able to reap the child itself
            while self._proc.poll() is None:
                time.sleep(0.5)
        states = [state for _, state, _, _ in job.record(self._proc.returncode)]
        return states[0] if len(set(states)) == 1 else ', '.join(states)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on USR2: stop the job (each run's last epoch's checkpoint stays); the requeued task
        resumes."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return _submitit().helpers.DelayedSubmission(SweepTask(self.job))


class SlurmLauncher:
    def __init__(self, sweep: Sweep, parallel: int | None, pairs: list[str], wait: bool, lockstep: bool = False,
                 group_size: int | None = None) -> None:
        self.sweep, self.wait, self.lockstep, self.group_size = sweep, wait, lockstep, group_size
        self.jobs = plan_jobs(sweep, lockstep, group_size)
        self.params = dict(DEFAULTS, array_parallelism=parallel or max(len(self.jobs), 1), **parse_parameters(pairs))

    def describe(self) -> None:
        params = ' '.join(f'{k}={v}' for k, v in self.params.items())
        each = ', one lockstep group each' if self.lockstep else ''
        print(f'slurm launcher: one job array of {len(self.jobs)} task(s){each} through submitit; parameters: '
              f'{params}')
        if self.lockstep:
            for job in self.jobs:
                print(f'  {job.describe()}: ttm-distill {" ".join(job.argv())}')

    def launch(self) -> int:
        """Submit what has not finished (the caller holds the sweep's lock)."""
        sweep = self.sweep
        self.jobs = plan_jobs(sweep, self.lockstep, self.group_size)  # another launcher may have run some
        if not self.jobs:
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
                jobs = [executor.submit(SweepTask(job)) for job in self.jobs]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
            raise UsageError(f'sbatch refused the job array: {one_line(exc)}') from None
        job_id = jobs[0].job_id.split('_')[0]
        sweep.slurm = {'job_id': job_id, 'parameters': self.params,
                       'tasks': {task.job_id: job.runs[0].name if job.group is None else [r.name for r in job.runs]
                                 for task, job in zip(jobs, self.jobs, strict=True)}}
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
        sweep, todo = self.sweep, [run for job in self.jobs for run in job.runs]
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
