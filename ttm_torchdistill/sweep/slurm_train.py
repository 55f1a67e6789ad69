"""`ttm-distill train --launcher slurm`: one training run as one distributed SLURM job through submitit, N nodes x G
GPUs (or K CPU tasks, Gloo), one rank per task, requeued with an exact resume when SLURM warns of its end.

The job's folder is ``<dst_ckpt without .pt>.slurm/`` beside the checkpoints: submitit's script, pickles and task logs
(``<job>_<task>_log.out``: rank R's console), ``job.json`` (the job that trains this run now: the run's lock covers
it), each attempt's rendezvous, each rank's exit record and the run's error line. Each task runs :class:`TrainJob`, a
rank of `ttm-distill train` (:mod:`.ranks`). SLURM's warning before a time limit or a preemption (USR2, ``--signal``
as submitit sets it) makes every rank stop after the same step with a resume checkpoint
(:mod:`ttm_torchdistill.runner.stop`); rank 0's task then requeues the job, whose tasks resume from it. A job requeued
from outside (``scontrol requeue``, a node failure) resumes from the last checkpoint written. More than
``max_requeues`` requeues stop it with a line.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from ..description import RunDescription
from ..errors import UsageError, one_line
from ..outputs import LockFile, LockHeld, free_name, make_folders, remove_empty_folders, write_json
from ..runner.claim import check_submission
from .ranks import Rank, RankProcess, rank_env, rendezvous, this_rank
from .runs import INTERRUPTED
from .slurm_follow import follow_job
from .slurm_request import JobRequest, job_in_queue, parse_parameters, submitit_module

__all__ = ['MAX_REQUEUES', 'TrainJob', 'job_folder', 'submit_training']

MAX_REQUEUES = 20
"""default of ``--slurm max_requeues``: requeues (time limits, preemptions, scontrol requeue) before the job stops"""


def job_folder(dst_ckpt: Path) -> Path:
    """The job's folder beside the run's checkpoints."""
    return dst_ckpt.with_name(dst_ckpt.stem + '.slurm')


class TrainJob:
    """What every task of the job runs (pickled by submitit): rank R of `ttm-distill train`, in the submitter's
    working directory."""

    def __init__(self, description: RunDescription, folder: Path, cwd: str, last_ckpt: Path, max_requeues: int,
                 command: str) -> None:
        self.description, self.folder, self.cwd, self.last_ckpt = description, folder, cwd, last_ckpt
        self.max_requeues, self.command = max_requeues, command
        self._process = RankProcess()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != '_process'}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._process = RankProcess()

    def _record(self, rank: Rank, code: int | None, line: str | None) -> None:
        write_json(self.folder / f'{rank.job_id}.rank{rank.rank}.exit.json',
                   {'rank': rank.rank, 'node': rank.node_name, 'restart': rank.restart, 'code': code, 'line': line})

    def resume_hint(self) -> str:
        if self.last_ckpt.is_file():
            return f'its last checkpoint {self.last_ckpt} is whole: `{self.command} --resume` continues it'
        return f'no checkpoint was written: `{self.command}` starts it again'

    def _set_aside_log(self, rank: Rank) -> None:
        """A requeued attempt with nothing to resume starts afresh: the run log of the attempt before is kept
        beside, as ``NAME.attemptN.EXT``."""
        log = self.description.run_log
        if rank.rank == 0 and log and Path(self.cwd, log).is_file():
            path = Path(self.cwd, log)
            path.rename(free_name(path.with_name(f'{path.stem}.attempt{rank.restart}{path.suffix}')))

    def __call__(self) -> str:
        rank = this_rank()
        if rank.restart > self.max_requeues:
            line = (f'ttm-distill: error: SLURM job {rank.job_id} was requeued {rank.restart} times, more than '
                    f'max_requeues={self.max_requeues}: it stops; {self.resume_hint()}')
            self._record(rank, None, line)
            raise RuntimeError(line)
        resume = self.description.resume or (rank.restart > 0 and self.last_ckpt.is_file())
        if rank.restart > 0 and not resume:
            self._set_aside_log(rank)
        description = self.description.replace(resume=resume,
                                               error_record=str(self.folder / f'{rank.job_id}.error.txt'))
        address, port = rendezvous(self.folder, rank) if rank.world_size > 1 else (None, None)
        cmd = [sys.executable, '-m', 'ttm_torchdistill', *description.argv()]
        print(f'{rank.describe()} of {rank.world_size}, attempt {rank.restart + 1}: ttm-distill '
              f'{shlex.join(cmd[3:])}', flush=True)
        code = self._process.run(cmd, rank_env(rank, address, port), cwd=self.cwd)
        if code == 0:
            self._record(rank, 0, None)
            return 'finished'
        if code in INTERRUPTED:  # stopped with a resume checkpoint, or interrupted (SIGINT, SIGTERM)
            self._record(rank, code, None)
            return 'stopped'  # a requeue (rank 0's own, after SLURM's warning, or SLURM's) continues it
        line = None
        if code < 0:
            line = (f'ttm-distill: error: SLURM job {rank.job_id}: {rank.describe()} was killed by signal {-code}, '
                    f'so the run stopped; {self.resume_hint()}')
        self._record(rank, code, line)
        raise RuntimeError(line or f'{rank.describe()}: ttm-distill train exited with code {code}')

    def checkpoint(self, *args, **kwargs):
        """Rank 0's task on SLURM's warning (submitit calls it): its rank stops after the step every rank agrees on,
        writing the resume checkpoint; then submitit requeues the job (None: max_requeues is reached)."""
        code = self._process.stop()
        rank = this_rank()
        if rank.restart >= self.max_requeues:
            self._record(rank, code, f'ttm-distill: error: SLURM job {rank.job_id} reached max_requeues='
                                     f'{self.max_requeues}: not requeued again; {self.resume_hint()}')
            return None
        return submitit_module().helpers.DelayedSubmission(
            TrainJob(self.description, self.folder, self.cwd, self.last_ckpt, self.max_requeues, self.command))


def _command(opts: RunDescription, request: JobRequest) -> str:
    """The user's command, to resume or restart the job (without --resume, --wait and --dry-run)."""
    args = opts.replace(resume=False, error_record=None).argv()
    return shlex.join(['ttm-distill', *args, '--launcher', 'slurm', *request.argv()])


