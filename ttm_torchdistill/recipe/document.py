"""A recipe as a document: its YAML node graph, read, overridden, validated, edited and built in one place.

torchdistill's tags (``!import_call`` and friends) build datasets and objects while the YAML loads,
so a recipe is first composed into a node graph: overrides (``--set``) replace nodes there, values are
read by constructing one node at a time (tags resolved exactly as the runner will see them), and only
then is the whole document constructed. No other module walks YAML nodes.
"""
from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from torchdistill.common import yaml_util
from torchdistill.common.main_util import import_dependencies

from ..description import Override
from ..errors import UsageError, one_line
from ..outputs import check_output_folder
from .rules import LOADERS, RULES

__all__ = ['SUB_TERMS', 'LossTerm', 'RecipeDocument', 'apply_override', 'compose_scalar', 'load_recipe',
           'parse_overrides']

# torchdistill registers its YAML constructors on yaml.FullLoader inside load_yaml_file; loading
# an empty document once registers them without copying its table of tags.
yaml_util.load_yaml_file(os.devnull)

SUB_TERMS = 'train.criterion.kwargs.sub_terms'
"""where a WeightedSumLoss recipe lists its loss terms"""
FINGERPRINT_SECTIONS = ('models', 'datasets', 'train.train_data_loader', 'train.criterion', 'train.optimizer',
                        'train.scheduler')
"""the parts of a recipe that --resume must find unchanged"""
FINGERPRINT_IGNORES = ('dst_ckpt', 'num_workers', 'pin_memory', 'persistent_workers', 'prefetch_factor', 'timeout')
Keys = str | Sequence[str]
"""a key path: 'a.b.0.c' or its parts"""


def _split(keys: Keys) -> list[str]:
    return keys.split('.') if isinstance(keys, str) else list(keys)


def _null() -> yaml.ScalarNode:
    return yaml.ScalarNode('tag:yaml.org,2002:null', 'null')


def parse_overrides(overrides: Iterable[Override | str]) -> list[tuple[list[str], yaml.Node]]:
    """Overrides (or ``KEY=VALUE`` strings) to (key path, composed YAML value) pairs."""
    parsed = []
    for override in overrides:
        override = override if isinstance(override, Override) else Override.parse(override)
        try:
            node = yaml.compose(override.value, Loader=yaml.FullLoader)
        except yaml.YAMLError as exc:
            raise UsageError(f'--set {str(override)!r}: VALUE is not valid YAML ({one_line(exc)})') from None
        parsed.append((override.keys, node if node is not None else _null()))
    return parsed


def compose_scalar(text: str, what: str) -> yaml.Node:
    """One YAML scalar (a --grid value), composed; one UsageError line (naming ``what``) otherwise."""
    try:
        node = yaml.compose(text, Loader=yaml.FullLoader)
    except yaml.YAMLError as exc:
        raise UsageError(f'{what}: {text!r} is not valid YAML ({one_line(exc)})') from None
    if not isinstance(node, yaml.ScalarNode):
        raise UsageError(f'{what}: {text!r} is not a YAML scalar (one value per comma)')
    return node


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The child ``key`` of a mapping node, or the item at index ``key`` of a sequence node."""
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
    if isinstance(node, yaml.SequenceNode) and key.lstrip('-').isdigit():
        index = int(key)
        if -len(node.value) <= index < len(node.value):
            return node.value[index]
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


def apply_override(root: yaml.Node, keys: Keys, value: yaml.Node, source: Path) -> None:
    """Replace the node at ``keys`` (and every alias of it) by ``value``; a missing key is a UsageError."""
    keys, node = _split(keys), root
    for depth, key in enumerate(keys):
        node = _child(node, key)
        if node is None:
            where = '.'.join(keys[:depth]) or 'the top level'
            raise UsageError(f'--set {".".join(keys)}: {source} has no key {key!r} under {where}')
    _replace_everywhere(root, node, value)


@dataclass(frozen=True)
class LossTerm:
    """One term of ``train.criterion.kwargs.sub_terms``."""

    name: str
    key: str | None
    """the term's criterion key, e.g. 'WTTMLoss'"""
    kwargs: dict
    """the criterion's keyword arguments, tags resolved"""
    wrapper_kwargs: dict = field(default_factory=dict)
    """its ``criterion_wrapper``'s keyword arguments (what a wrapped loss reads), tags resolved"""

    @property
    def path(self) -> str:
        """The term's key path, e.g. train.criterion.kwargs.sub_terms.wttm"""
        return f'{SUB_TERMS}.{self.name}'

    def param_path(self, param: str) -> str:
        return f'{self.path}.criterion.kwargs.{param}'


