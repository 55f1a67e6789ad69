"""A real SLURM cluster of one or more nodes on this host, in a temporary folder (fixture `slurm_cluster`: 2 nodes).

It runs Debian's `munged`, `slurmctld` and one `slurmd` per node as root, in the foreground as children of the test
process, with their own slurm.conf, munge key and socket, state/spool folders, logs and free TCP ports, so they never
touch a system SLURM or munge. Every node has the CPUs and memory `slurmd -C` detects on this host (so 2 nodes of a
2-CPU host offer 4 one-CPU task slots: more than the cores, fine for tests); partition `debug` (the default, all
nodes) has no time limit. There is no slurmdbd: `sacct` fails, so read job states with `squeue`/`scontrol`
(`job_states`, `wait_for`); finished jobs stay visible for MinJobAge (10 min).

Several nodes on one host: Debian's slurm-wlm 22.05 is built with --enable-multiple-slurmd (`scontrol show config`
says MULTIPLE_SLURMD = Yes), so each node is a real slurmd started as `slurmd -D -f slurm.conf -N NAME`, told apart by
its own port and `%n` (node name) paths:
    SlurmdSpoolDir=<root>/spool/%n  SlurmdPidFile=<root>/slurmd.%n.pid  SlurmdLogFile=<root>/slurmd.%n.log
    NodeName=ttmnode1 NodeHostname=<host> NodeAddr=127.0.0.1 Port=<port 1> CPUs=... RealMemory=... State=UNKNOWN
    NodeName=ttmnode2 NodeHostname=<host> NodeAddr=127.0.0.1 Port=<port 2> ...
SlurmctldHost must stay the host's own name (not a node's). A one-node cluster (`nodes=1`) keeps this host's name as
its node name. Inside a task of `--nodes=2 --ntasks-per-node=1`: SLURMD_NODENAME=ttmnode1 / ttmnode2, SLURM_NODEID=0
/ 1, SLURM_PROCID=0 / 1, SLURM_LOCALID=0, SLURM_JOB_NODELIST=ttmnode[1-2], SLURM_TOPOLOGY_ADDR=the node's name, but
`hostname` (socket.gethostname(), submitit's JobEnvironment().hostname) is this host on every node. The node names do
not resolve (no DNS or /etc/hosts entry): code that needs the first node's address (a MASTER_ADDR) must not resolve
SLURM node names, as submitit's TorchDistributedEnvironment does (hostnames[0] = 'ttmnode1'); use
socket.gethostname() on that node, or `scontrol show node NAME`'s NodeAddr (127.0.0.1).

Signals, measured here (2-node job, srun tasks that each start a child python process; ProctrackType=
proctrack/linuxproc, which signals every process descended from the step's slurmstepd, as proctrack/cgroup signals
every process of the step's cgroup on a real cluster):
- `scancel --signal=USR2 JOB` (no --batch) reaches every srun task on both nodes and their child processes, even
  children in a session of their own, within ~20 ms; the batch shell does not get it. sbatch's `--signal=USR2@90`
  (submitit's) reaches the same processes, at slurmctld's next periodic check (here up to ~30 s after the time).
  So a training child of a submitit task gets SLURM's USR2 itself, at the same time as the submitit task: it needs
  its own USR2 handler (USR2's default action ends a process), and forwarding the signal from the parent would
  deliver it twice.
- `scontrol requeue JOB` and `scancel JOB`: every process of the batch step and of each srun step, children included,
  gets SIGCONT then SIGTERM at once, then SIGKILL when still alive about 5 s later (slurmd waits max(KillWait, 5) s;
  KillWait=2 here); srun reports "Job step aborted". A requeued job runs again on all its nodes with
  SLURM_RESTART_COUNT=1 (unset on the first run).

How to use it (e.g. for `ttm-distill sweep --launcher slurm`):
- SLURM client commands need `SLURM_CONF=<cluster.conf>` in their environment: `cluster.env` is a copy of
  os.environ with it set (and inherited SLURM_* job variables removed). Give it to subprocesses, or
  `monkeypatch.setenv('SLURM_CONF', str(cluster.conf))` when submitit runs in the test process. sbatch exports the
  submitter's environment to the job, so put PYTHONPATH (tests/, for test-module functions) there too; for the CLI
  in a subprocess, `cli_env(SLURM_CONF=cluster.conf)` from conftest does both.
- submitit: `submitit.AutoExecutor(folder=tmp)` (or `cluster='slurm'` to insist), then
  `update_parameters(slurm_partition=cluster.partition, timeout_min=5, cpus_per_task=1, slurm_array_parallelism=N)`
  (add `nodes=2, tasks_per_node=1` for a job on two nodes; `job.results()` then holds one result per task).
  That yields `sbatch --partition=debug --time=5 --cpus-per-task=1 --nodes=1 --signal=USR2@90 --wckey=submitit` and
  `srun` inside the job, which all work here (the wckey is ignored without accounting). Do not ask for GPUs or for
  more memory than a node has (`mem_gb`, off by default); keep `timeout_min` above 1.5 (the USR2 signal comes
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
NODE_PREFIX = 'ttmnode'  # the nodes of a cluster of several: ttmnode1, ttmnode2, ...


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
    """A started cluster of `nodes` nodes; `stop()` (or leaving a `with` block) cancels its jobs and ends its daemons.

    `nodes` holds the node names (`node` is the first), `cpus` the CPUs of each node.
    """

    def __init__(self, root: Path, nodes: int = 1):
        if nodes < 1:
            raise ValueError(f'test SLURM cluster: nodes must be at least 1, not {nodes}')
        self.root = Path(root)
        self.conf = self.root / 'slurm.conf'
        self.partition = PARTITION
        self.host = socket.gethostname().split('.')[0]
        self.nodes = [self.host] if nodes == 1 else [f'{NODE_PREFIX}{i}' for i in range(1, nodes + 1)]
        self.node = self.nodes[0]
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
        """The last lines of the daemons' logs (every node's slurmd), for error messages."""
        names = ['slurmctld.log', *(f'slurmd.{n}.log' for n in self.nodes), 'munged.log',
                 'slurmctld.out', *(f'slurmd.{n}.out' for n in self.nodes), 'munged.out']
        return '\n'.join(_tail(self.root / name, lines) for name in names if (self.root / name).exists())

    # ---- life cycle
    def _write_config(self) -> None:
        hardware = _node_hardware()
        self.cpus = int(hardware['CPUs'])
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        for sub in ('state', *(f'spool/{n}' for n in self.nodes)):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / 'plugstack.conf').write_text('')  # no SPANK plugins from the host's /etc/slurm
        node_hw = ' '.join(f'{k}={v}' for k, v in hardware.items())
        r = self.root
        lines = [
            'ClusterName=ttmtest', f'SlurmctldHost={self.host}(127.0.0.1)',
            'SlurmUser=root', 'SlurmdUser=root', f'SlurmctldPort={ctld_port}',
            'AuthType=auth/munge', 'CredType=cred/munge',
            f'AuthInfo=socket={r / "munge.socket"},cred_expire={CRED_EXPIRE}',
            # %n: the node's name, so that the slurmd daemons of this one host keep apart
            f'StateSaveLocation={r / "state"}', f'SlurmdSpoolDir={r / "spool" / "%n"}',
            f'SlurmctldPidFile={r / "slurmctld.pid"}', f'SlurmdPidFile={r / "slurmd.%n.pid"}',
            f'SlurmctldLogFile={r / "slurmctld.log"}', f'SlurmdLogFile={r / "slurmd.%n.log"}',
            f'PlugStackConfig={r / "plugstack.conf"}',
            'SlurmctldDebug=info', 'SlurmdDebug=info', 'MpiDefault=none',
            'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
            'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
            'SchedulerType=sched/builtin', 'SchedulerParameters=sched_interval=1',
            'AccountingStorageType=accounting_storage/none', 'JobCompType=jobcomp/none',
            'JobAcctGatherType=jobacct_gather/none', 'MailProg=/bin/true',
            'ReturnToService=2', 'MinJobAge=600', 'MaxArraySize=10001', 'JobRequeue=1', 'KillWait=2',
            *(f'NodeName={name} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={port} {node_hw} State=UNKNOWN'
              for name, port in zip(self.nodes, node_ports, strict=True)),
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

    def node_states(self) -> dict[str, str]:
        """{node: state} as sinfo reports them ('idle', 'mixed', 'allocated', 'down*', ...)."""
        out = self.run('sinfo', '--noheader', '--Node', '--format=%N|%T', check=False).stdout
        return dict(line.split('|', 1) for line in out.split() if '|' in line)

    def _nodes_idle(self) -> bool:
        states = self.node_states()
        return sorted(states) == sorted(self.nodes) and set(states.values()) == {'idle'}

    def start(self, timeout: float = 30) -> None:
        """Write the configuration, start munged, slurmctld and a slurmd per node, and wait for every node to be
        idle."""
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
        for name in self.nodes:
            self._spawn(f'slurmd.{name}', [_which('slurmd'), '-D', '-f', str(self.conf), '-N', name])
        self._wait(f'nodes {self.nodes} did not all become idle', self._nodes_idle, timeout)

    def stop(self, timeout: float = 15) -> None:
        """Cancel every job, then end every slurmd, slurmctld and munged (in that order) by PID and reap them."""
        if 'slurmctld' in self._daemons and self._daemons['slurmctld'].poll() is None:
            self.run('scancel', f'--partition={self.partition}', check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run(
                    'squeue', '--noheader', '--states=RUNNING,COMPLETING,CONFIGURING', check=False).stdout.strip():
                time.sleep(0.2)
        for names in ([f'slurmd.{n}' for n in self.nodes], ['slurmctld'], ['munged']):
            procs = [p for p in (self._daemons.pop(n, None) for n in names) if p is not None and p.poll() is None]
            for proc in procs:  # the slurmd daemons end together
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)


def start_cluster(tmp_dir: Path, timeout: float = 30, nodes: int = 1) -> SlurmCluster:
    """Start a cluster of `nodes` nodes in `tmp_dir` (as root); use it as a context manager or call `stop()`."""
    cluster = SlurmCluster(tmp_dir, nodes)
    try:
        cluster.start(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
