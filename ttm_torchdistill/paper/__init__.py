"""The paper's experiments as tables, and the shipped recipes rendered from them.

Zheng & Yang (ICLR 2024): the CIFAR-100 suite (:mod:`.cifar100_table`, rendered by :mod:`.cifar100`), the
ImageNet experiments (:mod:`.imagenet`), their feature-based rivals (:mod:`.imagenet_rivals`) and the
vision-transformer run on ImageNet (:mod:`.deit`). Every
recipe under ``recipes/cifar100/`` and ``recipes/ilsvrc2012/`` is rendered from these tables; edit a table,
then run ``python -m ttm_torchdistill.paper`` (``--check`` only compares). A test fails when a committed recipe
differs from what this package renders. ``recipes/demo/`` is written by hand.
"""
from __future__ import annotations

from pathlib import Path

from . import cifar100, cifar100_feature, deit, imagenet, imagenet_rivals

__all__ = ['DATASETS', 'render_all', 'write_recipes']

DATASETS = ('cifar100', 'ilsvrc2012')  # the folders under recipes/ that hold only rendered recipes


def render_all() -> dict[str, str]:
    """Every rendered recipe: path relative to ``recipes/`` (e.g. ``'cifar100/kd/resnet8x4_from_resnet32x4.yaml'``)
    -> YAML text."""
    return {**cifar100.render_all(), **cifar100_feature.render_all(), **imagenet.render_all(),
            **imagenet_rivals.render_all(), **deit.render_all()}


def write_recipes(root: Path, check: bool = False) -> list[str]:
    """Write (or with ``check``, only compare) the rendered recipes under ``root``; returns the paths that
    differ from (or are missing in) ``root``, and, with ``check``, committed files under :data:`DATASETS`
    that the tables do not render."""
    rendered = render_all()
    differ = [rel for rel, text in rendered.items()
              if not (root / rel).is_file() or (root / rel).read_text() != text]
    if check:
        extra = [rel for folder in DATASETS for rel in sorted(p.relative_to(root).as_posix()
                                                              for p in (root / folder).rglob('*.yaml'))
                 if rel not in rendered]
        return differ + extra
    for rel in differ:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rendered[rel])
    return differ
