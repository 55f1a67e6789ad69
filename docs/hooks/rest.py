"""A griffe extension that turns the package's reST docstring markup into the Markdown mkdocstrings renders.

The docstrings are Sphinx-style (``:param x:`` fields, which mkdocstrings' ``sphinx`` style parses); their text also
holds reST that Markdown does not know. Before a docstring is parsed this rewrites:

* the field list moved after the text (:func:`fields_last`);
* ``.. math::`` blocks and ``:math:`` roles into MathML (latex2mathml, at build time: no script, no network);
* ``.. code-block:: LANG`` blocks (with ``:caption:``) into fenced blocks with a title;
* ``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:`` and ``:exc:`` roles into code, linked to the
  API pages where the target is a public name of ``ttm_torchdistill.losses`` or ``ttm_torchdistill.functional``.
"""
from __future__ import annotations

import re
import textwrap
from typing import Any

from griffe import Alias, Extension, Module, Object
from latex2mathml.converter import convert

DOCUMENTED = ('ttm_torchdistill.losses', 'ttm_torchdistill.functional')
"""the modules whose ``__all__`` the API pages render: the only targets a role links to"""

_DIRECTIVE = re.compile(r'^(?P<indent> *)\.\. (?P<name>[\w-]+)::[ \t]*(?P<arg>.*)$')
_OPTION = re.compile(r'^ +:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$')
_FIELD = re.compile(r'^:[\w ]+:( |$)')
_MATH_ROLE = re.compile(r':math:`([^`]+)`')
_ROLE = re.compile(r':(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`')


def mathml(latex: str, block: bool) -> str:
    """``latex`` as one line of MathML (a ``<div>`` of its own for a displayed equation)."""
    math = convert(' '.join(latex.split()), display='block' if block else 'inline')
    return f'<div class="math-block">{math}</div>' if block else math


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines of a directive's body from ``start``: blank lines and lines indented deeper than ``indent``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def directives(text: str) -> str:
    """``text`` with its ``.. math::`` and ``.. code-block::`` directives as MathML and fenced blocks."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match or match['name'] not in ('math', 'code-block', 'code'):
            out.append(lines[i])
            i += 1
            continue
        indent, options = match['indent'], {}
        i += 1
        while i < len(lines) and (option := _OPTION.match(lines[i])):
            options[option['key']] = option['value']
            i += 1
        body, i = _block(lines, i, len(indent))
        body = textwrap.dedent('\n'.join(body)).strip('\n')
        if match['name'] == 'math':
            out += ['', indent + mathml(f"{match['arg']} {body}", block=True), '']
        else:
            title = f' title="{options["caption"]}"' if 'caption' in options else ''
            fence = [f"```{match['arg'].strip().lower()}{title}", *body.splitlines(), '```']
            out += ['', *(indent + line if line else line for line in fence), '']
    return '\n'.join(out)


def fields_last(text: str) -> str:
    """``text`` with its field list (``:param x: ...`` and the indented lines that continue a field) after the rest:
    griffe's Sphinx parser reads every line up to the next field as the field's description, so a YAML example
    after the fields would land in the last parameter's cell."""
    lines, fields, rest, in_field = text.splitlines(), [], [], False
    for i, line in enumerate(lines):
        if _FIELD.match(line):
            in_field = True
        elif in_field and not (line.startswith(' ') or not line.strip() and i + 1 < len(lines)
                               and lines[i + 1].startswith(' ')):
            in_field = False
            if not line.strip() and rest and not rest[-1].strip():
                continue  # the blank lines before and after the fields: one is enough
        (fields if in_field else rest).append(line)
    while rest and not rest[-1].strip():
        rest.pop()
    return '\n'.join(rest + ([''] if rest and fields else []) + fields)


def roles(text: str, public: dict[str, str]) -> str:
    """``text`` with its math roles as MathML and its cross-reference roles as code, linked where ``public`` (last
    name -> full path) has the target."""
    text = _MATH_ROLE.sub(lambda m: mathml(m[1], block=False), text)

    def role(match: re.Match) -> str:
        target = match['target'].lstrip('.')
        shown = target.rsplit('.', 1)[-1] if match['tilde'] else target
        path = public.get(target.rsplit('.', 1)[-1])
        if path and (target == path.rsplit('.', 1)[-1] or target == path):
            return f'[`{shown}`][{path}]'
        return f'`{shown}`'

    return _ROLE.sub(role, text)


class RestToMarkdown(Extension):
    """Rewrites every docstring of the loaded package (see the module's docstring) once it is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        public = {}
        for path in DOCUMENTED:
            module = pkg.get_member(path.split('.', 1)[1])
            public.update({str(name): f'{path}.{name}' for name in module.exports or ()})
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = roles(directives(fields_last(obj.docstring.value)), public)


def _objects(obj: Object):
    """``obj`` and every object it defines (aliases are skipped: their targets are visited where they live)."""
    yield obj
    for member in obj.members.values():
        if not isinstance(member, Alias):
            yield from _objects(member)
