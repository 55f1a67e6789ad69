"""The site's MkDocs hook: fills the marker lines of the pages before MkDocs renders them.

* ``<!-- readme -->``: the repository's README.md (the front page), its links into ``docs/`` made relative to the
  site (``docs/recipes/cifar100.md`` -> ``recipes/cifar100.md``) and ``BENCHMARKS.md`` pointed at its page;
* ``<!-- include: FILE -->``: FILE of the repository (e.g. BENCHMARKS.md) without its title (the page has its own);
* ``<!-- table: NAME -->``: a table of ``tables.TABLES``, made from ``ttm_torchdistill.paper`` at build time.

``<!-- runs: NAME -->`` markers (a command block the test suite runs, tests/doc_blocks.py) stay as they are. Any other
marker of these kinds that names nothing known stops the build.
"""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from tables import TABLES

ROOT = Path(__file__).resolve().parents[2]
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


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return filled(markdown, page.file.src_uri)
