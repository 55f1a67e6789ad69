"""Data that cannot be batched (images of different sizes without a crop, a collate that cannot take the samples)
is one line naming the recipe's loader, its dataset, the batch or sample and the cause, exit 1, in every place a
loader is read: the pre-flight sample, `train --check`, the epoch loop, validation, the test pass, `calibrate`, a
sweep and a lockstep group; what training wrote before is kept."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, make_image_folder, one_error_line
from PIL import Image
from test_user_errors import IMAGE_RECIPE, SPLIT

TRAIN = "train.train_data_loader (datasets.images/train)"
VAL = "train.val_data_loader (datasets.images/val)"
TEST = "test.test_data_loader (datasets.images/test)"
UNEQUAL = 'stack expects each tensor to be equal size'
HINT = "give datasets.images/train's transform a crop or resize"


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file() and p.suffix != '.lock'}


def _resize(path: Path, size=(36, 44)) -> None:
    """Replace an image by one of another size (every other image is 40 x 48)."""
    pixels = (np.random.default_rng(1).random((*size, 3)) * 255).astype('uint8')
    Image.fromarray(pixels).save(path)


def _recipe(tmp_path: Path, workers: int = 0, transform: bool = True) -> Path:
    root = make_image_folder(tmp_path / 'images', per_split={'train': 4, 'val': 2, 'test': 2})
    datasets = ''.join(SPLIT.format(split=s, root=root) for s in ('train', 'val', 'test'))
    if not transform:
        to_tensor = "        transform: !import_call {key: 'torchvision.transforms.ToTensor', init: }\n"
        datasets = datasets.replace(to_tensor, '')
    recipe = tmp_path / 'images.yaml'
    recipe.write_text(IMAGE_RECIPE.format(workers=workers, datasets=datasets))
    return recipe


@pytest.mark.parametrize('workers', [0, 2])
def test_images_of_different_sizes_in_an_epoch_stop_training_in_one_line_keeping_the_checkpoint(tmp_path, workers):
    recipe = _recipe(tmp_path, workers)
    assert cli(['train', recipe, '--device', 'cpu'], tmp_path).returncode == 0
    before = _snapshot(tmp_path / 'ckpt')
    _resize(tmp_path / 'images/train/a/3.png')  # the second batch of 2 (sequential sampler): a/2 and a/3
    result = cli(['train', recipe, '--device', 'cpu', '--resume', '--set', 'train.num_epochs=2'], tmp_path)
    line = one_error_line(result, 1, f"{recipe}: {TRAIN}: batch 2 cannot be formed: RuntimeError: ",
                          HINT, 'training stopped in epoch 2', 'the last good checkpoint is kept')
    assert 'Original Traceback' not in line and 'worker' not in line
    assert _snapshot(tmp_path / 'ckpt') == before


def test_a_validation_batch_names_the_validation_loader_not_the_model(tmp_path):
    recipe = _recipe(tmp_path)
    assert cli(['train', recipe, '--device', 'cpu'], tmp_path).returncode == 0
    before = _snapshot(tmp_path / 'ckpt')
    _resize(tmp_path / 'images/val/b/1.png')
    result = cli(['train', recipe, '--device', 'cpu', '--resume', '--set', 'train.num_epochs=2'], tmp_path)
    line = one_error_line(result, 1, f'{VAL}: batch 2 cannot be formed', UNEQUAL, 'training stopped in epoch 2',
                          'the last good checkpoint is kept')
    assert 'models.' not in line
    assert _snapshot(tmp_path / 'ckpt') == before
    # the test pass and calibrate read their loaders the same way
    _resize(tmp_path / 'images/test/b/1.png')
    one_error_line(cli(['test', recipe, '--device', 'cpu'], tmp_path), 1, f'{TEST}: batch 2 cannot be formed',
                   UNEQUAL)
    one_error_line(cli(['calibrate', recipe, '--device', 'cpu', '-o', 'cal'], tmp_path), 1,
                   f'{VAL}: batch 2 cannot be formed', UNEQUAL)
    assert not (tmp_path / 'cal').exists()


def test_the_pre_flight_sample_and_check_name_the_samples(tmp_path):
    recipe = _recipe(tmp_path)
    _resize(tmp_path / 'images/train/a/1.png')  # the pre-flight's two samples (0 and 1) differ
    for command in (['train', recipe], ['train', recipe, '--check']):
        one_error_line(cli([*command, '--device', 'cpu'], tmp_path), 1,
                       f'{TRAIN}: a batch of samples 0-1, before training, cannot be formed', UNEQUAL, HINT)
    assert not (tmp_path / 'ckpt').exists()
    # --check's one batch of 4: samples 0-3, after the pre-flight's two passed
    shutil.copy(tmp_path / 'images/train/a/0.png', tmp_path / 'images/train/a/1.png')
    _resize(tmp_path / 'images/train/a/3.png')
    sets = ['--set', 'train.train_data_loader.kwargs.batch_size=4']
    one_error_line(cli(['train', recipe, '--device', 'cpu', '--check', *sets], tmp_path), 1,
                   f'{TRAIN}: batch 1 cannot be formed', UNEQUAL)
    assert not (tmp_path / 'ckpt').exists()


@pytest.mark.parametrize('workers', [0, 2])
def test_a_collate_that_cannot_take_the_samples_is_one_line(tmp_path, workers):
    recipe = _recipe(tmp_path, workers, transform=False)  # PIL images: the default collate takes tensors only
    one_error_line(cli(['train', recipe, '--device', 'cpu'], tmp_path), 1,
                   f'{TRAIN}: a batch of samples 0-1, before training, cannot be formed: TypeError: default_collate')
    result = cli(['train', recipe, '--device', 'cpu', '--debug'], tmp_path)
    assert 'Traceback' in result.stderr  # --debug keeps the whole story


def test_a_sweep_and_a_lockstep_group_stop_in_one_line_per_run(tmp_path):
    recipe = _recipe(tmp_path)
    _resize(tmp_path / 'images/train/a/3.png')  # batch 2: after the sweep's pre-launch check of batch 1
    for extra, out in (([], 'alone'), (['--lockstep'], 'group')):
        result = cli(['sweep', recipe, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '-o', out, *extra], tmp_path)
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
        assert 'Traceback' not in result.stdout + result.stderr
        manifest = json.loads((tmp_path / out / 'sweep.json').read_text())
        assert [e['state'] for e in manifest['runs']] == ['failed', 'failed']
        for entry in manifest['runs']:
            error = (tmp_path / out / entry['dir'] / 'error.txt').read_text()
            assert f'{TRAIN}: batch 2 cannot be formed' in error and UNEQUAL in error, error


def test_a_shipped_imagenet_recipe_names_its_loader_and_the_file(tmp_path, monkeypatch, image_root, torch_home):
    """ilsvrc2012/wttm/resnet18_from_resnet34 on generated ImageFolder trees, loader workers on: an unreadable image
    in the training split stops the epoch in one line naming the loader, the dataset and the file."""
    from conftest import FAST

    root = tmp_path / 'ilsvrc2012'
    shutil.copytree(image_root, root)
    bad = root / 'train/b/3.png'
    bad.write_bytes(b'not an image')
    monkeypatch.setenv('ILSVRC2012_ROOT', str(root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    sets = [a for o in [*FAST, 'train.train_data_loader.kwargs.num_workers=2'] for a in ('--set', o)]
    result = cli(['train', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--device', 'cpu', *sets], tmp_path)
    one_error_line(result, 1, 'train.train_data_loader (datasets.ilsvrc2012/train): batch ',
                   f'cannot read data file {bad}', 'training stopped in epoch 1')
