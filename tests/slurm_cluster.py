"""A real one-node SLURM cluster in a temporary folder, started by the test suite (fixture `slurm_cluster`).

It runs Debian's `munged`, `slurmctld` and `slurmd` as root, in the foreground as children of the test process, with
their own slurm.conf, munge key and socket, state/spool folders, logs and two free TCP ports, so they never touch a
system SLURM or munge. The node is this host with the CPUs and memory `slurmd -C` detects; partition `debug`
(the default) has no time limit. There is no slurmdbd: `sacct` fails, so read job states with `squeue`/`scontrol`
(`job_states`, `wait_for`); finished jobs stay visible for MinJobAge (10 min).

How to use it (e.g. for `ttm-distill sweep --launcher slurm`):
- SLURM client commands need `SLURM_CONF=<cluster.conf>` in their environment: `cluster.env` is a copy of
  os.environ with it set (and inherited SLURM_* job variables removed). Give it to subprocesses, or
  `monkeypatch.setenv('SLURM_CONF', str(cluster.conf))` when submitit runs in the test process. sbatch exports the
  submitter's environment to the job, so put PYTHONPATH (tests/, for test-module functions) there too; for the CLI
  in a subprocess, `cli_env(SLURM_CONF=cluster.conf)` from conftest does both.
- submitit: `submitit.AutoExecutor(folder=tmp)` (or `cluster='slurm'` to insist), then
  `update_parameters(slurm_partition=cluster.partition, timeout_min=5, cpus_per_task=1, slurm_array_parallelism=N)`.
  That yields `sbatch --partition=debug --time=5 --cpus-per-task=1 --nodes=1 --signal=USR2@90 --wckey=submitit` and
  `srun` inside the job, which all work here (the wckey is ignored without accounting). Do not ask for GPUs or for
  more memory than the node has (`mem_gb`, off by default); keep `timeout_min` above 1.5 (the USR2 signal comes
  90 s before the end). Jobs run `sys.executable` (the venv's Python). `job.result()` works without sacct (submitit
  reads the result pickle, and a function's exception comes back as FailedJobError; it logs "Bypassing sacct error"
  warnings, which are harmless), but it waits forever for a job killed before writing a result (scancel, node
  failure): bound waits with `cluster.wait_for`.
- `scontrol requeue` works (JobRequeue=1); AuthInfo's cred_expire is short so a requeued job starts again within
  seconds instead of SLURM's default two minutes.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PARTITION = 'debug'
# binaries the cluster needs -> Debian package that holds each
BINARIES = {'munged': 'munge', 'slurmctld': 'slurmctld', 'slurmd': 'slurmd', 'sinfo': 'slurm-client',
            'sbatch': 'slurm-client', 'squeue': 'slurm-client', 'scontrol': 'slurm-client', 'scancel': 'slurm-client'}
FINAL_STATES = frozenset({'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL',
                          'DEADLINE', 'PREEMPTED'})
# seconds: a requeued job waits cred_expire + 1 before it may start again (SLURM's default is 120, its minimum 5)
CRED_EXPIRE = 5
SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the final NUL


def _which(name: str) -> str | None:
    """Path of a binary on PATH or in the sbin folders (where Debian puts the daemons)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin']))


def unavailable_reason() -> str | None:
    """Why a cluster cannot start here (to skip the SLURM tests), or None when it can."""
    if not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return 'the test SLURM cluster runs slurmctld, slurmd and munged as root; run the tests as root'
    missing = [name for name in BINARIES if _which(name) is None]
    if missing:
        packages = ' '.join(dict.fromkeys(BINARIES[name] for name in missing))
        return f"SLURM binaries not found: {', '.join(missing)} (apt-get install {packages})"
    return None


def _free_ports(count: int) -> list[int]:
    """Distinct TCP ports free now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(('', 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_hardware() -> dict[str, str]:
    """CPUs, boards, sockets, cores, threads and RealMemory as `slurmd -C` detects them."""
    out = subprocess.run([_which('slurmd'), '-C'], capture_output=True, text=True, check=True, timeout=30).stdout
    fields = dict(item.split('=', 1) for item in out.split('\n', 1)[0].split() if '=' in item)
    keys = ('CPUs', 'Boards', 'SocketsPerBoard', 'CoresPerSocket', 'ThreadsPerCore', 'RealMemory')
    return {k: fields[k] for k in keys if k in fields}


def _die_with_parent() -> None:
    """In a daemon's child process: get SIGTERM when the test process dies, even if it is killed."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors='replace').splitlines()[-lines:]
    return '\n'.join([f'== {path.name}', *text])


