"""The site's MkDocs hook: fills the marker lines of the pages before MkDocs renders them.

* ``<!-- readme -->``: the repository's README.md (the front page), its links into ``docs/`` made relative to the
  site (``docs/recipes/cifar100.md`` -> ``recipes/cifar100.md``) and ``BENCHMARKS.md`` pointed at its page;
* ``<!-- include: FILE -->``: FILE of the repository (e.g. BENCHMARKS.md) without its title (the page has its own);
* ``<!-- table: NAME -->``: a table of ``paper_tables.TABLES``, made from ``ttm_torchdistill.paper`` at build time.

On an API page (one with ``::: MODULE`` blocks) every name of each MODULE's ``__all__`` must have its anchor in the
built page, or the build warns (and a strict build fails): a public name without a docstring is not rendered.

``<!-- runs: NAME -->`` markers (a command block the test suite runs, tests/doc_blocks.py) stay as they are. Any other
marker of these kinds that names nothing known stops the build.
"""
from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from paper_tables import TABLES

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger('mkdocs.hooks.pages')
_DOCUMENTED = re.compile(r'^::: ([\w.]+)$', re.M)
_MARKER = re.compile(r'^<!-- (?P<kind>readme|include|table):?\s*(?P<name>\S*) -->$', re.M)
_SITE_LINKS = {'docs/': '', 'BENCHMARKS.md': 'benchmarks.md'}
"""README link prefixes and where they point on the site"""


def readme() -> str:
    """README.md as the site's front page."""
    text = (ROOT / 'README.md').read_text()
    for old, new in _SITE_LINKS.items():
        text = re.sub(rf'(\]\(|<img src="){re.escape(old)}', rf'\g<1>{new}', text)
    return text


def untitled(text: str) -> str:
    """``text`` without its first line where that is a title (``# ...``)."""
    first, _, rest = text.partition('\n')
    return rest.lstrip('\n') if first.startswith('# ') else text


def filled(markdown: str, where: str) -> str:
    """``markdown`` with its markers replaced; ``where`` names the page in errors."""
    def fill(match: re.Match) -> str:
        kind, name = match['kind'], match['name']
        if kind == 'readme':
            return readme()
        if kind == 'include':
            path = ROOT / name
            if not name or not path.is_file() or ROOT not in path.resolve().parents:
                raise PluginError(f'{where}: <!-- include: {name} --> names no file of the repository')
            return untitled(path.read_text())
        if name not in TABLES:
            raise PluginError(f'{where}: <!-- table: {name} --> is not a table; known: {", ".join(TABLES)}')
        return TABLES[name]()

    return _MARKER.sub(fill, markdown)


def exports(module: str) -> list[str]:
    """The names in ``module``'s ``__all__`` (read from its source under the repository, not imported)."""
    path = ROOT.joinpath(*module.split('.'))
    path = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def undocumented(html: str, modules: list[str]) -> list[str]:
    """The public names of ``modules`` that have no anchor (``id="MODULE.NAME"``) in ``html``."""
    return [f'{m}.{name}' for m in modules for name in exports(m) if f'id="{m}.{name}"' not in html]


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    page.meta['documents'] = _DOCUMENTED.findall(markdown)
    return filled(markdown, page.file.src_uri)


def on_page_content(html: str, page, **kwargs) -> str:
    missing = undocumented(html, page.meta.get('documents', []))
    if missing:
        log.warning(f'{page.file.src_uri}: public names not documented (no docstring?): {", ".join(missing)}')
    return html
