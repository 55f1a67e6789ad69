"""The runner: a run built from a recipe, the training loop, checkpoints, distributed set-up and the report."""
from .commands import run_test, run_train
from .run import Run

__all__ = ['Run', 'run_test', 'run_train']
