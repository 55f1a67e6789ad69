"""Text edits of a recipe document at the positions PyYAML reports, so tags, anchors, comments and layout stay.

``new-recipe`` writes a recipe for another pair by editing its base as text: a value (after its anchor, with or
without its tag), a block mapping's lines, an entry. Each edit names the span of the base text it replaces; an edit of
a node that several keys reach through an alias is made once.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from ..errors import UsageError
from .document import Keys, RecipeDocument

__all__ = ['RecipeEdits', 'quoted']


def quoted(value: object) -> str:
    """A scalar's new text: YAML null, or a quoted string."""
    return 'null' if value is None else repr(str(value))


class RecipeEdits:
    """Edits of ``doc.text``; :meth:`text` applies them (non-overlapping spans)."""

    def __init__(self, doc: RecipeDocument) -> None:
        self.doc = doc
        self._edits: dict[tuple[int, int], str] = {}

    def _node(self, keys_or_node: Keys | yaml.Node) -> yaml.Node:
        node = keys_or_node if isinstance(keys_or_node, yaml.Node) else self.doc.node(keys_or_node)
        if node is None:
            raise UsageError(f'{self.doc.source}: {keys_or_node} is missing')
        return node

    def anchor(self, keys_or_node: Keys | yaml.Node) -> str:
        """A value's anchor as written (``'&name '``), or ''."""
        node = self._node(keys_or_node)
        found = re.match(r'&(\S+)\s+', self.doc.text[node.start_mark.index:node.end_mark.index])
        return f'&{found.group(1)} ' if found else ''

    def set_value(self, keys_or_node: Keys | yaml.Node, text: str, keep_tag: bool = True) -> None:
        """Replace a value (a scalar, or a flow sequence such as ``!join [...]``), keeping its anchor and, with
        ``keep_tag``, its tag (``!getattr [..., 'NAME']`` edits one item; a path that replaces a ``!join`` drops it)."""
        node = self._node(keys_or_node)
        span = self.doc.text[node.start_mark.index:node.end_mark.index]
        kept = re.match(r'((?:[&!]\S*\s+)*)' if keep_tag else r'((?:&\S*\s+)?)', span).group(1)
        self._edits[(node.start_mark.index + len(kept), node.end_mark.index)] = self._spaced(node, text)

    def _spaced(self, node: yaml.Node, text: str) -> str:
        """``text`` for a node that may be an empty value (``key:`` with nothing after the colon): a space first."""
        empty = node.start_mark.index == node.end_mark.index
        return f' {text}' if empty and self.doc.text[node.start_mark.index - 1:node.start_mark.index] == ':' else text

    def set_item(self, keys: Keys, text: str) -> bool:
        """Replace a scalar value, or the last item of a flow sequence (``!getattr [*weights_class, 'NAME']``), tags
        and anchors kept; False where there is neither."""
        node = self.doc.node(keys)
        if isinstance(node, yaml.SequenceNode) and node.value:
            node = node.value[-1]
        if not isinstance(node, yaml.ScalarNode):
            return False
        self.set_value(node, text)
        return True

    def rewrite_scalars(self, keys: Keys, rewrite: Callable[[str], str]) -> None:
        """Rewrite the plain scalars of a value: the value itself, or the items of a sequence (``!join [...]``;
        aliases and tagged items stay)."""
        node = self.doc.node(keys)
        items = node.value if isinstance(node, yaml.SequenceNode) else [node] if node is not None else []
        for item in items:
            if isinstance(item, yaml.ScalarNode) and item.tag.startswith('tag:yaml.org,2002:'):
                new = rewrite(item.value)
                if new != item.value:
                    self.set_value(item, quoted(new))

    def set_node(self, keys_or_node: Keys | yaml.Node, text: str) -> None:
        """Replace a node's whole text, anchor and tag included."""
        node = self._node(keys_or_node)
        self._edits[(node.start_mark.index, node.end_mark.index)] = self._spaced(node, text)

    def entries(self, keys: Keys) -> list[tuple[str, str, int]]:
        """(key, text as written, start) of each entry of the block mapping at ``keys``; an entry runs to the next
        key (or the block's end), so aliases, tags and multi-line values are kept whole."""
        node = self.doc.node(keys)
        if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
            raise UsageError(f'{keys} of the base recipe must be a block mapping (one key per line) for new-recipe')
        end = self.doc.block_span(keys)[1]
        starts = [k.start_mark.index for k, _ in node.value] + [end]
        return [(k.value, self.doc.text[a:b].rstrip(), a)
                for (k, _), a, b in zip(node.value, starts[:-1], starts[1:], strict=True)]

    def set_block(self, keys: Keys, lines: list[str]) -> None:
        """Replace the block at ``keys`` by ``lines`` at its indentation."""
        start, end, column = self.doc.block_span(keys)
        self._edits[(start, end)] = ('\n' + ' ' * column).join(lines)

    def set_entry(self, parent: Keys, name: str, lines: list[str]) -> None:
        """Replace entry ``name`` of the block mapping at ``parent`` (its key through its value) by ``lines``, the
        first at the key's place, the others at the key's indentation."""
        node = self.doc.node(parent)
        key = next((k for k, _ in node.value if k.value == name), None) if isinstance(node, yaml.MappingNode) else None
        if key is None:
            raise UsageError(f'{self.doc.source}: {parent} has no entry {name!r}')
        start, text = next((start, text) for k, text, start in self.entries(parent) if k == name)
        self._edits[(start, start + len(text))] = ('\n' + ' ' * key.start_mark.column).join(lines)

    def add_entry_after(self, parent: Keys, name: str, lines: list[str]) -> None:
        """Insert ``lines`` (a new entry) after entry ``name`` of the block mapping at ``parent``, at its
        indentation."""
        start, text = next(((start, text) for key, text, start in self.entries(parent) if key == name), (None, ''))
        if start is None:
            raise UsageError(f'{self.doc.source}: {parent} has no entry {name!r}')
        indent = '\n' + ' ' * (start - self.doc.text.rfind('\n', 0, start) - 1)
        self._edits[(start + len(text), start + len(text))] = indent + indent.join(lines)

    def drop_entry(self, parent: Keys, name: str) -> None:
        """Remove entry ``name`` (its whole lines) of the block mapping at ``parent``, unless it is the last one."""
        entries = self.entries(parent)
        index = next((i for i, (key, _, _) in enumerate(entries) if key == name), None)
        if index is None or index + 1 == len(entries):
            return
        start = self.doc.text.rfind('\n', 0, entries[index][2]) + 1
        end = self.doc.text.rfind('\n', 0, entries[index + 1][2]) + 1
        self._edits[(start, end)] = ''

    def drop_top_entry(self, key: str) -> None:
        """Remove a top-level entry (e.g. ``paper:``) with its lines."""
        span = self.doc.entry_span(key)
        if span is not None:
            self._edits[span] = ''

    def text(self) -> str:
        """The base text with every edit applied."""
        body = self.doc.text
        for (start, end), new in sorted(self._edits.items(), reverse=True):
            body = body[:start] + new + body[end:]
        return body