class SlurmCluster:
    """A started one-node cluster; `stop()` (or leaving a `with` block) cancels its jobs and ends its daemons."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / 'slurm.conf'
        self.partition = PARTITION
        self.node = socket.gethostname().split('.')[0]
        self.cpus = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
        self.env['SLURM_CONF'] = str(self.conf)
        self._daemons: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- client commands
    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, squeue, scontrol, scancel, ...) against this cluster."""
        cmd = [str(a) for a in args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, *args: str) -> str:
        """Submit with `sbatch --parsable ARGS`; returns the job id."""
        return self.run('sbatch', '--parsable', *args).stdout.strip().split(';')[0]

    def job_states(self, job_id: str | int) -> dict[str, str]:
        """State of each task of a job, keyed by SLURM's id: '12' for a single job, '12_0', '12_1', ... for an array."""
        out = self.run('squeue', '--noheader', '--array', '--states=all', f'--jobs={job_id}', '--format=%i|%T',
                       check=False).stdout
        return dict(line.split('|', 1) for line in out.split() if '|' in line)

    def wait_for(self, job_id: str | int, states: tuple[str, ...] = ('COMPLETED',), timeout: float = 60,
                 tasks: int | None = None) -> dict[str, str]:
        """Wait until every task of a job (at least `tasks` of them, if given) is in one of `states`.

        Fails at once when a task reaches a final state not in `states`, and on timeout, with the states and logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            current = self.job_states(job_id)
            if current and len(current) >= (tasks or 1) and all(s in states for s in current.values()):
                return current
            wrong = {k: s for k, s in current.items() if s in FINAL_STATES and s not in states}
            if wrong or time.monotonic() > deadline:
                why = f'ended as {wrong}' if wrong else f'not in {states} after {timeout} s'
                raise AssertionError(f'job {job_id} {why}: {current}\n{self.log_tails()}')
            time.sleep(0.25)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of the daemons' logs, for error messages."""
        names = ('slurmctld.log', 'slurmd.log', 'munged.log', 'slurmctld.out', 'slurmd.out', 'munged.out')
        return '\n'.join(_tail(self.root / name, lines) for name in names if (self.root / name).exists())

    # ---- life cycle
    def _write_config(self) -> None:
        hardware = _node_hardware()
        self.cpus = int(hardware['CPUs'])
        ctld_port, slurmd_port = _free_ports(2)
        for sub in ('state', 'spool'):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        (self.root / 'plugstack.conf').write_text('')  # no SPANK plugins from the host's /etc/slurm
        node_hw = ' '.join(f'{k}={v}' for k, v in hardware.items())
        r = self.root
        lines = [
            'ClusterName=ttmtest', f'SlurmctldHost={self.node}(127.0.0.1)',
            'SlurmUser=root', 'SlurmdUser=root', f'SlurmctldPort={ctld_port}', f'SlurmdPort={slurmd_port}',
            'AuthType=auth/munge', 'CredType=cred/munge',
            f'AuthInfo=socket={r / "munge.socket"},cred_expire={CRED_EXPIRE}',
            f'StateSaveLocation={r / "state"}', f'SlurmdSpoolDir={r / "spool"}',
            f'SlurmctldPidFile={r / "slurmctld.pid"}', f'SlurmdPidFile={r / "slurmd.pid"}',
            f'SlurmctldLogFile={r / "slurmctld.log"}', f'SlurmdLogFile={r / "slurmd.log"}',
            f'PlugStackConfig={r / "plugstack.conf"}',
            'SlurmctldDebug=info', 'SlurmdDebug=info', 'MpiDefault=none',
            'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
            'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
            'SchedulerType=sched/builtin', 'SchedulerParameters=sched_interval=1',
            'AccountingStorageType=accounting_storage/none', 'JobCompType=jobcomp/none',
            'JobAcctGatherType=jobacct_gather/none', 'MailProg=/bin/true',
            'ReturnToService=2', 'MinJobAge=600', 'MaxArraySize=10001', 'JobRequeue=1', 'KillWait=2',
            f'NodeName={self.node} NodeAddr=127.0.0.1 {node_hw} State=UNKNOWN',
            f'PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
        ]
        self.conf.write_text('\n'.join(lines) + '\n')

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.root / f'{name}.out', 'w') as out:
            self._daemons[name] = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True,
                                                   preexec_fn=_die_with_parent)

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [f'{n} exited {p.returncode}' for n, p in self._daemons.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = ', '.join(dead) if dead else f'timed out after {timeout} s'
                raise RuntimeError(f'test SLURM cluster in {self.root}: {what} ({why})\n{self.log_tails()}')
            time.sleep(0.1)

    def _node_idle(self) -> bool:
        out = self.run('sinfo', '--noheader', f'--nodes={self.node}', '--format=%T', check=False).stdout
        return out.strip() == 'idle'

    def start(self, timeout: float = 30) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, and wait for the node to be idle."""
        key, sock = self.root / 'munge.key', self.root / 'munge.socket'
        if len(str(sock)) > SOCKET_PATH_MAX:
            raise ValueError(f'test SLURM cluster: munge socket path {sock} is longer than {SOCKET_PATH_MAX} bytes')
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config()
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        # --force: munged refuses sockets whose parent folders others cannot search (pytest's temp folders are 0700);
        # every client here runs as root
        self._spawn('munged', [_which('munged'), '--foreground', '--force', f'--socket={sock}', f'--key-file={key}',
                               f'--pid-file={self.root / "munged.pid"}', f'--log-file={self.root / "munged.log"}',
                               f'--seed-file={self.root / "munged.seed"}'])
        self._wait('munged did not create its socket', sock.exists, timeout)
        self._spawn('slurmctld', [_which('slurmctld'), '-D', '-f', str(self.conf)])
        self._spawn('slurmd', [_which('slurmd'), '-D', '-f', str(self.conf), '-N', self.node])
        self._wait(f'node {self.node} did not become idle', self._node_idle, timeout)

    def stop(self, timeout: float = 15) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged (in that order) by PID and reap them."""
        if 'slurmctld' in self._daemons and self._daemons['slurmctld'].poll() is None:
            self.run('scancel', f'--partition={self.partition}', check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run(
                    'squeue', '--noheader', '--states=RUNNING,COMPLETING,CONFIGURING', check=False).stdout.strip():
                time.sleep(0.2)
        for name in ('slurmd', 'slurmctld', 'munged'):
            proc = self._daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)


def start_cluster(tmp_dir: Path, timeout: float = 30) -> SlurmCluster:
    """Start a one-node cluster in `tmp_dir` (as root); use it as a context manager or call `stop()`."""
    cluster = SlurmCluster(tmp_dir)
    try:
        cluster.start(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
