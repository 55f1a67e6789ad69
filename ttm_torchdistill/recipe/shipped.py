"""The recipes shipped inside the package, and finding a recipe file by path or shipped name."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..errors import UsageError

__all__ = ['list_recipes', 'recipe_name', 'resolve_recipe', 'shipped_root']


def shipped_root() -> Path:
    """The folder of the recipes shipped inside the package."""
    return Path(str(importlib.resources.files('ttm_torchdistill') / 'recipes'))


def list_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. 'ilsvrc2012/wttm/resnet18_from_resnet34'."""
    root = shipped_root()
    return sorted(p.relative_to(root).with_suffix('').as_posix() for p in root.rglob('*.yaml'))


def resolve_recipe(spec: str) -> Path:
    """A recipe file from a path or a shipped recipe's name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_root() / (spec if spec.endswith('.yaml') else spec + '.yaml')
    if shipped.is_file():
        return shipped
    raise UsageError(f'recipe not found: {spec!r} is neither a file nor a shipped recipe (see `ttm-distill recipes`)')


def recipe_name(path: Path) -> str:
    """A shipped recipe's name, else the path as given."""
    try:
        return path.resolve().relative_to(shipped_root().resolve()).with_suffix('').as_posix()
    except ValueError:
        return str(path)
