"""Shared fixtures: tiny data, offline teacher weights, and helpers to run `ttm-distill`."""
import contextlib
import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import offline_cifar
import pytest
import torch
from PIL import Image
from torchdistill.models.registry import get_model

import ttm_torchdistill  # noqa: F401  (registers the CIFAR-100 models that teacher_like builds)
from ttm_torchdistill.description import Override, RunDescription
from ttm_torchdistill.runner.checkpoint import last_ckpt_path
from ttm_torchdistill.runner.commands import run_train

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SITE = TESTS / 'site'
TINY = TESTS / 'tiny_recipe.yaml'
"""a seconds-long distillation recipe (tests/tiny.py's data and models) for the runner's tests"""
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


SLOW_FIRST = ('test_slurm_train.py', 'test_doc_commands.py', 'test_cifar_recipes.py', 'test_feature_recipes.py',
              'test_sweep_slurm.py', 'test_new_recipe_bases.py', 'test_lockstep.py', 'test_sweep_safety.py',
              'test_sweep_slurm_requeue.py', 'test_stop.py', 'test_sweep.py', 'test_user_errors.py',
              'test_doc_cifar100.py', 'test_recipes.py', 'test_dist_dkd_recipes.py', 'test_demo.py', 'test_commands.py',
              'test_gpu_check_script.py', 'test_methods.py')
"""the files with the longest tests, longest first (seconds under `make test` on 2 cores), so that the workers finish
together: `make test` runs `pytest -n N --dist loadfile --no-loadscope-reorder`, which keeps this order (xdist's
own would put the files with the most tests first)"""

if os.environ.get('PYTEST_XDIST_WORKER'):  # `make test`: the workers share the cores, one thread each (and children)
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list) -> None:
    """The longest files first (under `make test`, `pytest -n N --dist loadfile`, each file runs in one worker, so
    its module fixtures are made once)."""
    items.sort(key=lambda item: SLOW_FIRST.index(item.path.name) if item.path.name in SLOW_FIRST else len(SLOW_FIRST))


@pytest.fixture(scope='session', autouse=True)
def test_plugins_on_the_path():
    """Processes the tests start (a sweep's runs, `make`, bash) import the test plugins (tests/tiny.py, ...) as this
    one does."""
    before = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = cli_env()['PYTHONPATH']
    yield
    if before is None:
        os.environ.pop('PYTHONPATH')
    else:
        os.environ['PYTHONPATH'] = before


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
                          ('resnet50', torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
                          ('resnet50', torchvision.models.ResNet50_Weights.IMAGENET1K_V2),  # its DEFAULT
                          ('resnet101', torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
                          ('resnet152', torchvision.models.ResNet152_Weights.IMAGENET1K_V1)):
        state = getattr(torchvision.models, name)(num_classes=1000).state_dict()
        torch.save(state, ckpts / os.path.basename(weights.url))
    return home


@pytest.fixture
def imagenet(monkeypatch, tmp_path, image_root, torch_home) -> Path:
    """The generated ImageNet tree as $ILSVRC2012_ROOT, the offline torchvision weights as $TORCH_HOME, and the
    test's folder (returned) as the working directory."""
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory):
    """A real SLURM cluster of two nodes, ttmnode1 and ttmnode2, on this host (tests/slurm_cluster.py) for the session;
    skipped where it cannot start."""
    from slurm_cluster import start_cluster, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with start_cluster(tmp_path_factory.mktemp('slurm'), nodes=2) as cluster:
        yield cluster


@pytest.fixture(scope='session')
def deit_teacher(tmp_path_factory) -> Path:
    """Random DeiT III-Small weights at the tests' 32 x 32 input size, in timm's bare state-dict format."""
    timm = pytest.importorskip('timm')
    path = tmp_path_factory.mktemp('deit3') / 'deit3_small.pth'
    torch.manual_seed(0)
    torch.save(timm.create_model('deit3_small_patch16_224.fb_in22k_ft_in1k', img_size=32, num_classes=1000)
               .state_dict(), path)
    return path


def family(name: str) -> str:
    """A shipped recipe's family: its dataset and method (the DeiT recipes, and each demo recipe, one of their own).
    A family's recipes have the same keys and structure; they differ in numbers (pairs, gamma, beta, lr)."""
    parts = name.split('/')
    return name if parts[0] == 'demo' else '/'.join(parts[:2]) + ('/deit' if 'deit' in name else '')


def one_per_family(names: list[str]) -> list[str]:
    """The first recipe of each family, in order: for tests where a family's other recipes add nothing."""
    seen = {}
    for name in names:
        seen.setdefault(family(name), name)
    return list(seen.values())


