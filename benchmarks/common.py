"""Shared by the benchmark scripts: timing with interleaved repetitions, machine facts, JSON output."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

RESULTS = Path(__file__).resolve().parent / 'results'


def machine(device: torch.device) -> dict:
    info = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join([Path(sys.executable).name, *sys.argv]),
        'python': platform.python_version(), 'torch': torch.__version__, 'torchvision': torchvision.__version__,
        'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(), 'device': str(device),
    }
    try:
        import torchdistill
        info['torchdistill'] = torchdistill.__version__
    except (ImportError, AttributeError):
        pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def interleaved(cases: dict[str, Callable[[], None]], device: torch.device, reps: int, inner: int,
                warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each case; the cases take turns in every repetition so drift hits all alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / inner)
    return times


def summarise(samples: list[float]) -> dict:
    return {'median': statistics.median(samples), 'min': min(samples), 'max': max(samples), 'reps': len(samples)}


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    device = payload['machine']['device'].split(':')[0]
    path = RESULTS / f'{name}-{device}.json'
    path.write_text(json.dumps(payload, indent=2) + '\n')
    print(f'wrote {path}')
    return path
