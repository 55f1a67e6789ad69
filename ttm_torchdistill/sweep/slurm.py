"""The sweep's SLURM launcher: one job array through submitit, one task per job (:mod:`.jobs`: a run that has not
finished, or with --lockstep a group of them).

A task runs `ttm-distill train` (a group: `ttm-distill lockstep`) in a child process; with ``--nodes`` /
``--gpus-per-node`` each array task is itself a distributed job, a rank per SLURM task (:mod:`.ranks`). When SLURM
signals it before its time limit or for preemption (USR2, `--signal` set by submitit), submitit calls
:meth:`SweepTask.checkpoint`: the run stops after the step every rank agrees on, with a resume checkpoint
(:mod:`ttm_torchdistill.runner.stop`; a group: each of its runs), and submitit requeues the task, which resumes from
it exactly. A task requeued from outside (`scontrol requeue`, preemption with requeue) is stopped and resumes from the
last checkpoint written.
"""
from __future__ import annotations

import sys
import time

from ..errors import UsageError, one_line
from ..runner.logs import format_eta
from .folder import save_manifest
from .jobs import Job, plan_jobs
from .plan import Sweep
from .ranks import RankProcess, rank_env, rendezvous, this_rank
from .results import sweep_table
from .slurm_follow import POLL_S, QUEUE_MISSES
from .slurm_request import JobRequest, job_in_queue, parse_parameters, submitit_module

__all__ = ['SlurmLauncher', 'SweepTask']

DEFAULTS = {'job_name': 'ttm-sweep'}


class SweepTask:
    """One job of a sweep as a SLURM array task (pickled by submitit); with several tasks a job (``--nodes``,
    ``--gpus-per-node``), one rank of it: rank 0 prepares the runs' folders, publishes the rendezvous and records the
    end."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._process = RankProcess()

    def __getstate__(self) -> dict:
        return {'job': self.job}

    def __setstate__(self, state: dict) -> None:
        self.job, self._process = state['job'], RankProcess()

    def __call__(self) -> str:
        job, rank = self.job, this_rank()
        if rank.world_size == 1 or rank.rank == 0:
            if all(run.state()[0] == 'finished' for run in job.runs):
                return 'finished'
            cmd = job.start()
        else:
            cmd = [sys.executable, '-m', 'ttm_torchdistill', *job.argv()]
        address, port = rendezvous(job.directory / 'slurm', rank) if rank.world_size > 1 else (None, None)
        if rank.rank != 0:  # its console goes to its task's log
            code = self._process.run(cmd, rank_env(rank, address, port))
            return 'finished' if code == 0 else f'exit code {code}'
        with job.output_path.open('ab') as out:
            code = self._process.run(cmd, rank_env(rank, address, port), stdout=out)
        states = [state for _, state, _, _ in job.record(code)]
        return states[0] if len(set(states)) == 1 else ', '.join(states)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on SLURM's warning (rank 0's task): the job's runs stop after the step every rank agrees
        on, each writing its resume checkpoint; the requeued task resumes them."""
        self._process.stop()
        return submitit_module().helpers.DelayedSubmission(SweepTask(self.job))


class SlurmLauncher:
    def __init__(self, sweep: Sweep, parallel: int | None, request: JobRequest, lockstep: bool = False,
                 group_size: int | None = None) -> None:
        self.sweep, self.wait, self.lockstep, self.group_size = sweep, request.wait, lockstep, group_size
        self.request = request
        self.jobs = plan_jobs(sweep, lockstep, group_size)
        params = parse_parameters(list(request.pairs), reserved=request.reserved())
        if 'max_requeues' in params:
            raise UsageError('--slurm max_requeues: a sweep task is requeued as often as SLURM warns it')
        request.check_partition(params.get('partition'))
        self.params = {**DEFAULTS, **request.parameters(), 'array_parallelism': parallel or max(len(self.jobs), 1),
                       **params}

    def describe(self) -> None:
        params = ' '.join(f'{k}={v}' for k, v in self.params.items())
        each = ', one lockstep group each' if self.lockstep else ''
        shape = (f', each {self.request.world_size} ranks ({self.request.nodes} node(s) x {self.request.tasks}, '
                 f'{self.request.describe_devices()})' if self.request.world_size > 1 else '')
        print(f'slurm launcher: one job array of {len(self.jobs)} task(s){each}{shape} through submitit; parameters: '
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
        submitit = submitit_module()
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
            misses = 0 if job_in_queue(job_id) else misses + 1
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
