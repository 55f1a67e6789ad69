"""The stop request's flag: SIGUSR2 (SLURM's warning before a time limit or a preemption, as submitit asks for it)
caught from the start of a training command, so the signal never kills a run, only asks it to stop; SIGTERM
interrupts it as Ctrl-C does.

Standard library only, so that the command line installs it before the heavy imports. The ranks' agreement on the flag
and the stop itself are the runner's (:mod:`ttm_torchdistill.runner.stop`).
"""
from __future__ import annotations

import os
import signal
import threading

__all__ = ['STOP_SIGNAL_ENV', 'catch_stop_signal', 'request_stop', 'restore_signals', 'stop_requested',
           'stop_signal']

STOP_SIGNAL_ENV = 'SUBMITIT_PREEMPT_SIGNAL'
"""submitit's variable naming the signal SLURM sends before the end (``--signal=USR2@90``)"""
_requested = threading.Event()


def stop_signal() -> signal.Signals:
    """The signal that asks a run to stop: SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL names another (``USR1``)."""
    name = os.environ.get(STOP_SIGNAL_ENV, 'USR2').upper().removeprefix('SIG')
    return getattr(signal.Signals, f'SIG{name}', signal.SIGUSR2)


def request_stop(signum: int | None = None, frame: object = None) -> None:
    """Ask this process's training to stop at the next step boundary (the signal handler)."""
    _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def catch_stop_signal() -> dict:
    """From now on, with no stop asked yet, :func:`stop_signal` asks for a stop instead of ending the process, and
    SIGTERM (``scancel``, ``scontrol requeue``, ``kill``) interrupts it as Ctrl-C does, so that it frees its lock and
    folders on the way out (main thread only). Returns the handlers it replaced, for :func:`restore_signals`."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {stop_signal(): request_stop, signal.SIGTERM: _interrupt}
    return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}


def restore_signals(previous: dict) -> None:
    """Put back the handlers :func:`catch_stop_signal` replaced (a command run inside another program)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
