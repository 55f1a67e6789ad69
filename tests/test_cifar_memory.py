"""In-memory CIFAR with batched augmentation: one --set switches a recipe; pixels, distribution, epochs and resume."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import FAST, accept_generated_cifar, assert_same_state, ckpt_weights, make_cifar100, straight_and_resumed
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset
from torchdistill.datasets.registry import DATASET_DICT
from torchdistill.datasets.wrapper import BaseDatasetWrapper
from torchvision import transforms as T

from ttm_torchdistill.data.cifar_memory import (
    BatchAugment,
    CIFAR100InMemory,
    DeviceBatchLoader,
    crop_flip_normalize,
    device_batches,
)
from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.recipe import load_recipe, parse_overrides, resolve_recipe
from ttm_torchdistill.runner import run_train

RECIPE = 'cifar100/wttm/resnet20_from_resnet56'
SWITCH = 'datasets.cifar100/train.key=ttm_torchdistill.data.CIFAR100InMemory'
TEST_SWITCH = 'datasets.cifar100/test.key=ttm_torchdistill.data.CIFAR100InMemory'


@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
    return make_cifar100(tmp_path_factory.mktemp('cifar_memory'), train=24, test=6, seed=3)


@pytest.fixture
def switched(monkeypatch, cifar_root):
    """The shipped recipe's datasets with the one --set, on generated files."""
    accept_generated_cifar(monkeypatch, cifar_root)
    config = load_recipe(resolve_recipe(RECIPE), parse_overrides([SWITCH]))
    return config['datasets']['cifar100/train'], config['datasets']['cifar100/test']


def _torchvision(image: np.ndarray, top: int, left: int, flip: bool, transform: T.Compose) -> torch.Tensor:
    """torchvision's per-sample pipeline of the recipe with the crop offsets and the flip given."""
    crop, _, to_tensor, normalize = transform.transforms
    pil = TF.crop(TF.pad(Image.fromarray(image), crop.padding), top, left, 32, 32)
    return normalize(to_tensor(TF.hflip(pil) if flip else pil))


def test_one_set_switches_the_recipe_and_keeps_its_transform_and_registry_key(switched):
    train, test = switched
    assert type(train) is CIFAR100InMemory and train.train and len(train) == 24
    assert type(test).__name__ == 'CIFAR100'  # the test set stays as it was unless switched too
    assert train.batch_augment == BatchAugment(size=32, padding=4, crop=True, flip_p=0.5,
                                               mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))
    image, target = train[0]  # one sample at a time (torchdistill's own runner): torchvision's dataset
    assert image.shape == (3, 32, 32) and target == train.targets[0]
    assert DATASET_DICT['CIFAR100InMemory'] is CIFAR100InMemory


def test_every_offset_and_flip_gives_torchvisions_pixels(switched):
    train = switched[0]
    padded, _ = train.device_tensors(torch.device('cpu'))
    grid = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)]
    offsets = torch.tensor([[t, lf] for t, lf, _ in grid])
    flips = torch.tensor([f for *_, f in grid])
    indices = torch.arange(len(grid)) % len(train)
    aug = train.batch_augment
    out = crop_flip_normalize(padded, indices, offsets, flips, 32, torch.tensor(aug.mean), torch.tensor(aug.std))
    for k, (top, left, flip) in enumerate(grid):
        assert torch.equal(out[k], _torchvision(train.data[int(indices[k])], top, left, flip, train.transform)), k


def test_the_loader_makes_torchvisions_pixels_with_the_offsets_it_drew(switched):
    """Through DeviceBatchLoader: the epoch's offsets and flips are drawn from torch's generator after the order."""
    train = switched[0]
    sampler = RandomSampler(train, generator=torch.Generator().manual_seed(1))
    loader, note = device_batches(DataLoader(BaseDatasetWrapper(train), sampler=sampler, batch_size=5), 'cpu')
    assert isinstance(loader, DeviceBatchLoader) and note is None and len(loader) == 5
    torch.manual_seed(7)
    batches = list(loader)
    torch.manual_seed(7)
    offsets, flips = train.batch_augment.draw(len(train))
    order = list(RandomSampler(train, generator=torch.Generator().manual_seed(1)))
    images = torch.cat([b[0] for b in batches])
    assert all(b[2] == {} for b in batches) and [len(b[0]) for b in batches] == [5, 5, 5, 5, 4]
    assert torch.cat([b[1] for b in batches]).tolist() == [train.targets[i] for i in order]
    for k, i in enumerate(order):
        expected = _torchvision(train.data[i], int(offsets[k, 0]), int(offsets[k, 1]), bool(flips[k]), train.transform)
        assert torch.equal(images[k], expected), k


