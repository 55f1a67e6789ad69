"""Forward + backward time of WTTMLoss, TTMLoss, torchdistill's KDLoss and the paper's pseudo-code.

    python benchmarks/loss.py [--device cpu|cuda] [--batch 256] [--classes 1000] [--reps 30]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import interleaved, machine, summarise, write
from torchdistill.losses.mid_level import KDLoss

from ttm_torchdistill import TTMLoss, WTTMLoss


def paper_wttm(student_logits, teacher_logits, targets, gamma, beta):
    """A plain transcription of the paper's appendix A.3 pseudo-code, plus the cross entropy."""
    log_q = F.log_softmax(student_logits, dim=1)
    p_t = F.softmax(teacher_logits, dim=1).pow(gamma)
    u = p_t.sum(dim=1)
    p_hat = p_t / u.unsqueeze(1)
    kl = (p_hat * (p_hat.log() - log_q)).sum(dim=1)
    return F.cross_entropy(student_logits, targets) + beta * (u * kl).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--classes', type=int, default=1000)
    parser.add_argument('--reps', type=int, default=30)
    parser.add_argument('--inner', type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    z = (3 * torch.randn(args.batch, args.classes, device=device)).requires_grad_()
    v = 3 * torch.randn(args.batch, args.classes, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    io_s, io_t = {'.': {'output': z}}, {'.': {'output': v}}
    wttm, ttm = WTTMLoss(gamma=0.8, beta=1.6), TTMLoss(gamma=0.8, beta=1.6)
    kd = KDLoss('.', 'output', '.', 'output', temperature=1.25, alpha=0.5)

    def step(loss_fn):
        def run():
            z.grad = None
            loss_fn().backward()
        return run

    cases = {
        'WTTMLoss': step(lambda: wttm(io_s, io_t, y)),
        'TTMLoss': step(lambda: ttm(io_s, io_t, y)),
        'KDLoss (torchdistill)': step(lambda: kd(io_s, io_t, y)),
        'paper pseudo-code (A.3)': step(lambda: paper_wttm(z, v, y, 0.8, 1.6)),
    }
    times = interleaved(cases, device, args.reps, args.inner)
    kd_median = summarise(times['KDLoss (torchdistill)'])['median']
    rows = {name: dict(summarise(t), ratio_to_kd=summarise(t)['median'] / kd_median) for name, t in times.items()}
    print(f'forward + backward, batch {args.batch} x {args.classes} classes, {device}, '
          f'{args.reps} interleaved reps x {args.inner} calls')
    print(f'{"loss":<26}{"median us":>11}{"min us":>10}{"max us":>10}{"x KD":>8}')
    for name, r in rows.items():
        print(f'{name:<26}{r["median"] * 1e6:>11.1f}{r["min"] * 1e6:>10.1f}{r["max"] * 1e6:>10.1f}'
              f'{r["ratio_to_kd"]:>8.3f}')
    write('loss', {'machine': machine(device), 'batch': args.batch, 'classes': args.classes, 'rows': rows})


if __name__ == '__main__':
    main()
