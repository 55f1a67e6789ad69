"""One sweep run's process: its folder and command line, a child that dies with its launcher, its recorded end."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import TrainingStopped
from ..runner import tensorboard
from .plan import SweepRun

__all__ = ['INTERRUPTED', 'child_setup', 'record_exit', 'start_run']

PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process gets when its parent dies"""
_LIBC = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True) if sys.platform.startswith('linux') else None

INTERRUPTED = {130, TrainingStopped.exit_code, -signal.SIGINT, -signal.SIGTERM}
"""exit codes of a run stopped from outside (Ctrl-C, a stop request before a time limit or a preemption, a kill):
resumable, not failed"""


def _error_lines(output: Path, since: int) -> list[str]:
    """The non-empty lines of ``output`` from byte ``since`` on."""
    try:
        with output.open('rb') as f:
            f.seek(since)
            text = f.read().decode(errors='replace')
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _error_line(output: Path, returncode: int, since: int = 0, fallback: Path | None = None) -> str:
    lines = _error_lines(output, since)
    errors = [line for line in lines if line.startswith('ttm-distill: error:')]
    if not errors and fallback is not None:  # a lockstep group's own error (its run said nothing)
        lines = _error_lines(fallback, 0) or lines
        errors = [line for line in lines if line.startswith('ttm-distill: error:')]
    what = f'killed by signal {-returncode}' if returncode < 0 else f'exit code {returncode}'
    detail = errors[-1] if errors else (lines[-1] if lines else 'no output')
    return f'{what}: {detail}'


def record_exit(run: SweepRun, returncode: int, since: int = 0,
                fallback: Path | None = None) -> tuple[str, float | None, str | None]:
    """The run's :meth:`SweepRun.state` after its process ended. A failed run recorded its error line in its
    error.txt itself (``RunDescription.error_record``); one that could not (killed, a crash) gets its exit and the last
    line of its output (from byte ``since`` on, else of ``fallback``) there."""
    if returncode == 0 and run.summary_path.is_file():
        state = run.state()
        if run.tensorboard_dir is not None and state[1] is not None:
            hparams = dict(run.hparams, seed=run.seed)
            tensorboard.write_hparams(run.tensorboard_dir, hparams, {'best_val_top1': state[1]})
        return state
    if returncode in INTERRUPTED:
        return run.state()
    recorded = run.error_path.read_text(errors='replace').strip() if run.error_path.is_file() else ''
    if recorded:
        return 'failed', None, recorded
    error = _error_line(run.output_path, returncode, since, fallback)
    run.error_path.write_text(error + '\n')
    return 'failed', None, error


def _set_aside(run: SweepRun, only_summary: bool = False) -> Path | None:
    """Before a fresh start (no .last.pt to resume): move what an earlier attempt left (its log, metrics, summary,
    checkpoint, error, curves) into ``<run>/attempts/<n>/``, so the new attempt replaces nothing. ``only_summary``:
    before a resume, a summary.json that does not count (cut off, foreign), which the run would replace."""
    left = [p for p in ((run.summary_path,) if only_summary else (
        run.log_path, run.metrics_path, run.summary_path, run.error_path, run.directory / run.ckpt_name)) if p.exists()]
    curves = run.tensorboard_dir if run.tensorboard_dir is not None and run.tensorboard_dir.is_dir() \
        and not only_summary else None
    if not left and curves is None:
        return None
    n = 1
    while (target := run.directory / 'attempts' / str(n)).exists():
        n += 1
    target.mkdir(parents=True)
    for path in left:
        path.rename(target / path.name)
    if curves is not None:
        curves.rename(target / 'tensorboard')
    return target


def start_run(run: SweepRun) -> list[str]:
    """Prepare the run's folder and return its full command line (this interpreter): resumes from .last.pt, else
    starts afresh with an earlier attempt's files set aside."""
    run.directory.mkdir(parents=True, exist_ok=True)
    if run.last_ckpt.is_file():
        run.error_path.unlink(missing_ok=True)  # a resumed failure: its error line is in sweep.json's history
        if run.summary_note() is not None:
            _set_aside(run, only_summary=True)
    else:
        _set_aside(run)
    return [sys.executable, '-m', 'ttm_torchdistill', *run.argv()]


def child_setup(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for a run's process: it gets SIGINT when the launcher dies (even by kill -9), so it stops and
    keeps its last epoch's checkpoint; Ctrl-C works in it even when the launcher was started in the background."""
    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job ignores SIGINT; its runs must not
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        if os.getppid() != parent:  # the launcher died before prctl
            os.kill(os.getpid(), signal.SIGINT)

    return setup
