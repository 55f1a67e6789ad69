"""The documentation site: it builds strictly, documents every public name, its nav and the README's links reach real
pages, its recipe tables come from the recipes' tables, and its marked command blocks are the ones their tests run."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_blocks import DOCS, REGISTRY, ROOT, digest, hook, marked_blocks

import ttm_torchdistill.functional
import ttm_torchdistill.losses
from ttm_torchdistill.paper import cifar100_table, deit, imagenet

README = ROOT / 'README.md'
API = {ttm_torchdistill.losses: 'api/losses', ttm_torchdistill.functional: 'api/functional'}


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    """One strict build of the site, shared by the tests of this module."""
    out = tmp_path_factory.mktemp('site')
    result = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(out)], cwd=ROOT,
                            env=dict(os.environ, NO_MKDOCS_2_WARNING='1'), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    assert 'WARNING' not in result.stderr, result.stderr[-5000:]
    return out


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


NAV = _nav_pages(yaml.safe_load((ROOT / 'mkdocs.yml').read_text())['nav'])


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob('*.md') if 'hooks' not in p.parts)
    assert sorted(NAV) == pages


@pytest.mark.parametrize('module', API, ids=lambda m: m.__name__)
def test_every_public_name_has_its_anchor_in_the_api_pages(site, module):
    html = (site / API[module] / 'index.html').read_text()
    assert module.__all__ and [n for n in module.__all__ if f'id="{module.__name__}.{n}"' not in html] == []


def test_the_api_pages_show_the_equations_and_the_yaml_of_the_losses(site):
    """The docstrings' reST: math as MathML, code blocks as highlighted YAML before the parameters, roles as links."""
    html = (site / 'api/losses/index.html').read_text()
    anchors = [html.index(f'id="ttm_torchdistill.losses.{name}"') for name in ('TTMLoss', 'WTTMLoss', 'resolve_gamma')]
    ttm, wttm = html[anchors[0]:anchors[1]], html[anchors[1]:anchors[2]]
    assert '<math' in wttm and '.. math::' not in html and '.. code-block::' not in html and ':class:`' not in html
    yaml_key = '<span class="nt">criterion</span>'  # the example, highlighted as YAML
    assert '<span class="filename">WTTMLoss for ResNet-34 -&gt; ResNet-18 on ImageNet' in wttm and yaml_key in wttm
    assert 'href="#ttm_torchdistill.losses.TTMLoss"><code>TTMLoss</code>' in wttm  # ":class:`TTMLoss`" links to it
    assert ttm.index(yaml_key) < ttm.index('Parameters:')  # the example is not in the last parameter's cell


def test_the_front_page_is_the_readme_with_its_links_made_site_links(site):
    html = (site / 'index.html').read_text()
    assert 'Knowledge Distillation Based on Transformed Teacher Matching' in html
    assert 'href="getting-started/"' in html and 'href="recipes/cifar100/"' in html and 'src="demo.png"' in html
    assert 'href="benchmarks/"' in html and 'href="docs/' not in html and 'src="docs/' not in html
    assert (site / 'demo.png').is_file()
    benchmarks = (site / 'benchmarks/index.html').read_text()  # BENCHMARKS.md, included
    assert 'GPU check script' in benchmarks and '&lt;!-- include' not in benchmarks


def test_the_readme_is_short_and_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert '**Recipes are code.**' in text and '**Recipes are code.**' in (DOCS / 'recipes/index.md').read_text()
    links = re.findall(r'\]\(([^)#\s]+)', text)
    local = [link for link in links if '://' not in link]
    assert [link for link in local if not (ROOT / link).exists()] == []
    linked = {link.removeprefix('docs/') for link in local if link.startswith('docs/') and link.endswith('.md')}
    assert set(NAV) - {'index.md', 'benchmarks.md'} <= linked and 'BENCHMARKS.md' in local


def test_the_marked_blocks_are_the_registry():
    """Every block the pages mark for a test is in the registry with its text's hash, and every registered block is
    still marked: a marked block cannot change (or go) without its test being looked at."""
    found = {name: digest(text) for name, (_, text) in marked_blocks().items()}
    changed = {name: found.get(name) for name in found.keys() | REGISTRY.keys()
               if found.get(name) != REGISTRY.get(name)}
    assert changed == {}, f'set these in tests/doc_blocks.py REGISTRY (None: not marked, or not registered): {changed}'


def test_a_marker_must_be_right_before_a_fenced_block(tmp_path, monkeypatch):
    import doc_blocks

    page = tmp_path / 'page.md'
    page.write_text('<!-- runs: x -->\n\n```bash\nls\n```\n')
    monkeypatch.setattr(doc_blocks, 'pages', lambda: [page])
    with pytest.raises(AssertionError, match='is not right before a fenced block'):
        doc_blocks.marked_blocks()
    page.write_text('<!-- runs: x -->\n```bash\nls\n```\n')
    assert doc_blocks.marked_blocks() == {'x': (str(page), 'ls\n')}


