"""The sweep's local launcher: N jobs at a time (a `ttm-distill train` run, or with --lockstep a group of runs in
one process, :mod:`.jobs`), each pinned to one visible GPU (several per GPU with --runs-per-gpu)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque

from ..errors import TrainingStopped
from ..runner.logs import format_eta
from .folder import save_manifest
from .jobs import Job, plan_jobs
from .plan import Sweep
from .results import sweep_table
from .runs import child_setup

__all__ = ['LocalLauncher']

STOP_WAIT_S = 120
"""how long Ctrl-C waits for the runs to stop before killing them (they stop within seconds)"""
PROGRESS_S = 60.0
"""seconds between progress lines of the running runs"""


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as CUDA_VISIBLE_DEVICES entries."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [d.strip() for d in listed.split(',') if d.strip()] if listed else [str(i) for i in range(count)]
    return ids[:count]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class LocalLauncher:
    def __init__(self, sweep: Sweep, parallel: int | None, runs_per_gpu: int | None = None, lockstep: bool = False,
                 group_size: int | None = None) -> None:
        """``runs_per_gpu``: slots per visible GPU (default 1; ``parallel`` defaults to GPUs x N); slot k runs on GPU
        k mod G. Given without a GPU it has no effect (a note says so) and ``parallel`` defaults to 1. A slot runs a
        job: one run, or with ``lockstep`` a group of at most ``group_size`` runs."""
        self.sweep, self.lockstep, self.group_size = sweep, lockstep, group_size
        self.gpus = visible_gpus()
        self.runs_per_gpu = runs_per_gpu or 1
        self.parallel = parallel or max(len(self.gpus) * self.runs_per_gpu, 1)
        self.note = None
        if runs_per_gpu is not None and not self.gpus:
            self.note = (f'note: --runs-per-gpu {runs_per_gpu} has no effect: no GPU is visible, so runs share the '
                         f'CPU, {self.parallel} at a time (--parallel)')

    @property
    def unit(self) -> str:
        return 'lockstep group' if self.lockstep else 'run'

    def describe(self) -> None:
        unit = self.unit
        per = f'one per {unit}' if self.runs_per_gpu == 1 else f'{self.runs_per_gpu} {unit}s per GPU'
        where = f'GPUs {",".join(self.gpus)}, {per}' if self.gpus else 'CPU'
        if self.note:
            print(self.note)
        print(f'local launcher: {self.parallel} {unit}(s) at a time on {where}')
        if self.lockstep:
            for job in plan_jobs(self.sweep, True, self.group_size):
                print(f'  {job.describe()}: ttm-distill {" ".join(job.argv())}')

    def _env(self, slot: int) -> dict:
        env = dict(os.environ)
        if self.gpus:
            env['CUDA_VISIBLE_DEVICES'] = self.gpus[slot % len(self.gpus)]
        elif self.parallel > 1 and 'OMP_NUM_THREADS' not in env:  # share the cores instead of oversubscribing
            env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // self.parallel))
        return env

    def _start(self, job: Job, slot: int):
        cmd = job.start()
        out = job.output_path.open('ab')
        try:
            # a session of its own: a terminal's Ctrl-C reaches the sweep only, which forwards it once
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._env(slot), start_new_session=True, preexec_fn=child_setup(os.getpid()))
        except BaseException:
            out.close()
            raise
        return proc, job, time.monotonic(), out

    def launch(self) -> int:
        """Run what has not finished (the caller holds the sweep's lock). SIGTERM and SIGHUP (a closed terminal)
        stop the sweep as Ctrl-C does; if the launcher is killed outright, its runs get SIGINT from the kernel."""
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        sweep = self.sweep
        todo = deque(plan_jobs(sweep, self.lockstep, self.group_size))
        save_manifest(sweep)  # with each run's lockstep group
        total = len(sweep.runs)
        left = sum(len(job.runs) for job in todo)
        done = total - left
        if self.note:
            print(self.note, flush=True)
        if todo:
            per = f', {self.runs_per_gpu} per GPU' if self.gpus and self.runs_per_gpu > 1 else ''
            groups = f' in {len(todo)} lockstep group(s)' if self.lockstep else ''
            print(f'{left} of {total} run(s) to do{groups}, {self.parallel} at a time{per}; runs in {sweep.directory}',
                  flush=True)
        running: dict[int, tuple] = {}
        start, ended, failed, paused = time.monotonic(), 0, 0, 0
        last_progress = time.monotonic()
        try:
            while todo or running:
                for slot in range(self.parallel):
                    if slot not in running and todo:
                        running[slot] = self._start(todo.popleft(), slot)
                        job = running[slot][1]
                        log = job.runs[0].log_path if job.group is None else job.output_path
                        print(f'started {job.describe()}: log {log}', flush=True)
                time.sleep(0.1)
                if time.monotonic() - last_progress >= PROGRESS_S:
                    last_progress = time.monotonic()
                    self._progress(running)
                for slot, (proc, job, t0, out) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    out.close()
                    del running[slot]
                    for run, state, best, error in job.record(proc.returncode):
                        done, ended = done + 1, ended + 1
                        eta = (time.monotonic() - start) / ended * (sum(len(j.runs) for j in todo)
                                                                   + sum(len(r[1].runs) for r in running.values()))
                        if state == 'finished':
                            what = f'best val top-1 {best:.2f}'
                        elif state == 'interrupted':  # stopped on a signal, with its resume checkpoint
                            paused += 1
                            what = 'stopped with a resume checkpoint; the same command resumes it'
                        else:
                            failed += 1
                            what = f'FAILED ({error})'
                        print(f'[{done}/{total}] {run.describe()}: {what} ({time.monotonic() - t0:.1f} s), '
                              f'eta {format_eta(eta)}', flush=True)
                    save_manifest(sweep)
        except KeyboardInterrupt:
            stopped = self._stop(running)
            save_manifest(sweep)
            print(f'ttm-distill: interrupted: {stopped} {self.unit}(s) stopped, {done}/{total} done; the same command '
                  'resumes the sweep', file=sys.stderr, flush=True)
            return 130
        finally:
            if running:  # left by an error, not by the loop's end: no training run outlives the launcher
                self._stop(running)
        save_manifest(sweep)
        print(sweep_table(sweep.directory), flush=True)
        return 1 if failed else TrainingStopped.exit_code if paused else 0

    @staticmethod
    def _progress(running: dict) -> None:
        """One line per running run (each run of a lockstep group): epochs done (from its metrics file), its ETA,
        and where its log is."""
        for _, job, t0, _ in running.values():
            for run in job.runs:
                done, total = run.epochs_done(), run.epochs
                elapsed = time.monotonic() - t0
                if done and total:
                    eta = f'eta {format_eta(elapsed / done * (total - done))}'
                else:
                    eta = 'eta after its first epoch'
                of = f'/{total}' if total else ''
                print(f'  running {run.describe()}: epoch {done}{of} done, {format_eta(elapsed)} so far, {eta}; '
                      f'log {run.log_path}', flush=True)

    def _stop(self, running: dict) -> int:
        """Forward the interrupt to every job and wait for them (each run keeps its last epoch's checkpoint); empties
        ``running`` and returns how many there were."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc, *_ in running.values():
                proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + STOP_WAIT_S
            for proc, job, _, out in running.values():
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                out.close()
                job.record(proc.returncode)
        finally:
            signal.signal(signal.SIGINT, previous)
        stopped = len(running)
        running.clear()
        return stopped
