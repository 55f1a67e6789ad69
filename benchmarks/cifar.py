"""Images/s of the CIFAR-100 job (WTTM resnet56 -> resnet20, batch 64) through `ttm-distill train`: eager vs
--compile, PIL loader (the machine's cores as workers) vs in-memory CIFAR, 1 vs N packed runs (aggregate), and the
training loaders alone; then what the rates mean for one 240-epoch run and for the 13-pair x 5-seed WTTM table.

    python benchmarks/cifar.py [--device cpu|cuda] [--images N] [--epochs E] [--packed N] [--workers W] [--reps R]
                               [--cases pil,memory,...]

Data: generated CIFAR-100 files (random pixels; torchvision's md5 check is replaced in the benchmark's runs only).
Each case is a `ttm-distill train` process; its rate is the mean training img/s of epochs 2..E from the metrics
file (epoch 1 holds start-up and compilation, reported as its own time). Packed runs start together, each pinned to
the first GPU with CUDA_VISIBLE_DEVICES (on CPU: OMP_NUM_THREADS = cores / N), as `sweep --runs-per-gpu N` does;
their rate is the sum of the runs' rates. With --reps R every case runs once per repetition, in turn (machine drift
hits all alike), and the table shows the median (the JSON file has every repetition).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, sync, write

from ttm_torchdistill.recipe import load_recipe, parse_overrides, resolve_recipe

RECIPE = 'cifar100/wttm/resnet20_from_resnet56'
MEMORY = ['datasets.cifar100/train.key=ttm_torchdistill.data.CIFAR100InMemory',
          'datasets.cifar100/test.key=ttm_torchdistill.data.CIFAR100InMemory']
OFFLINE = ('import os\nimport torchvision.datasets.cifar\n'
           'torchvision.datasets.cifar.check_integrity = lambda path, md5=None: os.path.isfile(path)\n')
RUN_IMAGES, PAIRS, SEEDS = 240 * 50_000, 13, 5
CASES = ('pil', 'memory', 'pil-compile', 'memory-compile', 'memory-reduce-overhead', 'packed', 'packed-compile',
         'loader')


def make_cifar100(root: Path, train: int, test: int) -> None:
    rng = np.random.default_rng(0)
    folder = root / 'cifar-100-python'
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (('train', train), ('test', test)):
        entry = {'data': rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8),
                 'fine_labels': [i % 100 for i in range(count)], 'coarse_labels': [i % 20 for i in range(count)],
                 'filenames': [f'{split}_{i}.png' for i in range(count)]}
        (folder / split).write_bytes(pickle.dumps(entry))
    meta = {'fine_label_names': [f'class{i}' for i in range(100)], 'coarse_label_names': [f's{i}' for i in range(20)]}
    (folder / 'meta').write_bytes(pickle.dumps(meta))
    (root / 'bench_offline_cifar.py').write_text(OFFLINE)


def command(args, work: Path, memory: bool, mode: str | None) -> list[str]:
    sets = ['dependencies=[{name: ttm_torchdistill}, {name: bench_offline_cifar}]',
            'models.teacher_model.src_ckpt=null', f'train.num_epochs={args.epochs}', 'train.log_freq=1000000',
            f'train.train_data_loader.kwargs.num_workers={args.workers}',
            f'train.val_data_loader.kwargs.num_workers={args.workers}', f'models.student_model.dst_ckpt={work}/s.pt',
            *(MEMORY if memory else [])]
    cmd = [sys.executable, '-m', 'ttm_torchdistill', 'train', RECIPE, '--device', args.device, '--seed', '0',
           '--no-test', *(['--compile', mode] if mode else [])]
    for item in sets:
        cmd += ['--set', item]
    return cmd


def run_job(args, root: Path, memory: bool, mode: str | None, copies: int = 1) -> dict:
    """``copies`` runs started together; their epochs' rates from the metrics files."""
    env = dict(os.environ, CIFAR100_ROOT=str(root),
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    if copies > 1:
        if args.device == 'cuda':
            first = (os.environ.get('CUDA_VISIBLE_DEVICES') or '0').split(',')[0]
            env['CUDA_VISIBLE_DEVICES'] = first
        else:
            env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // copies))
    with tempfile.TemporaryDirectory() as tmp:
        works = [Path(tmp) / f'run{k}' for k in range(copies)]
        start = time.perf_counter()
        procs = [subprocess.Popen(command(args, w, memory, mode), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for w in works]
        errors = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - start
        for proc, err in zip(procs, errors, strict=True):
            if proc.returncode:
                raise RuntimeError(f'a benchmark run failed ({proc.returncode}):\n{err[-3000:]}')
        epochs = [[json.loads(line) for line in (w / 's.metrics.jsonl').read_text().splitlines()] for w in works]
    steady = [[e['train_images_per_s'] for e in run[1:]] or [run[0]['train_images_per_s']] for run in epochs]
    return {'images_per_s': sum(sum(r) / len(r) for r in steady), 'runs': copies, 'wall_s': wall,
            'first_epoch_s': max(run[0]['train_s'] for run in epochs),
            'epoch_images_per_s': [[e['train_images_per_s'] for e in run] for run in epochs]}


def loaders_alone(args, root: Path) -> dict:
    """One epoch of each training loader, batches moved to the device: PIL with the workers vs in memory."""
    os.environ['CIFAR100_ROOT'] = str(root)
    sys.path.insert(0, str(root))
    import bench_offline_cifar  # noqa: F401
    from torch.utils.data import DataLoader, RandomSampler

    from ttm_torchdistill.data import device_batches

    device = torch.device(args.device)
    rates = {}
    for name, sets in (('pil', []), ('memory', MEMORY[:1])):
        dataset = load_recipe(resolve_recipe(RECIPE), parse_overrides(sets))['datasets']['cifar100/train']
        loader = DataLoader(dataset, sampler=RandomSampler(dataset), batch_size=64, num_workers=args.workers,
                            pin_memory=device.type == 'cuda')
        loader = device_batches(loader, device)[0]
        for _ in range(2):  # the first epoch copies the in-memory images to the device: the second is timed
            sync(device)
            start = time.perf_counter()
            for batch in loader:
                images = batch[0].to(device, non_blocking=True)
            sync(device)
            seconds = time.perf_counter() - start
        rates[name] = {'images_per_s': len(dataset) / seconds, 'last_shape': list(images.shape)}
    return rates


def median(results: list[dict]) -> dict:
    """The repetition with the median rate, with every repetition's rate and their range."""
    rates = sorted(r['images_per_s'] for r in results)
    middle = sorted(results, key=lambda r: r['images_per_s'])[(len(results) - 1) // 2]
    return dict(middle, images_per_s=statistics.median(rates), min=rates[0], max=rates[-1], reps=len(rates))


def save(args, reps: dict, load: list[float], quiet: bool = False) -> tuple[dict, dict | None]:
    """Medians per case, written to results/cifar-<device>.json with every repetition."""
    rows = {case: median(runs) for case, runs in reps.items() if case != 'loader' and runs}
    loader = {name: median([r[name] for r in reps['loader']]) for name in ('pil', 'memory')} \
        if reps.get('loader') else None
    payload = {'machine': machine(torch.device(args.device)), 'recipe': RECIPE, 'images': args.images,
               'epochs': args.epochs, 'packed': args.packed, 'workers': args.workers, 'reps': args.reps,
               'load_average': load, 'rows': rows, 'loader_alone': loader, 'repetitions': reps}
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            write('cifar', payload)
    else:
        write('cifar', payload)
    return rows, loader


def hours(rate: float, images: float) -> float:
    return images / rate / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--images', type=int, help='generated training images (CPU 1024, GPU 25600)')
    parser.add_argument('--test-images', type=int, default=512)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--packed', type=int, help='runs packed at once (CPU 2, GPU 4)')
    parser.add_argument('--workers', type=int, default=os.cpu_count(), help="PIL loader workers (the machine's cores)")
    parser.add_argument('--reps', type=int, default=1, help='repetitions of every case, interleaved (median shown)')
    parser.add_argument('--cases', default=None, help=f'comma-separated, of {",".join(CASES)} (default: all; on CPU '
                                                      'without memory-reduce-overhead, which needs CUDA graphs)')
    args = parser.parse_args()
    gpu = args.device == 'cuda'
    args.images = args.images or (25600 if gpu else 1024)
    args.packed = args.packed or (4 if gpu else 2)
    cases = args.cases.split(',') if args.cases else [c for c in CASES if gpu or c != 'memory-reduce-overhead']
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f'unknown cases {sorted(unknown)}; choose from {",".join(CASES)}')
    pil = f'PIL loader ({args.workers} workers)'
    labels = {'pil': f'{pil}, eager', 'memory': 'in-memory, eager', 'pil-compile': f'{pil}, --compile',
              'memory-compile': 'in-memory, --compile',
              'memory-reduce-overhead': 'in-memory, --compile reduce-overhead',
              'packed': f'{args.packed} packed runs, in-memory, eager (sum)',
              'packed-compile': f'{args.packed} packed runs, in-memory, --compile (sum)'}
    jobs = {'pil': (False, None, 1), 'memory': (True, None, 1), 'pil-compile': (False, 'default', 1),
            'memory-compile': (True, 'default', 1), 'memory-reduce-overhead': (True, 'reduce-overhead', 1),
            'packed': (True, None, args.packed), 'packed-compile': (True, 'default', args.packed)}
    load = [os.getloadavg()[0]]
    reps = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cifar100(root, args.images, args.test_images)
        for rep in range(args.reps):
            for case in cases:
                if case == 'loader':
                    reps[case].append(loaders_alone(args, root))
                    done = ', '.join(f'{k} {v["images_per_s"]:.1f} img/s' for k, v in reps[case][-1].items())
                else:
                    result = run_job(args, root, *jobs[case])
                    reps[case].append(result)
                    done = f'{result["images_per_s"]:.1f} img/s, epoch 1 {result["first_epoch_s"]:.1f} s'
                print(f'  repetition {rep + 1}/{args.reps}: {case}: {done}', flush=True)
                save(args, reps, load + [os.getloadavg()[0]], quiet=True)  # a run cut short keeps what it measured
    load.append(os.getloadavg()[0])
    rows, loader = save(args, reps, load)
    base = rows.get('pil', {}).get('images_per_s')
    print(f'\nttm-distill train {RECIPE}, batch 64, {args.device}, {args.images} generated training images, '
          f'{args.epochs} epochs, {args.reps} repetition(s); img/s: mean of epochs 2..{args.epochs} (training only); '
          f'load average {load[0]:.1f} at the start, {load[1]:.1f} at the end')
    print(f'{"case":<48}{"img/s":>9}{"min-max":>15}{"x PIL eager":>12}{"epoch 1 s":>11}{"240 ep. h":>11}'
          f'{"65 runs d":>11}')
    for case, r in rows.items():
        ratio = f'{r["images_per_s"] / base:.2f}' if base else '-'
        table_days = hours(r['images_per_s'], RUN_IMAGES * PAIRS * SEEDS) / 24
        spread = f'{r["min"]:.0f}-{r["max"]:.0f}'
        print(f'{labels[case]:<48}{r["images_per_s"]:>9.1f}{spread:>15}{ratio:>12}{r["first_epoch_s"]:>11.1f}'
              f'{hours(r["images_per_s"] / r["runs"], RUN_IMAGES):>11.2f}{table_days:>11.2f}')
    for name, r in (loader or {}).items():
        label = f'loader alone: {"PIL (" + str(args.workers) + " workers)" if name == "pil" else "in-memory"}'
        spread = f'{r["min"]:.0f}-{r["max"]:.0f}'
        print(f'{label:<48}{r["images_per_s"]:>9.1f}{spread:>15}')
    print(f'\n240 ep. h: one 240-epoch run ({RUN_IMAGES / 1e6:.0f}M training images) at the row\'s rate per run; '
          f'65 runs d: the {PAIRS}-pair x {SEEDS}-seed WTTM table ({RUN_IMAGES * PAIRS * SEEDS / 1e6:.0f}M images) on '
          'this one device at the row\'s total rate, at this pair\'s cost per image (most pairs have larger models); '
          'validation (10k images per epoch) and start-up are not counted.')


if __name__ == '__main__':
    main()
