"""Find, load and override recipes before torchdistill's YAML tags construct anything.

torchdistill's tags (``!import_call`` and friends) build datasets and objects while the YAML
loads, so overrides are applied to the composed node graph, then the graph is constructed.
"""
from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from pathlib import Path

import yaml
from torchdistill.common import yaml_util
from torchdistill.common.main_util import import_dependencies

from .errors import UsageError, one_line
from .validate import validate_recipe

__all__ = ['apply_override', 'list_recipes', 'load_recipe', 'parse_overrides', 'resolve_recipe']

# torchdistill registers its YAML constructors on yaml.FullLoader inside load_yaml_file; loading
# an empty document once registers them without copying its table of tags.
yaml_util.load_yaml_file(os.devnull)


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


def parse_overrides(pairs: list[str]) -> list[tuple[list[str], yaml.Node]]:
    """``KEY=VALUE`` strings to (key path, composed YAML value) pairs."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition('=')
        keys = key.split('.')
        if not sep or not all(k.strip() for k in keys):
            raise UsageError(f'--set {pair!r}: expected KEY=VALUE with a dotted KEY such as train.num_epochs=10')
        try:
            node = yaml.compose(value, Loader=yaml.FullLoader)
        except yaml.YAMLError as exc:
            raise UsageError(f'--set {pair!r}: VALUE is not valid YAML ({one_line(exc)})') from None
        parsed.append((keys, node if node is not None else yaml.ScalarNode('tag:yaml.org,2002:null', 'null')))
    return parsed


def _child(node: yaml.Node, key: str) -> tuple[list, int] | None:
    """(container list, index) holding the child ``key`` of a mapping or sequence node."""
    if isinstance(node, yaml.MappingNode):
        for i, (k, _) in enumerate(node.value):
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return node.value, i
    elif isinstance(node, yaml.SequenceNode) and key.lstrip('-').isdigit():
        index = int(key)
        if -len(node.value) <= index < len(node.value):
            return node.value, index % len(node.value)
    return None


def _replace_everywhere(root: yaml.Node, old: yaml.Node, new: yaml.Node) -> None:
    """Point every reference to ``old`` (the anchor and its aliases) at ``new``."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            node.value = [(k, new if v is old else v) for k, v in node.value]
            stack.extend(v for _, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            node.value = [new if v is old else v for v in node.value]
            stack.extend(node.value)


def apply_override(root: yaml.Node, keys: list[str], value: yaml.Node, source: Path) -> None:
    node = root
    for depth, key in enumerate(keys):
        found = _child(node, key)
        if found is None:
            where = '.'.join(keys[:depth]) or 'the top level'
            raise UsageError(f'--set {".".join(keys)}: {source} has no key {key!r} under {where}')
        container, index = found
        node = container[index][1] if isinstance(node, yaml.MappingNode) else container[index]
    _replace_everywhere(root, node, value)


def _build_datasets(root: yaml.MappingNode, loader: yaml.FullLoader, source: Path) -> None:
    """Construct each entry of ``datasets`` (torchdistill's tags build it); a failure names the dataset."""
    found = _child(root, 'datasets')
    datasets = found[0][found[1]][1] if found else None
    if not isinstance(datasets, yaml.MappingNode):
        return
    for key_node, node in datasets.value:
        found = _child(node, 'key')
        class_key = found[0][found[1]][1] if found else None
        label = f'datasets.{key_node.value}'
        if isinstance(class_key, yaml.ScalarNode):
            label += f' ({class_key.value})'
        try:
            loader.construct_object(node, deep=True)
        except FileNotFoundError as exc:
            raise UsageError(f'{source}: {label}: missing file or directory while building the recipe: '
                             f'{one_line(exc)}') from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f'{source}: {label}: {type(exc).__name__}: {one_line(exc)}') from None


def load_recipe(path: Path, overrides: list[tuple[list[str], yaml.Node]] = (),
                on_valid: Callable[[dict[str, object]], None] | None = None) -> dict:
    """Compose the YAML, apply overrides, import ``dependencies``, validate, then construct (torchdistill's tags
    run here). ``on_valid`` gets validate_recipe's checked values before anything is constructed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f'cannot read recipe {path}: {exc.strerror}') from None
    loader = yaml.FullLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise UsageError(f'{path}: malformed YAML: {one_line(exc)}') from None
        if not isinstance(root, yaml.MappingNode):
            raise UsageError(f'{path}: a recipe must be a YAML mapping with datasets, models, train and test')
        for keys, value in overrides:
            apply_override(root, keys, value, path)
        deps = _child(root, 'dependencies')
        try:
            if deps is not None:
                import_dependencies(loader.construct_object(deps[0][deps[1]][1], deep=True))
            checked = validate_recipe(root, loader, path)
            if on_valid is not None:
                on_valid(checked)
            _build_datasets(root, loader, path)
            return loader.construct_document(root)
        except FileNotFoundError as exc:
            raise UsageError(f'{path}: missing file or directory while building the recipe: {one_line(exc)}') from None
        except (ImportError, AttributeError, TypeError, ValueError, KeyError, yaml.YAMLError) as exc:
            raise UsageError(f'{path}: cannot build the recipe: {type(exc).__name__}: {one_line(exc)}') from None
    finally:
        loader.dispose()