class RecipeDocument:
    """A recipe's composed YAML graph and the loader that constructs it; ``source`` names it in messages."""

    def __init__(self, text: str, source: Path) -> None:
        self.text, self.source = text, source
        try:
            root = yaml.compose(text, Loader=yaml.FullLoader)
        except yaml.YAMLError as exc:
            raise UsageError(f'{source}: malformed YAML: {one_line(exc)}') from None
        if not isinstance(root, yaml.MappingNode):
            raise UsageError(f'{source}: a recipe must be a YAML mapping with datasets, models, train and test')
        self.root: yaml.MappingNode = root
        self._loader = yaml.FullLoader('')

    @classmethod
    def open(cls, path: Path, overrides: list[tuple[list[str], yaml.Node]] = ()) -> RecipeDocument:
        """Read and compose ``path``, then apply ``overrides`` (from :func:`parse_overrides`)."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f'cannot read recipe {path}: {exc.strerror}') from None
        doc = cls(text, path)
        for keys, value in overrides:
            doc.set(keys, value)
        return doc

    # --- reading -------------------------------------------------------------------------------------------
    def node(self, keys: Keys) -> yaml.Node | None:
        """The node at a key path (mapping keys and sequence indices), or None."""
        node = self.root
        for key in _split(keys):
            node = _child(node, key)
            if node is None:
                return None
        return node

    def has(self, keys: Keys) -> bool:
        return self.node(keys) is not None

    def filled(self, keys: Keys, mapping: bool = True) -> bool:
        """Whether the key holds a non-empty mapping (``mapping``) or a value other than null, read from the node
        alone: nothing is constructed (a dataset is not built to ask whether ``datasets`` is there)."""
        node = self.node(keys)
        if mapping:
            return isinstance(node, yaml.MappingNode) and bool(node.value)
        return node is not None and not (isinstance(node, yaml.ScalarNode) and node.tag == 'tag:yaml.org,2002:null')

    def keys(self, keys: Keys = ()) -> list[str]:
        """The keys of the mapping at a key path (none for anything else)."""
        node = self.node(keys) if keys else self.root
        return [k.value for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []

    def construct(self, node: yaml.Node) -> object:
        """A node's value with every tag resolved (with this document's loader: built once, reused by build)."""
        return self._loader.construct_object(node, deep=True)

    def value(self, keys: Keys, default: object = None) -> object:
        """The value at a key path as the runner will see it (tags resolved), or ``default`` when absent."""
        node = self.node(keys)
        return default if node is None else self.construct(node)

    def find(self, pattern: str) -> Iterator[tuple[str, yaml.Node]]:
        """(key path, node) of every node matching a dotted pattern; each part is an fnmatch pattern on the keys
        of a mapping (``*`` any key, ``*_module_path`` any such key) or on the indices of a sequence (``*`` any
        item, as ``--set`` names them: ``abfs.1.io``)."""
        def walk(node: yaml.Node, parts: list[str], path: str) -> Iterator[tuple[str, yaml.Node]]:
            if not parts:
                yield path, node
            elif isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
                children = ([(k.value, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
                            if isinstance(node, yaml.MappingNode) else [(str(i), v) for i, v in enumerate(node.value)])
                for key, value in children:
                    if fnmatch.fnmatchcase(key, parts[0]):
                        yield from walk(value, parts[1:], f'{path}.{key}' if path else key)

        yield from walk(self.root, pattern.split('.'), '')

    def loss_terms(self) -> list[LossTerm]:
        """Every term of ``train.criterion.kwargs.sub_terms`` with its key and resolved kwargs."""
        terms = []
        for name in self.keys(SUB_TERMS):
            key = self.value(f'{SUB_TERMS}.{name}.criterion.key')
            kwargs = self.value(f'{SUB_TERMS}.{name}.criterion.kwargs')
            wrapper = self.value(f'{SUB_TERMS}.{name}.criterion_wrapper.kwargs')
            terms.append(LossTerm(name, key if isinstance(key, str) else None,
                                  kwargs if isinstance(kwargs, dict) else {},
                                  wrapper if isinstance(wrapper, dict) else {}))
        return terms

    def fingerprint(self) -> dict[str, str]:
        """What makes two runs the same experiment, as key path -> 'tag value' of every scalar below the models,
        the datasets, the training loader, the loss, the optimizer and the scheduler (tags as written, not run).
        Output paths (``dst_ckpt``) and loader mechanics (workers, pinned memory, prefetching) are left out, and so is
        ``train.num_epochs`` where a scheduler names it through an alias: the runner rebuilds the schedule for the
        length it is given (see ``runner.schedule``)."""
        return self.scalars(FINGERPRINT_SECTIONS, FINGERPRINT_IGNORES, skip_epochs_alias=True)

    def scalars(self, sections: Sequence[str] = (), ignores: Sequence[str] = (),
                skip_epochs_alias: bool = False) -> dict[str, str]:
        """Key path -> 'tag value' of every scalar below ``sections`` (default: the whole recipe), leaving out keys
        whose last part is in ``ignores``; tags as written (``KEY.!``)."""
        found: dict[str, str] = {}
        epochs = self.node('train.num_epochs') if skip_epochs_alias else None

        def walk(node: yaml.Node, path: str) -> None:
            if path.rsplit('.', 1)[-1] in ignores or (epochs is not None and node is epochs):
                return
            if not node.tag.startswith('tag:yaml.org,2002:'):
                found[f'{path}.!'] = node.tag
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    walk(v, f'{path}.{k.value}' if path else k.value)
            elif isinstance(node, yaml.SequenceNode):
                for i, v in enumerate(node.value):
                    walk(v, f'{path}.{i}')
            else:
                found[path] = node.value

        for section in sections or ('',):
            if (node := self.node(section) if section else self.root) is not None:
                walk(node, section)
        return found

    # --- changing ------------------------------------------------------------------------------------------
    def set(self, keys: Keys, value: yaml.Node | str) -> None:
        """Override the value at an existing key path (``value``: a node, or YAML text); values read before
        are constructed again."""
        if isinstance(value, str):
            value = yaml.compose(value, Loader=yaml.FullLoader) or _null()
        apply_override(self.root, keys, value, self.source)
        self._loader = yaml.FullLoader('')

    def scalar_span(self, keys_or_node: Keys | yaml.Node) -> tuple[int, int]:
        """(start, end) in :attr:`text` of a value (a scalar, or a flow sequence such as ``!join [...]``), after its
        anchor and tag."""
        node = keys_or_node if isinstance(keys_or_node, yaml.Node) else self.node(keys_or_node)
        span = self.text[node.start_mark.index:node.end_mark.index]
        prefix = re.match(r'((?:[&!]\S*\s+)*)', span).group(1)
        return node.start_mark.index + len(prefix), node.end_mark.index

    def entry_span(self, keys: Keys) -> tuple[int, int] | None:
        """(start, end) in :attr:`text` of the mapping entry ``key: value`` at a key path, from the start of its
        line through the end of its value's last line; None when absent."""
        keys = _split(keys)
        parent = self.node(keys[:-1]) if len(keys) > 1 else self.root
        if not isinstance(parent, yaml.MappingNode):
            return None
        entry = next(((k, v) for k, v in parent.value if isinstance(k, yaml.ScalarNode) and k.value == keys[-1]), None)
        if entry is None:
            return None
        start = self.text.rfind('\n', 0, entry[0].start_mark.index) + 1
        end = entry[1].end_mark.index
        if end and self.text[end - 1] != '\n':  # a scalar or flow value ends inside its line
            newline = self.text.find('\n', end)
            end = len(self.text) if newline < 0 else newline + 1
        return start, end

    def block_span(self, keys: Keys) -> tuple[int, int, int]:
        """(start, end, column) in :attr:`text` of the block at a key path, trailing blank lines excluded."""
        node = self.node(keys)
        start = node.start_mark.index
        return start, start + len(self.text[start:node.end_mark.index].rstrip()), node.start_mark.column

    # --- building ------------------------------------------------------------------------------------------
    def import_dependencies(self) -> None:
        """Import the recipe's ``dependencies`` (plugins register their losses, models, methods and tags); one that
        cannot be imported is one UsageError line."""
        deps = self.node('dependencies')
        if deps is None:
            return
        try:
            import_dependencies(self.construct(deps))
        except ImportError as exc:
            raise UsageError(f'{self.source}: dependencies: cannot import a plugin: {type(exc).__name__}: '
                             f'{one_line(exc)}') from None

    def validate(self) -> dict[str, object]:
        """Raise UsageError for the first runner key whose value is of the wrong type or out of range (:data:`RULES`).

        Values are constructed with the document's loader, so :meth:`build` reuses them; returns the checked
        values by key path.
        """
        source = self.source
        checked = {}
        for pattern, rule in RULES.items():
            for path, node in self.find(pattern):
                if not rule.accepts(found := self.construct(node)):
                    raise UsageError(f'{source}: {path}={found!r}: expected {rule.expected}')
                checked[path] = found
        ids = self.keys('datasets')
        for loader_path in LOADERS:
            node = self.node(f'{loader_path}.dataset_id')
            if node is not None and (found := self.construct(node)) not in ids:
                raise UsageError(f'{source}: {loader_path}.dataset_id={found!r}: expected a key of datasets '
                                 f'({", ".join(map(str, ids))})')
        for path, node in self.find('models.*.dst_ckpt'):
            if (found := self.construct(node)) is not None:
                check_output_folder(Path(found), f'{source}: {path}')
        classes = {label: self.value(f'models.{label}.kwargs.num_classes')
                   for label in ('teacher_model', 'student_model') if self.has(f'models.{label}.kwargs.num_classes')}
        if len(classes) == 2 and classes['teacher_model'] != classes['student_model']:
            raise UsageError(f'{source}: models.student_model.kwargs.num_classes={classes["student_model"]!r} differs '
                             f'from models.teacher_model.kwargs.num_classes={classes["teacher_model"]!r}: teacher '
                             'and student must predict the same classes')
        return checked

    def _data_root(self, name: str) -> object:
        """The first ``root`` argument below ``datasets.NAME`` (also inside a wrapping Subset), resolved."""
        stack = [self.node(f'datasets.{name}')]
        while stack:
            node = stack.pop()
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == 'root':
                        return self.construct(v)
                stack.extend(reversed([v for _, v in node.value]))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(reversed(node.value))
        return None

    def _build_datasets(self) -> None:
        """Construct each entry of ``datasets`` (torchdistill's tags build it); a failure names the dataset, and a
        missing or incomplete data root says which page of the docs tells how to get the files."""
        for name in self.keys('datasets'):
            label = f'datasets.{name}'
            class_key = self.node(f'datasets.{name}.key')
            if isinstance(class_key, yaml.ScalarNode):
                label += f' ({class_key.value})'
            try:
                self.construct(self.node(f'datasets.{name}'))
            except FileNotFoundError as exc:
                raise UsageError(f'{self.source}: {label}: missing file or directory while building the recipe: '
                                 f'{one_line(exc)}{self._data_hint(name)}') from None
            except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted" (missing files, bad md5)
                raise UsageError(f'{self.source}: {label}: {one_line(exc)}{self._data_hint(name)}') from None
            except (TypeError, ValueError) as exc:
                raise UsageError(f'{self.source}: {label}: {type(exc).__name__}: {one_line(exc)}') from None

    def _data_hint(self, name: str) -> str:
        root = self._data_root(name)
        where = f' under {str(root)!r}' if root is not None else ''
        return (f'; the data files{where} are missing, incomplete or fail their checksum: docs/recipes/cifar100.md '
                'and docs/recipes/imagenet.md ("Data") say where to get them and which variable sets the root')

    def build(self, on_valid: Callable[[dict[str, object]], None] | None = None) -> dict:
        """Import ``dependencies``, validate, then construct (torchdistill's tags run here). ``on_valid`` gets the
        checked values before anything is constructed."""
        path = self.source
        try:
            self.import_dependencies()
            checked = self.validate()
            if on_valid is not None:
                on_valid(checked)
            self._build_datasets()
            return self._loader.construct_document(self.root)
        except FileNotFoundError as exc:
            raise UsageError(f'{path}: missing file or directory while building the recipe: {one_line(exc)}') from None
        except (ImportError, AttributeError, TypeError, ValueError, KeyError, yaml.YAMLError) as exc:
            raise UsageError(f'{path}: cannot build the recipe: {type(exc).__name__}: {one_line(exc)}') from None


def load_recipe(path: Path, overrides: list[tuple[list[str], yaml.Node]] = (),
                on_valid: Callable[[dict[str, object]], None] | None = None) -> dict:
    """Compose the YAML, apply overrides, import ``dependencies``, validate, then construct (torchdistill's tags
    run here). ``on_valid`` gets the checked values before anything is constructed."""
    return RecipeDocument.open(path, overrides).build(on_valid)