def make_cifar100(root: Path, train: int = 8, test: int = 4, seed: int = 0) -> Path:
    """root/cifar-100-python/{train,test,meta} in torchvision's CIFAR-100 file format, random pixels."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / 'cifar-100-python'
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (('train', train), ('test', test)):
        entry = {'data': rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8),
                 'fine_labels': [i % 100 for i in range(count)], 'coarse_labels': [i % 20 for i in range(count)],
                 'filenames': [f'{split}_{i}.png' for i in range(count)]}
        (folder / split).write_bytes(pickle.dumps(entry))
    meta = {'fine_label_names': [f'class{i}' for i in range(100)],
            'coarse_label_names': [f'super{i}' for i in range(20)]}
    (folder / 'meta').write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture(scope='session')
def cifar100_root(tmp_path_factory) -> Path:
    return make_cifar100(tmp_path_factory.mktemp('cifar100'))


def accept_generated_cifar(monkeypatch, root: Path) -> Path:
    """$CIFAR100_ROOT at generated files, whose md5 sums torchvision cannot know: its integrity check becomes a
    file-exists check in this process and in the processes the test starts (tests/offline_cifar.py)."""
    import torchvision.datasets.cifar

    monkeypatch.setenv('CIFAR100_ROOT', str(root))
    monkeypatch.setenv('TTM_TEST_OFFLINE_CIFAR', '1')
    monkeypatch.setattr(torchvision.datasets.cifar, 'check_integrity', offline_cifar.exists)
    return root


@pytest.fixture
def cifar100_env(monkeypatch, cifar100_root) -> Path:
    return accept_generated_cifar(monkeypatch, cifar100_root)


def teacher_like(key: str) -> torch.nn.Module:
    """Random weights, with batch-norm shifts 0.5 and running statistics estimated on random images, as a trained
    teacher's are on its data. A freshly initialised network has pooled channels that are 0 for every image
    of a batch; ITRD's L_corr is then NaN (0/0 in the standardisation, as in the reference code)."""
    torch.manual_seed(0)
    model = get_model(key, num_classes=100)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.bias.data.fill_(0.5)
            m.momentum = None  # a cumulative average over the estimation batch
            m.reset_running_stats()
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(1)) / 255
    mean, std = torch.tensor([0.5071, 0.4867, 0.4408]), torch.tensor([0.2675, 0.2565, 0.2761])
    with torch.no_grad():
        model.train()((images - mean[:, None, None]) / std[:, None, None])
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model


@pytest.fixture(scope='session')
def teacher_ckpts(tmp_path_factory):
    """Released-checkpoint-shaped files ({'model': state_dict, ...}) of random teachers, made on demand."""
    folder, made = tmp_path_factory.mktemp('cifar_teachers'), {}

    def get(key):
        if key not in made:
            made[key] = folder / f'{key}_vanilla.pth'
            torch.save({'model': teacher_like(key).state_dict(), 'epoch': 240, 'accuracy': torch.tensor(70.0)},
                       made[key])
        return made[key]
    return get


def torchdistill_runner_models(config: dict, device: torch.device) -> tuple:
    """What torchdistill's examples/torchvision/image_classification.py does before its epoch loop: import the
    recipe's dependencies, build teacher and student (torchvision first, then the registry), load src_ckpt."""
    from torchdistill.common.main_util import import_dependencies, load_ckpt
    from torchdistill.models.official import get_image_classification_model

    import_dependencies(config.get('dependencies'))
    models = {}
    for label in ('teacher_model', 'student_model'):
        model_config = config['models'][label]
        model = get_image_classification_model(model_config, False)
        if model is None:
            model = get_model(model_config['key'], model_config.get('repo_or_dir'), **model_config['kwargs'])
        if model_config.get('src_ckpt'):
            load_ckpt(model_config['src_ckpt'], model=model, strict=True)
        models[label] = model.to(device)
    return models['teacher_model'], models['student_model']


