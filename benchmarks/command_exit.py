"""A `ttm-distill` process from start to exit, with the command's own exit (cli.leave: atexit handlers and flushed
streams, no teardown of torch's objects) and with the interpreter's full teardown, interleaved.

Every command, sweep run, rank and SLURM task is one such process."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import interleaved, machine, summarise, write

CASES = {'leave (the command)': 'from ttm_torchdistill.cli import command; command()',
         'interpreter teardown': 'import sys; from ttm_torchdistill.cli import main; sys.exit(main())'}
"""the same `ttm-distill new-recipe ...` (it writes one recipe), ended two ways"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reps', type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ['new-recipe', '--from', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--teacher', 'resnet50',
                '--student', 'mobilenet_v1', '--method', 'wttm', '-o']
        written = iter(range(10 ** 6))

        def case(code: str):
            return lambda: subprocess.run([sys.executable, '-c', code, *argv, str(Path(tmp) / f'{next(written)}.yaml')],
                                          check=True, stdout=subprocess.DEVNULL)
        times = interleaved({name: case(code) for name, code in CASES.items()}, torch.device('cpu'), args.reps,
                            inner=1, warmup=1)
    stats = {name: summarise(samples) for name, samples in times.items()}
    saved = stats['interpreter teardown']['median'] - stats['leave (the command)']['median']
    for name, s in stats.items():
        print(f"{name:22s} median {s['median']:.2f} s  (min {s['min']:.2f}, max {s['max']:.2f}, {s['reps']} reps)")
    print(f'saved per process: {saved:.2f} s')
    write('command_exit', {'machine': machine(torch.device('cpu')), 'seconds': stats, 'saved_s': saved})


if __name__ == '__main__':
    main()
