"""One sweep run's process: its command line, and its state recorded when it ends."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import yaml

from ..runner import tensorboard
from .plan import RunSpec

__all__ = ['INTERRUPTED', 'record_exit', 'start_run']

INTERRUPTED = {130, -signal.SIGINT, -signal.SIGTERM}
"""exit codes of a run stopped from outside (Ctrl-C, preemption): resumable, not failed"""


def _python_value(value: str) -> object:
    """A grid value as a Python scalar (for hparams)."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (int, float, str, bool)) else value


def _error_line(output: Path, returncode: int) -> str:
    try:
        lines = [line.strip() for line in output.read_text(errors='replace').splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith('ttm-distill: error:')]
    what = f'killed by signal {-returncode}' if returncode < 0 else f'exit code {returncode}'
    detail = errors[-1] if errors else (lines[-1] if lines else 'no output')
    return f'{what}: {detail}'


def record_exit(run: RunSpec, returncode: int) -> tuple[str, float | None, str | None]:
    """The run's :meth:`RunSpec.state` after its process ended; a failure leaves its error line in error.txt."""
    if returncode == 0 and run.summary_path.is_file():
        state = run.state()
        if run.tensorboard_dir is not None and state[1] is not None:
            hparams = {k: _python_value(v) for k, v in run.values.items()}
            tensorboard.write_hparams(run.tensorboard_dir, dict(hparams, seed=run.seed), {'best_val_top1': state[1]})
        return state
    if returncode in INTERRUPTED:
        return run.state()
    error = _error_line(run.output_path, returncode)
    run.error_path.write_text(error + '\n')
    return 'failed', None, error


def start_run(run: RunSpec) -> list[str]:
    """Clear an earlier failure and return the full command line of the run (this interpreter)."""
    run.directory.mkdir(parents=True, exist_ok=True)
    run.error_path.unlink(missing_ok=True)
    return [sys.executable, '-m', 'ttm_torchdistill', *run.command()]
