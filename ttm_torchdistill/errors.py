"""Errors the command line turns into one plain line and an exit code."""


class UsageError(Exception):
    """Bad input (recipe, override, flag, checkpoint): one line, exit code 2."""

    exit_code = 2


class TrainingDiverged(Exception):
    """A non-finite loss: one line, exit code 1; the last good checkpoint is kept."""

    exit_code = 1


class TrainingFailed(Exception):
    """A training step raised (a loss or model that cannot take a batch, CUDA out of memory): one line naming the
    recipe part, exit code 1; the last good checkpoint is kept."""

    exit_code = 1


class DataFileError(Exception):
    """An unreadable data file (a truncated or corrupt image): one line naming it, exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # torch's DataLoader re-raises a worker's exception as type(exc)(its formatted traceback):
        # keep the original message, the text after the traceback's last "DataFileError: "
        if 'Traceback' in message:
            message = message.rstrip().rsplit(f'{type(self).__name__}: ', 1)[-1]
        super().__init__(message)


def one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) collapsed."""
    return ' '.join(str(exc).split())


class OutputError(Exception):
    """A result could not be written (a full disk, a read-only file system): one line naming the path, exit code 1;
    files written before are kept."""

    exit_code = 1


class TrainingStopped(Exception):
    """Training was asked to stop (SIGUSR2: a time limit or a preemption coming) and stopped after a step, every rank
    after the same one, with a resume checkpoint: one line, exit code 75 (EX_TEMPFAIL: run it again with --resume)."""

    exit_code = 75


COMMAND_ERRORS = (UsageError, TrainingDiverged, TrainingFailed, DataFileError, OutputError)
"""what a command ends in one line (``ttm-distill: error: ...``) with the error's exit code"""
