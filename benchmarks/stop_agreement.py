"""What the stop agreement costs a distributed run: after every training step each rank learns whether any rank got
SLURM's warning (one all-reduce of one integer on a Gloo group, :mod:`ttm_torchdistill.runner.stop`). This times that
check per step next to the training step of the tiny CNN of the tests and of a ResNet-18 at 224 px, batch 8 (both on
the CPU), so the share of a step it takes is read off.

    python benchmarks/stop_agreement.py [--ranks N] [--checks K]

It starts itself under torchrun with N CPU ranks (Gloo, the backend of the check on GPUs too).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torchvision
from common import machine, write
from torch.nn.parallel import DistributedDataParallel

from ttm_torchdistill.runner.distributed import setup_distributed, teardown
from ttm_torchdistill.runner.stop import StopAgreement


def _step_seconds(model: torch.nn.Module, images: torch.Tensor, steps: int) -> float:
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    targets = torch.zeros(len(images), dtype=torch.long)
    times = []
    for _ in range(steps + 1):
        dist.barrier()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(ddp(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def rank_main(checks: int) -> None:
    ctx = setup_distributed('cpu')
    stop = StopAgreement(ctx)
    stop.agreed()  # the group is made at the first check
    dist.barrier()
    start = time.perf_counter()
    for _ in range(checks):
        stop.agreed()
    check = (time.perf_counter() - start) / checks
    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4))
    tiny_step = _step_seconds(tiny, torch.randn(8, 3, 16, 16), 20)
    r18_step = _step_seconds(torchvision.models.resnet18(num_classes=10), torch.randn(8, 3, 224, 224), 3)
    if ctx.is_main:
        result = {'machine': machine(ctx.device), 'ranks': ctx.world_size, 'checks': checks,
                  'check_us': check * 1e6, 'tiny_step_ms': tiny_step * 1e3, 'resnet18_step_ms': r18_step * 1e3,
                  'share_of_tiny_step': check / tiny_step, 'share_of_resnet18_step': check / r18_step}
        print(f'stop agreement: {check * 1e6:.1f} us a step on {ctx.world_size} CPU ranks (Gloo); '
              f'tiny CNN step {tiny_step * 1e3:.2f} ms ({check / tiny_step:.1%}); ResNet-18 224 px batch 8 step '
              f'{r18_step * 1e3:.0f} ms ({check / r18_step:.3%})')
        write('stop_agreement', result)
    teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--ranks', type=int, default=2)
    parser.add_argument('--checks', type=int, default=2000)
    args = parser.parse_args()
    if 'RANK' in os.environ:
        rank_main(args.checks)
        return
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={args.ranks}',
                    __file__, '--checks', str(args.checks)], check=True, env=env)


if __name__ == '__main__':
    main()
