"""Wall time of a gamma x beta grid of the CIFAR-100 job (WTTM resnet56 -> resnet20, batch 64) through `ttm-distill
sweep`, point by point and with --lockstep (one data loader and one teacher forward per batch for every point).

    python benchmarks/lockstep.py [--device cpu|cuda] [--images N] [--epochs E] [--gammas ...] [--betas ...]
                                  [--loader pil|memory] [--workers W] [--reps R] [--group-size N]

Data: generated CIFAR-100 files (random pixels; torchvision's md5 check is replaced in the benchmark's runs only)
and a randomly initialised teacher (the weights do not change the cost). Both sweeps are the command a user runs:
one seed, every point to the end (validation every epoch, no test pass), `--parallel 1` point by point. The ratio is
the point-by-point wall time over the lockstep one; each point's training rate (img/s, from its metrics file) is
shown as well. With --reps R the two sweeps take turns R times and the medians are shown.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from cifar import MEMORY, RECIPE, make_cifar100
from common import machine, write


def sweep(args, root: Path, out: Path, lockstep: bool) -> dict:
    """One `ttm-distill sweep` of the grid: its wall time and each point's mean training img/s."""
    sets = ['dependencies=[{name: ttm_torchdistill}, {name: bench_offline_cifar}]',
            'models.teacher_model.src_ckpt=null', f'train.num_epochs={args.epochs}', 'train.log_freq=1000000',
            f'train.train_data_loader.kwargs.num_workers={args.workers}',
            f'train.val_data_loader.kwargs.num_workers={args.workers}', *(MEMORY if args.loader == 'memory' else [])]
    cmd = [sys.executable, '-m', 'ttm_torchdistill', 'sweep', RECIPE, '--grid', f'gamma={",".join(args.gammas)}',
           '--grid', f'beta={",".join(args.betas)}', '--seeds', '0', '-o', str(out), '--parallel', '1']
    cmd += ['--lockstep', *(['--group-size', str(args.group_size)] if args.group_size else [])] if lockstep else []
    for item in sets:
        cmd += ['--set', item]
    env = dict(os.environ, CIFAR100_ROOT=str(root), CUDA_VISIBLE_DEVICES=os.environ.get('CUDA_VISIBLE_DEVICES', '0'),
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    if args.device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f'the sweep failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
    rates = []
    for metrics in sorted(out.glob('*/seed0/run.metrics.jsonl')):
        epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
        rates.append(statistics.mean(e['train_images_per_s'] for e in epochs))
    return {'wall_s': wall, 'points': len(rates), 'point_images_per_s': rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--images', type=int, help='generated training images (CPU 2048, GPU 25600)')
    parser.add_argument('--test-images', type=int, default=512)
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--gammas', nargs='+', default=['0.1', '0.2', '0.3', '0.4'])
    parser.add_argument('--betas', nargs='+', default=['1', '2'])
    parser.add_argument('--loader', choices=('pil', 'memory'), default='pil',
                        help="the recipe's PIL loader (default) or the in-memory CIFAR switch")
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help="loader workers (the machine's cores)")
    parser.add_argument('--group-size', type=int, help='sweep --group-size (default: all points in one group)')
    parser.add_argument('--reps', type=int, default=1, help='repetitions of both sweeps, in turn (medians shown)')
    args = parser.parse_args()
    args.images = args.images or (25600 if args.device == 'cuda' else 2048)
    load = [os.getloadavg()[0]]
    reps: dict[str, list[dict]] = {'alone': [], 'lockstep': []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cifar100(root, args.images, args.test_images)
        for rep in range(args.reps):
            for case in reps:
                result = sweep(args, root, root / f'{case}{rep}', case == 'lockstep')
                reps[case].append(result)
                print(f'  repetition {rep + 1}/{args.reps}: {case}: {result["wall_s"]:.1f} s', flush=True)
    load.append(os.getloadavg()[0])
    walls = {case: statistics.median(r['wall_s'] for r in runs) for case, runs in reps.items()}
    ratio = walls['alone'] / walls['lockstep']
    points = len(args.gammas) * len(args.betas)
    write('lockstep', {'machine': machine(torch.device(args.device)), 'recipe': RECIPE, 'images': args.images,
                       'test_images': args.test_images, 'epochs': args.epochs, 'points': points,
                       'loader': args.loader, 'workers': args.workers, 'group_size': args.group_size,
                       'load_average': load, 'wall_s': walls, 'speed_up': ratio, 'repetitions': reps})
    print(f'\nttm-distill sweep {RECIPE}: {len(args.gammas)} gamma x {len(args.betas)} beta = {points} points, '
          f'one seed, batch 64, {args.device}, {args.images} generated training images and {args.test_images} '
          f'validation images, {args.epochs} epoch(s), {args.loader} loader ({args.workers} workers), {args.reps} '
          f'repetition(s); load average {load[0]:.1f} at the start, {load[1]:.1f} at the end')
    print(f'{"sweep":<28}{"wall s":>9}{"s per point":>13}{"point img/s":>13}')
    for case, runs in reps.items():
        rate = statistics.median(statistics.mean(r['point_images_per_s']) for r in runs)
        label = 'point by point (--parallel 1)' if case == 'alone' else 'lockstep (one group)'
        print(f'{label:<28}{walls[case]:>9.1f}{walls[case] / points:>13.1f}{rate:>13.1f}')
    print(f'\nlockstep speed-up: {ratio:.2f}x (point-by-point wall time / lockstep wall time; target >= 1.5x on 2 CPU '
          'cores)')


if __name__ == '__main__':
    main()
