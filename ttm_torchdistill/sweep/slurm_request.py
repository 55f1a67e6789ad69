"""What a SLURM job asks for, checked in one line each before anything is submitted: nodes, tasks and GPUs per node
(``--nodes``, ``--tasks-per-node``, ``--gpus-per-node``), the ``--slurm KEY=VALUE`` parameters (submitit
SlurmExecutor's), a partition that has the GPUs asked for; and whether a job is still in the queue."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import yaml

from ..errors import UsageError, one_line

__all__ = ['INSTALL', 'JobRequest', 'job_in_queue', 'parse_parameters', 'submitit_module']

INSTALL = "pip install 'ttm-torchdistill[slurm]'"
DEFAULTS = {'time': 24 * 60}
"""submitit's own default time limit is 5 minutes"""
OWN_KEYS = ('max_requeues',)
"""``--slurm`` keys of ours, not submitit's"""


def submitit_module():
    try:
        import submitit
    except ImportError:
        raise UsageError(f'--launcher slurm needs submitit, which is not installed ({INSTALL})') from None
    return submitit


def parse_parameters(pairs: list[str], reserved: dict[str, str] | None = None) -> dict:
    """``--slurm KEY=VALUE`` options to submitit SlurmExecutor parameters (VALUE is YAML); ``reserved``: keys that a
    flag of the command or the launcher sets (key -> why), refused here."""
    valid = set(submitit_module().SlurmExecutor._valid_parameters()) | set(OWN_KEYS)
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        key = key.strip().removeprefix('slurm_')
        if not sep or not key:
            raise UsageError(f'--slurm {pair!r}: expected KEY=VALUE, e.g. partition=gpu or time=240 (minutes)')
        if key not in valid:
            raise UsageError(f'--slurm {key}: not a submitit SlurmExecutor parameter (accepted: '
                             f'{", ".join(sorted(valid))})')
        if reserved and key in reserved:
            raise UsageError(f'--slurm {key}: {reserved[key]}')
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UsageError(f'--slurm {pair!r}: VALUE is not valid YAML ({one_line(exc)})') from None
    return params


def job_in_queue(job_id: str) -> bool:
    """Whether squeue lists the SLURM job (any task of an array) as pending or running; False also when squeue is
    missing, fails or times out."""
    if shutil.which('squeue') is None:
        return False
    try:
        result = subprocess.run(['squeue', '-h', '-j', str(job_id), '-o', '%i'], capture_output=True, text=True,
                                timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def _count(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise UsageError(f'{flag} {value}: expected at least 1')


@dataclass(frozen=True)
class JobRequest:
    """The shape of each job: ``nodes`` x (``gpus_per_node`` GPU tasks, or ``tasks_per_node`` CPU tasks), a rank a
    task; ``pairs``: the ``--slurm`` options."""

    nodes: int = 1
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    pairs: tuple[str, ...] = ()
    wait: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        _count(self.nodes, '--nodes')
        _count(self.gpus_per_node, '--gpus-per-node')
        _count(self.tasks_per_node, '--tasks-per-node')
        if self.gpus_per_node and self.tasks_per_node and self.tasks_per_node != self.gpus_per_node:
            raise UsageError(f'--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: a '
                             'GPU job runs one task (rank) per GPU; leave out --tasks-per-node')

    @property
    def tasks(self) -> int:
        """Tasks (ranks) per node."""
        return self.gpus_per_node or self.tasks_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks

    @property
    def device(self) -> str:
        return 'cuda' if self.gpus_per_node else 'cpu'

    def check_device(self, device: str | None) -> None:
        if device is not None and device != self.device:
            raise UsageError(f'--device {device} with --launcher slurm: ' + (
                'the job asks for GPUs (--gpus-per-node); leave out --device' if self.gpus_per_node
                else 'give --gpus-per-node G for a GPU job (one rank per GPU)'))

    def describe_devices(self) -> str:
        return f'{self.gpus_per_node} GPU(s) a node, NCCL' if self.gpus_per_node else 'CPU ranks, Gloo'

    def reserved(self) -> dict[str, str]:
        """submitit parameters that these flags (or the launcher) set: key -> why ``--slurm`` cannot."""
        return {'nodes': 'set by --nodes', 'ntasks': 'set by --nodes x --tasks-per-node',
                **dict.fromkeys(('ntasks_per_node', 'tasks_per_node'), 'set by --tasks-per-node (CPU ranks) or '
                                '--gpus-per-node (a rank per GPU)'),
                **dict.fromkeys(('gpus_per_node', 'num_gpus', 'gpus_per_task'), 'set by --gpus-per-node (a rank per '
                                'GPU)'),
                'use_srun': 'the launcher starts each rank with srun; it stays on'}

    def parameters(self) -> dict:
        """submitit parameters for the job's shape (the ``--slurm`` ones come on top)."""
        params = dict(DEFAULTS, nodes=self.nodes, ntasks_per_node=self.tasks)
        if self.gpus_per_node:
            params['gpus_per_node'] = self.gpus_per_node
        return params

    def argv(self) -> list[str]:
        """The flags that ask for this shape again (for a command to print)."""
        args = ['--nodes', str(self.nodes)]
        if self.gpus_per_node:
            args += ['--gpus-per-node', str(self.gpus_per_node)]
        elif self.tasks_per_node:
            args += ['--tasks-per-node', str(self.tasks_per_node)]
        for pair in self.pairs:
            args += ['--slurm', pair]
        return args

    def check_partition(self, partition: object) -> None:
        """GPUs asked of a partition whose nodes have none: one line naming it (sinfo's view; skipped without
        sinfo)."""
        if not self.gpus_per_node or shutil.which('sinfo') is None:
            return
        args = ['sinfo', '-h', '-o', '%P %G'] + ([f'--partition={partition}'] if partition else [])
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            return
        rows = [line.split(None, 1) for line in out.stdout.splitlines() if line.strip()]
        if out.returncode != 0 or not rows:
            return
        if not partition:
            rows = [row for row in rows if row[0].endswith('*')] or rows[:1]
        name = rows[0][0].rstrip('*')
        gres = ', '.join(dict.fromkeys(row[1].strip() if len(row) > 1 else '(null)' for row in rows))
        if 'gpu' not in gres:
            raise UsageError(f'--gpus-per-node {self.gpus_per_node}: partition {name} has no GPUs (its nodes\' GRES: '
                             f'{gres}); leave out --gpus-per-node to train on CPU ranks, or name a GPU partition with '
                             '--slurm partition=NAME')
