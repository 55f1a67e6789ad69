"""One task of a SLURM job as one rank of a distributed run: its place in the job, the rendezvous taken from the job
itself (rank 0's host and a free port there, published in the job's folder; no MASTER_ADDR by hand), and the rank's
training process, to which the stop signal is passed on.

SLURM starts one task per rank (``--ntasks-per-node``); submitit runs the pickled callable in each
(:mod:`.slurm_train`, :mod:`.slurm`), which calls :func:`this_rank`, :func:`rendezvous` and :class:`RankProcess`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..outputs import write_json
from ..stopping import stop_signal
from .runs import child_setup

__all__ = ['RDZV_WAIT_S', 'STOP_WAIT_S', 'Rank', 'RankProcess', 'RendezvousError', 'rank_env', 'rendezvous',
           'this_rank']

RDZV_WAIT_S = 300.0
"""how long a rank waits for rank 0 to publish the rendezvous"""
STOP_WAIT_S = 75.0
"""how long a task waits for its rank to stop after SLURM's warning (submitit asks for it 90 s before the end)"""


class RendezvousError(RuntimeError):
    """Rank 0 did not publish the rendezvous in time."""


@dataclass(frozen=True)
class Rank:
    """A task's place in its SLURM job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int
    nodes: int
    job_id: str
    restart: int
    """SLURM_RESTART_COUNT: how many times the job was requeued"""
    node_name: str

    def describe(self) -> str:
        return f'rank {self.rank} (node {self.node_name}, task {self.local_rank} there)'


def this_rank() -> Rank:
    """The calling task's place, from SLURM's variables as submitit reads them."""
    import submitit

    env = submitit.JobEnvironment()
    nodes = env.num_nodes
    return Rank(rank=env.global_rank, world_size=env.num_tasks, local_rank=env.local_rank,
                local_world_size=max(env.num_tasks // max(nodes, 1), 1), node=env.node, nodes=nodes,
                job_id=str(env.job_id), restart=int(os.environ.get('SLURM_RESTART_COUNT', 0) or 0),
                node_name=os.environ.get('SLURMD_NODENAME', socket.gethostname()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


def rendezvous(folder: Path, rank: Rank, wait_s: float = RDZV_WAIT_S) -> tuple[str, int]:
    """(address, port) of the process group's store: rank 0 takes its own host name and a port free there and
    publishes them in ``folder`` for this attempt of the job (a requeued job gets a new one); the other ranks read
    them. SLURM node names need not resolve: the address is the host name rank 0's machine gives itself."""
    path = folder / f'{rank.job_id}.{rank.restart}.rendezvous.json'
    if rank.rank == 0:
        address = (socket.gethostname(), _free_port())
        write_json(path, {'address': address[0], 'port': address[1]})
        return address
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise RendezvousError(f'{rank.describe()}: rank 0 published no rendezvous in {path} within {wait_s:.0f} s')
        time.sleep(0.2)
    found = json.loads(path.read_text())
    return found['address'], int(found['port'])


def rank_env(rank: Rank, address: str | None, port: int | None) -> dict[str, str]:
    """This process's environment with torch.distributed's variables for ``rank`` (as torchrun sets them), and
    OMP_NUM_THREADS, unless set, the task's CPUs (``--slurm cpus_per_task``; 1 without)."""
    env = dict(os.environ)
    if 'OMP_NUM_THREADS' not in env:  # as torchrun does: the task's CPUs, not every core of the node, per rank
        env['OMP_NUM_THREADS'] = env.get('SLURM_CPUS_PER_TASK', '1')
    env.update(RANK=str(rank.rank), WORLD_SIZE=str(rank.world_size), LOCAL_RANK=str(rank.local_rank),
               LOCAL_WORLD_SIZE=str(rank.local_world_size), GROUP_RANK=str(rank.node))
    if address is not None:
        env.update(MASTER_ADDR=address, MASTER_PORT=str(port))
    return env


class RankProcess:
    """The rank's training process: a child that gets SIGINT if the task dies, polled so that submitit's signal
    handler can run (and reap it) meanwhile."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def run(self, cmd: list[str], env: dict[str, str], cwd: str | None = None, stdout=None) -> int:
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=subprocess.STDOUT if stdout is not None else None,
                                     preexec_fn=child_setup(os.getpid()))
        while self.proc.poll() is None:
            time.sleep(0.5)
        return self.proc.returncode

    def stop(self, wait_s: float = STOP_WAIT_S) -> int | None:
        """Ask the child to stop after its step (the stop signal; it writes its resume checkpoint) and wait for it;
        kill it after ``wait_s``. Its exit code (None: there was no child)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(stop_signal())
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return proc.returncode