def test_crop_offsets_and_flips_are_uniform():
    """RandomCrop(32, padding 4) draws top and left uniformly from 0..8; the flip has probability 0.5."""
    torch.manual_seed(0)
    n = 81 * 400
    offsets, flips = BatchAugment(size=32, padding=4, crop=True, flip_p=0.5).draw(n)
    joint = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81).double()
    chi2 = ((joint - n / 81) ** 2 / (n / 81)).sum().item()
    assert offsets.min() == 0 and offsets.max() == 8
    assert chi2 < 124.8  # chi-square, 80 degrees of freedom, p = 0.001
    for axis in (0, 1):
        counts = torch.bincount(offsets[:, axis], minlength=9).double()
        assert ((counts - n / 9) ** 2 / (n / 9)).sum().item() < 26.1  # 8 degrees of freedom, p = 0.001
    assert abs(flips.double().mean().item() - 0.5) < 3.3 * 0.5 / n ** 0.5
    assert abs((flips & (offsets[:, 0] == 0)).double().mean().item() - 0.5 / 9) < 0.01  # independent
    no_flip = BatchAugment(size=32, padding=4, crop=True, flip_p=0.0).draw(100)[1]
    assert not no_flip.any()


def test_epochs_follow_the_sampler_shards_subsets_and_drop_last(switched):
    train = switched[0]
    for rank in (0, 1):  # DistributedSampler: the shard and the per-epoch shuffle (set_epoch, as torchdistill does)
        sampler = DistributedSampler(train, num_replicas=2, rank=rank, shuffle=True, seed=4)
        loader = device_batches(DataLoader(BaseDatasetWrapper(train), sampler=sampler, batch_size=4), 'cpu')[0]
        for epoch in (0, 1):
            loader.batch_sampler.sampler.set_epoch(epoch)
            ref = DistributedSampler(train, num_replicas=2, rank=rank, shuffle=True, seed=4)
            ref.set_epoch(epoch)
            assert torch.cat([t for _, t, _ in loader]).tolist() == [train.targets[i] for i in ref]
    subset = Subset(train, list(range(10, 20)))
    loader = device_batches(DataLoader(subset, batch_size=4, drop_last=True), 'cpu')[0]
    assert len(loader) == 2
    assert torch.cat([t for _, t in loader]).tolist() == train.targets[10:18]  # no supp dict without the wrapper
    plain = DataLoader(subset, batch_size=4, collate_fn=lambda b: b)  # what cannot be batched stays as it was
    assert device_batches(plain, 'cpu') == (plain, 'CIFAR100InMemory: the loader has a collate_fn: its samples go '
                                                   'through the per-sample transforms')


def test_a_transform_it_cannot_batch_is_one_line(switched, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match='ColorJitter.*RandomCrop\\(size, padding\\)'):
        BatchAugment.from_transform(T.Compose([T.ColorJitter(0.1), T.ToTensor()]), 32)
    with pytest.raises(ValueError, match='zero padding'):
        BatchAugment.from_transform(T.Compose([T.RandomCrop(32, 4, padding_mode='reflect'), T.ToTensor()]), 32)
    with pytest.raises(ValueError, match='needs ToTensor'):
        BatchAugment.from_transform(T.RandomHorizontalFlip(), 32)
    monkeypatch.chdir(tmp_path)
    crop = 'datasets.cifar100/train.init.kwargs.transform.init.kwargs.transforms.0.init.kwargs.size=28'
    with pytest.raises(UsageError, match='datasets.cifar100/train .*CIFAR100InMemory.*RandomCrop\\(32, padding=P\\)'):
        run_train(RunDescription(recipe=RECIPE, overrides=[SWITCH, crop], device='cpu', check=True))


def test_an_in_memory_run_resumes_bit_exactly(tmp_path, monkeypatch, switched):
    """Two epochs straight equal one epoch, then --resume for the second (offsets, flips and order included); the
    recipe's data and loaders with tests/tiny.py's small CNN as teacher and student (the data path is what differs)."""
    common = [*FAST, SWITCH, TEST_SWITCH, 'models.teacher_model.src_ckpt=null', 'models.teacher_model.key=tiny_cnn',
              'models.student_model.key=tiny_cnn', 'dependencies=[{name: ttm_torchdistill}, {name: tiny}]']
    epochs_made, iterate = [], DeviceBatchLoader.__iter__
    monkeypatch.setattr(DeviceBatchLoader, '__iter__', lambda self: epochs_made.append(self.memory.train) or
                        iterate(self))
    last = 'resource/ckpt/cifar100/wttm/cifar100-tiny_cnn_from_tiny_cnn.last.pt'  # the names follow the keys

    def train(stage, folder):
        epochs = 1 if stage == 'interrupted' else 2
        summary = run_train(RunDescription(recipe=RECIPE, overrides=[*common, f'train.num_epochs={epochs}'],
                                           device='cpu', seed=0, quiet=True, resume=stage == 'resumed', test=False))
        assert summary['epochs_run'] == (2 if stage == 'straight' else 1)

    runs = straight_and_resumed(tmp_path, train)
    assert epochs_made == [True, False] * 4  # every training and validation epoch made on the device
    assert_same_state(ckpt_weights(runs.straight / last), ckpt_weights(runs.resumed / last))
