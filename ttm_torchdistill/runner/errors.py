"""Errors the command line turns into one plain line and an exit code."""


class UsageError(Exception):
    """Bad input (recipe, override, flag, data): one line, exit code 2."""

    exit_code = 2


class TrainingDiverged(Exception):
    """A non-finite loss: one line, exit code 1; the last good checkpoint is kept."""

    exit_code = 1
