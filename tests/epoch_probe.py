"""Test-only plugin: a pre-epoch process that, at the start of each epoch, saves every rank's student (with its
wrapper) to $PROBE_RANK_DIR/epoch<done>_rank<r>.pt, SIGKILLs its own process ($PROBE_KILL_AT_EPOCH, 1-based) or sends
it SIGUSR2, SLURM's warning ($PROBE_SIGNAL_AT_EPOCH: the run stops after that epoch's first step), then does what
``pre_epoch_process_with_frozen_teacher`` does. Name it with
``--set train.pre_epoch_process=probe_epoch``."""
import os
import signal
from pathlib import Path

import torch
from torchdistill.core.interfaces.registry import register_pre_epoch_proc_func

from ttm_torchdistill.processes import pre_epoch_process_with_frozen_teacher


@register_pre_epoch_proc_func
def probe_epoch(self, epoch=None, **kwargs):
    if int(os.environ.get('PROBE_KILL_AT_EPOCH', 0)) == epoch + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if int(os.environ.get('PROBE_SIGNAL_AT_EPOCH', 0)) == epoch + 1:
        os.kill(os.getpid(), signal.SIGUSR2)
    folder = os.environ.get('PROBE_RANK_DIR')
    if folder:  # the state after `epoch` epochs
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(self.student_model.state_dict(), Path(folder) / f'epoch{epoch}_rank{rank}.pt')
    pre_epoch_process_with_frozen_teacher(self, epoch=epoch, **kwargs)
