"""Shared fixtures: tiny data, offline teacher weights, and helpers to run `ttm-distill`."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RECIPES = ROOT / 'recipes'
# one short epoch on tiny data, for any recipe with the shipped recipes' loader layout
FAST = ['train.num_epochs=1', 'train.train_data_loader.kwargs.batch_size=4',
        'train.train_data_loader.kwargs.num_workers=0', 'train.val_data_loader.kwargs.num_workers=0',
        'test.test_data_loader.kwargs.num_workers=0', 'train.val_data_loader.kwargs.batch_size=4',
        'test.test_data_loader.kwargs.batch_size=4']


def make_image_folder(root: Path, classes=('a', 'b'), per_split=None, size=(40, 48)) -> Path:
    """ImageFolder trees root/train and root/val of random RGB images."""
    per_split = per_split or {'train': 4, 'val': 2}
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = (rng.random((*size, 3)) * 255).astype('uint8')
                Image.fromarray(pixels).save(root / split / c / f'{i}.png')
    return root


@pytest.fixture(scope='session')
def image_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp('ilsvrc2012'))


@pytest.fixture(scope='session')
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME holding random state dicts under the file names of torchvision's ImageNet weights."""
    import torchvision

    home = tmp_path_factory.mktemp('torch_home')
    ckpts = home / 'hub' / 'checkpoints'
    ckpts.mkdir(parents=True)
    torch.manual_seed(0)
    for name, weights in (('resnet34', torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
                          ('resnet50', torchvision.models.ResNet50_Weights.IMAGENET1K_V1)):
        state = getattr(torchvision.models, name)(num_classes=1000).state_dict()
        torch.save(state, ckpts / os.path.basename(weights.url))
    return home


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(TESTS), str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, cwd, env=None, timeout=600, torchrun_nproc=None) -> subprocess.CompletedProcess:
    """Run `python -m ttm_torchdistill ARGS` (or under torchrun) and capture its output."""
    if torchrun_nproc:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun_nproc}',
               '-m', 'ttm_torchdistill', *map(str, args)]
    else:
        cmd = [sys.executable, '-m', 'ttm_torchdistill', *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)
