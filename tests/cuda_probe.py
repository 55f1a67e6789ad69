"""Test-only plugin for tests/test_cuda.py: deterministic settings, an epoch probe, and one-process NCCL runs.

Named in a recipe's ``dependencies`` (tests/ is on PYTHONPATH), it is imported while the recipe loads, after the
runner's set-up has turned ``cudnn.benchmark`` on, so its settings win:

* ``TTM_TEST_DETERMINISTIC=1``: the settings under which a killed and resumed CUDA run equals an uninterrupted one bit
  for bit (BENCHMARKS.md, "GPU check script"): ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (also set it in the environment:
  cuBLAS reads it when its first handle is made), ``torch.use_deterministic_algorithms(True, warn_only=True)``,
  ``cudnn.benchmark = False`` and ``cudnn.deterministic = True``. ``warn_only``: torchvision's ResNets pool with
  AdaptiveAvgPool2d, whose CUDA backward has no deterministic kernel and would raise; it warns instead.
* ``probe_cuda_epoch`` (``--set train.pre_epoch_process=probe_cuda_epoch``): at the start of each epoch, SIGKILLs its
  own process at epoch $CUDA_PROBE_KILL_AT_EPOCH (1-based), does what ``pre_epoch_process_with_frozen_teacher`` does,
  then appends what it sees to $CUDA_PROBE_LOG (JSON lines).

Run as a script, ``torchrun --nproc_per_node=1 tests/cuda_probe.py train ...`` is ``ttm-distill`` with the process
group joined even for one process (the runner joins it only for two or more), so one GPU exercises the NCCL path:
DistributedDataParallel, all-reduce, all-gather and barrier.
"""
import json
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torchdistill.core.interfaces.registry import register_pre_epoch_proc_func

from ttm_torchdistill.processes import pre_epoch_process_with_frozen_teacher

DETERMINISTIC = os.environ.get('TTM_TEST_DETERMINISTIC') == '1'
if DETERMINISTIC:
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _devices(*modules) -> list[str]:
    return sorted({str(t.device) for m in modules for t in [*m.parameters(), *m.buffers()]})


@register_pre_epoch_proc_func
def probe_cuda_epoch(self, epoch=None, **kwargs):
    if int(os.environ.get('CUDA_PROBE_KILL_AT_EPOCH', 0)) == epoch + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    pre_epoch_process_with_frozen_teacher(self, epoch=epoch, **kwargs)
    path = os.environ.get('CUDA_PROBE_LOG')
    if not path:
        return
    initialized = dist.is_available() and dist.is_initialized()
    record = {
        'epoch': epoch, 'rank': dist.get_rank() if initialized else 0,
        'backend': dist.get_backend() if initialized else None,
        'student_ddp': any(isinstance(m, DistributedDataParallel) for m in self.student_model.modules()),
        'teacher_training': self.teacher_model.training,
        'devices': _devices(self.student_model, self.teacher_model),
        'cudnn_benchmark': torch.backends.cudnn.benchmark,
        'deterministic': torch.are_deterministic_algorithms_enabled(),
        'cublas_workspace_config': os.environ.get('CUBLAS_WORKSPACE_CONFIG'),
    }
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def _main() -> int:
    from ttm_torchdistill.cli import main
    from ttm_torchdistill.runner.distributed import DistContext

    DistContext.distributed = property(lambda self: True)  # join the process group even with one process
    return main(sys.argv[1:])


if __name__ == '__main__':
    sys.exit(_main())
