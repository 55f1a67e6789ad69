"""Images/s of `ttm-distill train` (WTTM, ResNet-34 -> ResNet-18): fp32 vs --amp bf16 --channels-last,
from a generated ImageFolder tree and from synthetic batches already on the device (the compute limit).

    python benchmarks/runner.py [--device cpu|cuda] [--batch N] [--size PX] [--images N] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write
from PIL import Image

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.runner.distributed import setup_distributed, teardown
from ttm_torchdistill.runner.run import Run
from ttm_torchdistill.runner.trainer import Trainer

RECIPE = 'ilsvrc2012/wttm/resnet18_from_resnet34'
MODES = {'fp32': [], 'bf16 + channels_last': ['--amp', 'bf16', '--channels-last']}


def make_tree(root: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (('train', images), ('val', 8)):
        for c in range(2):
            folder = root / split / f'c{c}'
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count // 2):
                Image.fromarray((rng.random((256, 320, 3)) * 255).astype('uint8')).save(folder / f'{i}.jpg')


def overrides(args, workdir: Path) -> list[str]:
    size = f'[{args.size}, {args.size}]'
    return ['models.teacher_model.kwargs.weights=null', 'train.num_epochs=1', 'train.log_freq=1000000',
            f'train.train_data_loader.kwargs.batch_size={args.batch}',
            f'train.train_data_loader.kwargs.num_workers={args.workers}',
            'train.val_data_loader.kwargs.num_workers=0', 'test.test_data_loader.kwargs.num_workers=0',
            # the crop size is an anchor shared by the train crop and the val centre crop
            f'datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.transforms.0.init.kwargs.size={size}',
            f'models.student_model.dst_ckpt={workdir}/ckpt.pt']


def from_disk(args, root: Path, flags: list[str]) -> float:
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, '-m', 'ttm_torchdistill', 'train', RECIPE, '--device', args.device, '--seed', '0',
               '--summary', f'{work}/s.json', *flags]
        for item in overrides(args, Path(work)):
            cmd += ['--set', item]
        subprocess.run(cmd, check=True, env=dict(os.environ, ILSVRC2012_ROOT=str(root)), stdout=subprocess.DEVNULL)
        return json.loads(Path(f'{work}/s.json').read_text())['train_images_per_s']


def synthetic(args, root: Path, flags: list[str], iters: int) -> float:
    """The runner's own training loop over identical batches already on the device."""
    os.environ['ILSVRC2012_ROOT'] = str(root)
    with tempfile.TemporaryDirectory() as work:
        opts = RunDescription(recipe=RECIPE, overrides=overrides(args, Path(work)), device=args.device, seed=0,
                             quiet=True, amp='bf16' if flags else None, channels_last=bool(flags))
        ctx = setup_distributed(args.device)
        try:
            trainer = Trainer(Run(opts, ctx))
            fmt = torch.channels_last if flags else torch.contiguous_format
            x = torch.randn(args.batch, 3, args.size, args.size, device=ctx.device).to(memory_format=fmt)
            y = torch.randint(0, 1000, (args.batch,), device=ctx.device)
            steps(trainer, x, y, 2)  # warm-up (cudnn autotuning, allocator)
            return steps(trainer, x, y, iters)
        finally:
            teardown()


def steps(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    """img/s of ``iters`` of the trainer's training steps (forward, backward, update) on the batch (x, y)."""
    trainer.begin_epoch(0, iters)
    start = time.perf_counter()
    for it in range(iters):
        trainer.step(it, x, y, {})
    if x.device.type == 'cuda':
        torch.cuda.synchronize()
    return iters * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int)
    parser.add_argument('--size', type=int)
    parser.add_argument('--images', type=int)
    parser.add_argument('--workers', type=int)
    args = parser.parse_args()
    gpu = args.device == 'cuda'
    args.batch = args.batch or (256 if gpu else 16)
    args.size = args.size or (224 if gpu else 112)
    args.images = args.images or (args.batch * 20 if gpu else 64)
    args.workers = args.workers if args.workers is not None else (8 if gpu else 1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tree(root, args.images)
        for mode, flags in MODES.items():
            rows[mode] = {'imagefolder_images_per_s': from_disk(args, root, flags),
                          'synthetic_images_per_s': synthetic(args, root, flags, args.images // args.batch)}
    base = rows['fp32']['imagefolder_images_per_s']
    print(f'ttm-distill train {RECIPE}, batch {args.batch} at {args.size}x{args.size}, {args.device}, '
          f'{args.images} generated images, {args.workers} loader workers')
    print(f'{"mode":<22}{"ImageFolder img/s":>19}{"synthetic img/s":>17}{"x fp32 (disk)":>15}')
    for mode, r in rows.items():
        print(f'{mode:<22}{r["imagefolder_images_per_s"]:>19.1f}{r["synthetic_images_per_s"]:>17.1f}'
              f'{r["imagefolder_images_per_s"] / base:>15.2f}')
    write('runner', {'machine': machine(torch.device(args.device)), 'batch': args.batch, 'size': args.size,
                     'images': args.images, 'workers': args.workers, 'rows': rows})


if __name__ == '__main__':
    main()