def cli_env(**extra) -> dict:
    """The environment of a process a test starts: the test plugins (tests/) and the offline CIFAR switch
    (tests/site) on its path, ``extra`` variables set."""
    env = dict(os.environ)
    paths = [str(SITE), str(TESTS), str(ROOT)]
    env['PYTHONPATH'] = os.pathsep.join([*paths, *(p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                                   if p and p not in paths)])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, cwd, env=None, timeout=600, torchrun_nproc=None) -> subprocess.CompletedProcess:
    """Run `python -m ttm_torchdistill ARGS` in a process of its own (or under torchrun) and capture its output: for
    signals, an environment of its own (``env``), locks held across processes and torchrun. Everything else:
    :func:`cli`."""
    if torchrun_nproc:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun_nproc}',
               '-m', 'ttm_torchdistill', *map(str, args)]
    else:
        cmd = [sys.executable, '-m', 'ttm_torchdistill', *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def cli(args, cwd: Path) -> subprocess.CompletedProcess:
    """`ttm-distill ARGS` in this process (``main``), in ``cwd``: its exit code and what it printed (an exception
    that escapes ``main``, with --debug, is printed as Python prints it, exit code 1). The tests' own environment
    applies (monkeypatch.setenv, the offline CIFAR switch)."""
    from ttm_torchdistill.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert that a command exited with 0, showing the end of what it printed otherwise; returns it."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def one_error_line(result: subprocess.CompletedProcess, code: int, *fragments) -> str:
    """Assert that a command failed with ``code`` and printed exactly one error line, with no traceback,
    containing every fragment; returns the line."""
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('ttm-distill: error: '), result.stderr[-3000:]
    assert 'Traceback' not in result.stderr + result.stdout
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def ckpt_weights(path) -> dict:
    """The student state dict of a checkpoint written by `ttm-distill train`."""
    return torch.load(path, map_location='cpu', weights_only=False)['model']


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical state dicts."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@dataclass
class StraightAndResumed:
    """What :func:`straight_and_resumed` ran: the folders of the straight run and of the resumed one, and what
    ``train`` returned at each stage ('straight', 'interrupted', 'resumed')."""

    straight: Path
    resumed: Path
    results: dict[str, Any]

    def load(self, name) -> tuple[dict, dict]:
        """The checkpoint file ``name`` (a path relative to the run folders) of the straight and of the resumed run,
        loaded on the CPU."""
        return tuple(torch.load(folder / name, map_location='cpu', weights_only=False)
                     for folder in (self.straight, self.resumed))


def straight_and_resumed(where: Path, train: Callable[[str, Path], Any],
                         folders: tuple[str, str] = ('straight', 'resumed')) -> StraightAndResumed:
    """The resume tests' two trainings of one run: straight through in where/folders[0]; in where/folders[1]
    interrupted after some epochs, then resumed to the end. ``train(stage, folder)`` runs one stage with ``folder`` as
    the working directory: 'straight' (every epoch), 'interrupted' (fewer epochs, a SIGKILL or an exception, as
    ``train`` makes it; it checks there what the interruption left, before the resume overwrites it), then 'resumed'
    (--resume to the end). Compare what the two folders hold with :func:`assert_same_state` and the like."""
    results, here = {}, os.getcwd()
    for stage, name in (('straight', folders[0]), ('interrupted', folders[1]), ('resumed', folders[1])):
        folder = where / name
        folder.mkdir(exist_ok=True)
        os.chdir(folder)
        try:
            results[stage] = train(stage, folder)
        finally:
            os.chdir(here)
    return StraightAndResumed(where / folders[0], where / folders[1], results)


TIMING = ('train_images_per_s', 'train_s')
SAME_IN_CHECKPOINTS = ('model', 'optimizer', 'lr_scheduler', 'epoch', 'best_value', 'stage_grad_count', 'aux', 'rng')
"""what two trainings that are the same hold alike in their checkpoints"""


def same_values(a, b) -> bool:
    """Equal nested values, tensors and arrays bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_values, a, b))
    return a == b


def _records(path) -> list[dict]:
    """A metrics file's records without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def train_alone(entry: dict, where, **changes):
    """The run of a sweep.json entry trained alone in this process (its description, outputs under ``where``)."""
    desc = RunDescription.from_json(entry['run'])
    folder = where / entry['dir']
    overrides = tuple(Override(o.key, str(folder / entry['ckpt'])) if o.key.endswith('.dst_ckpt') else o
                      for o in desc.overrides)
    run_train(desc.replace(overrides=overrides, run_log=str(folder / 'run.log'), summary=str(folder / 'summary.json'),
                           tensorboard=None, quiet=True, **changes))
    return folder


def assert_same_run(lockstep, alone, ckpt: str) -> None:
    """Two run folders (``lockstep``: a run of a lockstep group, ``alone``: the same run alone) hold the same
    training: checkpoints (weights, optimizer, scheduler, loss state, generators) and metrics records bit for bit,
    timings aside, and the same files."""
    for name in (ckpt, last_ckpt_path(ckpt).name):
        a, b = (torch.load(folder / name, map_location='cpu', weights_only=False) for folder in (lockstep, alone))
        for key in SAME_IN_CHECKPOINTS:
            assert same_values(a.get(key), b.get(key)), (name, key)
    assert _records(lockstep / 'run.metrics.jsonl') == _records(alone / 'run.metrics.jsonl')
    summaries = [json.loads((folder / 'summary.json').read_text()) for folder in (lockstep, alone)]
    assert summaries[0]['best_val_top1'] == summaries[1]['best_val_top1']
    files = [{p.name for p in folder.iterdir()} - {'output.log', 'attempts'} for folder in (lockstep, alone)]
    assert files[0] == files[1]


@pytest.fixture
def shell_env(tmp_path, cifar100_root, image_root, torch_home) -> dict:
    """The environment the docs' command blocks run in (tests/test_doc_*.py): this venv's commands first, the
    generated data, a folder ``work``."""
    env = cli_env(PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}', CIFAR100_ROOT=cifar100_root,
                  ILSVRC2012_ROOT=image_root, TORCH_HOME=torch_home, TTM_TEST_OFFLINE_CIFAR=1)
    (tmp_path / 'work').mkdir()
    return env
