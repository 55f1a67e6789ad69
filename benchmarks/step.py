"""One distillation step with WTTM vs KD: ResNet-34 teacher forward, ResNet-18 student forward,
backward and SGD, on the same data, interleaved. CPU at a reduced resolution, GPU at 224x224.

    python benchmarks/step.py [--device cpu|cuda] [--batch N] [--size PX] [--reps 10]
"""
from __future__ import annotations

import argparse

import torch
import torchvision
from common import interleaved, machine, summarise, write
from torchdistill.losses.mid_level import KDLoss

from ttm_torchdistill import WTTMLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int)
    parser.add_argument('--size', type=int)
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--inner', type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == 'cuda' else 32)
    size = args.size or (224 if device.type == 'cuda' else 64)
    torch.manual_seed(0)
    teacher = torchvision.models.resnet34().to(device).eval().requires_grad_(False)
    student = torchvision.models.resnet18().to(device).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    losses = {'WTTM': WTTMLoss(gamma=0.8, beta=1.6),
              'KD': KDLoss('.', 'output', '.', 'output', temperature=1.25, alpha=0.5)}

    def step(loss_fn):
        def run():
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            loss = loss_fn({'.': {'output': s}}, {'.': {'output': t}}, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run

    times = interleaved({name: step(fn) for name, fn in losses.items()}, device, args.reps, args.inner, warmup=2)
    rows = {name: dict(summarise(t), images_per_s=batch / summarise(t)['median']) for name, t in times.items()}
    ratio = rows['WTTM']['median'] / rows['KD']['median']
    print(f'distillation step, batch {batch} at {size}x{size}, {device}, {args.reps} interleaved reps x {args.inner}')
    print(f'{"loss":<8}{"median ms":>11}{"min ms":>10}{"max ms":>10}{"img/s":>10}')
    for name, r in rows.items():
        print(f'{name:<8}{r["median"] * 1e3:>11.1f}{r["min"] * 1e3:>10.1f}{r["max"] * 1e3:>10.1f}'
              f'{r["images_per_s"]:>10.1f}')
    print(f'WTTM / KD step time (median): {ratio:.4f}')
    write('step', {'machine': machine(device), 'batch': batch, 'size': size, 'rows': rows,
                   'wttm_over_kd': ratio})


if __name__ == '__main__':
    main()
