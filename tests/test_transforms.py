"""Every shipped training transform, built from the recipes as they ship, on thousands of images (rare branches).

A transform that fails once in 600 images passes a test of a few images and ends a real epoch in its first batch
of 1,024 (timm's RandAugment asking today's Pillow to posterize to 0 bits did). So each distinct training transform of
the shipped recipes runs on thousands of images of varied sizes, with the Pillow and timm a fresh install gets, and
the DeiT one must reach its 0-bit posterize branch on the way.
"""
import copy
import random

import numpy as np
import pytest
import torch
from PIL import Image

from ttm_torchdistill.data import augment
from ttm_torchdistill.recipe import RecipeDocument, list_recipes, shipped_root

timm = pytest.importorskip('timm')

IMAGES = {'cifar100': 5000, 'ilsvrc2012': 3000}
"""images per distinct training transform, by dataset"""


def _training_transforms() -> dict[str, tuple[str, object]]:
    """Each distinct training transform of the shipped recipes (by its repr): (first recipe using it, transform)."""
    found = {}
    for name in list_recipes():
        if name.startswith('demo/'):
            continue  # the digits demo's datasets take no transform
        doc = RecipeDocument.open(shipped_root() / f'{name}.yaml')
        doc.import_dependencies()
        dataset = doc.value('train.train_data_loader.dataset_id')
        transform = doc.value(f'datasets.{dataset}.init.kwargs.transform')
        assert transform is not None, name
        found.setdefault(repr(transform), (name, transform))
    return found


TRANSFORMS = _training_transforms()


def _images(size_range: tuple[int, int], count: int = 40) -> list[Image.Image]:
    """RGB images of random pixels and varied sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (int(rng.integers(*size_range)), int(rng.integers(*size_range)), 3),
                                         dtype=np.uint8)) for _ in range(count)]


def test_the_shipped_recipes_have_three_training_transforms():
    recipes = sorted(name.split('/')[0] + '/' + ('deit' if 'deit' in name else 'cnn') for name, _ in
                     TRANSFORMS.values())
    assert recipes == ['cifar100/cnn', 'ilsvrc2012/cnn', 'ilsvrc2012/deit'], recipes


@pytest.mark.parametrize('key', list(TRANSFORMS), ids=[name for name, _ in TRANSFORMS.values()])
def test_each_training_transform_on_thousands_of_images(key):
    name, transform = TRANSFORMS[key]
    transform = copy.deepcopy(transform)  # its posterize is counted here
    dataset = name.split('/')[0]
    count = IMAGES[dataset]
    zero_bits = []
    posterize_ops = [op for op in augment._augment_ops(transform, timm.data.auto_augment.AugmentOp)
                     if op.name.startswith('Posterize')]
    for op in posterize_ops:
        assert op.aug_fn is augment.posterize, op  # the recipe's transform posterizes with the 0-bit-safe op

        def counted(img, bits, **kwargs):
            zero_bits.append(bits) if bits < 1 else None
            return augment.posterize(img, bits, **kwargs)

        op.aug_fn = counted
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    images = _images((32, 33) if dataset == 'cifar100' else (40, 300))
    size = 32 if dataset == 'cifar100' else 224
    for i in range(count):
        out = transform(images[i % len(images)])
        assert out.shape == (3, size, size) and out.dtype == torch.float32 and torch.isfinite(out).all(), (name, i)
    if posterize_ops:  # the DeiT RandAugment: its rare 0-bit branch was taken (about once in 600 images)
        assert len(zero_bits) >= 1, f'{count} images never reached posterize with 0 bits'


def test_posterize_keeps_what_pillow_computed_for_every_bit_count():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for mode, array in (('RGB', pixels), ('L', pixels[..., 0])):
        image = Image.fromarray(array, mode)
        for bits in range(0, 9):
            mask = ~(2 ** (8 - bits) - 1) & 0xFF  # Pillow's own mask, which keeps no bit at 0 bits
            out = augment.posterize(image, bits)
            assert out.mode == mode and np.array_equal(np.asarray(out), array & mask), (mode, bits)


def test_every_randaugment_op_of_the_deit_recipe_at_every_magnitude():
    """Each op of the DeiT recipe's RandAugment, always applied, at magnitudes 0 to 10 (the ends are the rare
    branches the magnitude noise reaches)."""
    deit = [t for name, t in TRANSFORMS.values() if 'deit' in name]
    assert len(deit) == 1
    ops = augment._augment_ops(deit[0], timm.data.auto_augment.AugmentOp)
    assert len(ops) >= 10
    image = _images((50, 51), count=1)[0]
    for op in ops:
        fixed = copy.copy(op)
        fixed.prob, fixed.magnitude_std = 1.0, 0
        for magnitude in range(0, 11):
            fixed.magnitude = magnitude
            out = fixed(image)
            assert isinstance(out, Image.Image) and out.mode == 'RGB' and out.size == image.size, (op.name, magnitude)


def test_the_transform_pickles_for_loader_workers():
    import pickle

    deit = next(t for name, t in TRANSFORMS.values() if 'deit' in name)
    copied = pickle.loads(pickle.dumps(deit))
    ops = augment._augment_ops(copied, timm.data.auto_augment.AugmentOp)
    assert any(op.aug_fn is augment.posterize for op in ops)