def test_the_built_recipe_pages_hold_the_tables(site):
    for page, numbers in (('recipes/cifar100', ('76.06', '77.36', '74.69', '79.42')), ('recipes/imagenet', ('72.19',)),
                          ('recipes/deit', ('77.03',))):
        html = (site / page / 'index.html').read_text()
        assert '&lt;!-- table' not in html and '<!-- table' not in html
        assert all(f'<td>{n}</td>' in html for n in numbers), page


def test_the_tables_hold_every_recipe_and_paper_number_of_the_recipe_tables():
    tables = hook('paper_tables')
    top1 = tables.cifar100_top1() + tables.cifar100_rivals()
    for pair in cifar100_table.PAIRS:
        rows = [line for line in top1.splitlines() if line.startswith(f'| `{pair.student}_from_{pair.teacher}` |')]
        assert len(rows) == 2 and all(f' {value:.2f} |' in ''.join(rows) for value in pair.top1.values())
    assert all(f'| {a.ce_top1:.2f} |' in tables.cifar100_ce() for a in cifar100_table.ARCHS.values())
    for name, values in cifar100_table.FEATURE_TOP1.items():
        assert all(f' {value:.2f} |' in tables.cifar100_feature() for value in values), name
    for exp in imagenet.EXPERIMENTS:
        assert f'| `{exp.name}` |' in tables.imagenet_table() and (exp.top1 is None or f'{exp.top1:.2f}' in
                                                                     tables.imagenet_table())
    assert all(f'| `{run.name}` |' in tables.deit_table() for run in deit.RUNS)


def test_a_recipe_added_to_the_tables_shows_up(monkeypatch):
    tables = hook('paper_tables')
    new = dataclasses.replace(cifar100_table.PAIRS[0], student='resnet8x4', top1={'kd': 11.11, 'wttm': 22.22})
    monkeypatch.setattr(cifar100_table, 'PAIRS', (*cifar100_table.PAIRS, new))
    feature = {method: (*values, 33.33) for method, values in cifar100_table.FEATURE_TOP1.items()}
    monkeypatch.setattr(cifar100_table, 'FEATURE_TOP1', feature)
    row = [line for line in tables.cifar100_top1().splitlines() if line.startswith('| `resnet8x4_from_wrn_40_2` |')]
    assert row == ['| `resnet8x4_from_wrn_40_2` | 11.11 | — | 22.22 | — | — | — |']
    assert '| `resnet8x4_from_wrn_40_2` | 33.33 | 33.33 | 33.33 | 33.33 | 33.33 |' in tables.cifar100_feature()
    experiment = imagenet.Experiment('wttm', 'resnet101', 'mobilenet_v1', (0.5, 2.0), 44.44, 'Table 99')
    monkeypatch.setattr(imagenet, 'EXPERIMENTS', (*imagenet.EXPERIMENTS, experiment))
    assert ('| `ilsvrc2012/wttm/mobilenet_v1_from_resnet101` | WTTMLoss | γ 0.5, β 2, α 1 | 44.44 | Table 99 |'
            in tables.imagenet_table())


def test_a_marker_naming_nothing_stops_the_build():
    from mkdocs.exceptions import PluginError

    pages = hook('pages')
    with pytest.raises(PluginError, match='nope'):
        pages.filled('<!-- table: nope -->\n', 'x.md')
    with pytest.raises(PluginError, match='names no file'):
        pages.filled('<!-- include: ../outside.md -->\n', 'x.md')


def test_the_rest_markup_becomes_markdown():
    rest = hook('rest')
    code = '.. code-block:: YAML\n   :caption: Cap\n\n    key: 1\n'
    text = rest.fields_last(f'Intro.\n\n:param a: one\n   more\n:param b: two\n\n{code}')
    assert text.startswith('Intro.\n\n.. code-block:: YAML') and text.endswith(':param a: one\n   more\n:param b: two')
    text = rest.directives(f'.. math:: a = \\frac{{1}}{{2}}\n   + b\n\n{code}')
    assert '<div class="math-block"><math' in text and '<mfrac>' in text and '```yaml title="Cap"\nkey: 1\n```' in text
    public = {'TTMLoss': 'ttm_torchdistill.losses.TTMLoss'}
    assert rest.roles(':class:`TTMLoss` and :meth:`forward`', public) == \
        '[`TTMLoss`][ttm_torchdistill.losses.TTMLoss] and `forward`'