def submit_training(opts: RunDescription, request: JobRequest) -> int:
    """Check everything, then submit the job (or print it, ``request.dry_run``); follow it with ``request.wait``."""
    own = {'array_parallelism': 'a training run is one job, not an array'}
    params = parse_parameters(list(request.pairs), reserved={**request.reserved(), **own})
    max_requeues = params.pop('max_requeues', MAX_REQUEUES)
    if not isinstance(max_requeues, int) or isinstance(max_requeues, bool) or max_requeues < 0:
        raise UsageError(f'--slurm max_requeues={max_requeues!r}: expected an integer >= 0')
    request.check_device(opts.device)
    request.check_partition(params.get('partition'))
    outputs = check_submission(opts)
    folder = job_folder(outputs.best.expanduser().resolve())
    _refuse_queued(folder)
    outputs.check_free()
    opts = opts.replace(device=opts.device or request.device)
    params = {**request.parameters(), **params}
    world = request.world_size
    command = _command(opts, request)
    per_rank = shlex.join(['ttm-distill', *opts.argv()])
    print(f'slurm launcher: one job of {request.nodes} node(s) x {request.tasks} task(s) = {world} rank(s) '
          f'({request.describe_devices()}) through submitit; parameters: '
          + ' '.join(f'{k}={v}' for k, v in params.items()) + f'; max_requeues={max_requeues}', flush=True)
    print(f'each rank runs: {per_rank}', flush=True)
    if request.dry_run:
        print(f'dry run: nothing submitted; the job\'s folder would be {folder}', flush=True)
        return 0
    created = make_folders(folder)
    try:
        lock = LockFile(folder / 'submit.lock', created)
    except LockHeld:
        raise UsageError(f'{folder}: another `train --launcher slurm` is submitting this run now') from None
    try:
        job_id = _submit(opts, params, folder, outputs.last.expanduser().resolve(), max_requeues, command)
    except BaseException:
        lock.release()
        if created and created[-1] == folder:  # a folder made for this refused submission: nothing stays of it
            shutil.rmtree(folder, ignore_errors=True)
            remove_empty_folders(created[:-1])
        raise
    lock.release()
    log = folder / f'{job_id}_0_log.out'
    print(f'submitted SLURM job {job_id}: {world} rank(s); rank 0\'s console: {log}; checkpoint '
          f'{outputs.best}' + (f'; run log {opts.run_log}' if opts.run_log else '')
          + (f'; summary {opts.summary}' if opts.summary else ''), flush=True)
    if not request.wait:
        print(f'follow it: tail -f {log} (or squeue -j {job_id}); cancel it: scancel {job_id}', flush=True)
        return 0
    return follow_job(job_id, folder, world)


def _refuse_queued(folder: Path) -> None:
    """One line while an earlier job of this run (``job.json``) is queued or running."""
    record = folder / 'job.json'
    if not record.is_file():
        return
    try:
        earlier = str(json.loads(record.read_text()).get('job_id', ''))
    except (ValueError, AttributeError):
        earlier = ''
    if earlier and job_in_queue(earlier):
        raise UsageError(f'SLURM job {earlier} (queued or running) trains this run ({record}): one job per run; '
                         f'wait for it to end, or scancel {earlier}')


def _submit(opts: RunDescription, params: dict, folder: Path, last_ckpt: Path, max_requeues: int,
            command: str) -> str:
    """Submit under the folder's submit lock, refusing while an earlier job of this run is queued or running."""
    _refuse_queued(folder)
    submitit = submitit_module()
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    except RuntimeError as exc:
        raise UsageError(f'--launcher slurm: {exc}') from None
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError) as exc:
        raise UsageError(f'--slurm: {one_line(exc)}') from None
    job = TrainJob(opts, folder, str(Path.cwd()), last_ckpt, max_requeues, command)
    try:
        submitted = executor.submit(job)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        raise UsageError(f'sbatch refused the job: {one_line(exc)}') from None
    write_json(folder / 'job.json', {'job_id': submitted.job_id, 'command': command, 'parameters': params,
                        'max_requeues': max_requeues})
    return submitted.job_id
