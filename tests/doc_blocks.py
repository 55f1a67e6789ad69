"""The documentation's blocks that the tests run, found by their markers, and the site's hook modules for the tests.

A page (README.md or docs/**.md) marks a block the suite runs as written with a line ``<!-- runs: NAME -->`` right
before its fence. :data:`REGISTRY` holds each marked block's SHA-256: ``tests/test_docs.py`` checks that the pages'
marked blocks and the registry are the same set with the same hashes, and :func:`block` refuses a block whose text
changed, so a marked block cannot change without its test being looked at (then update its hash here).
"""
from __future__ import annotations

import hashlib
import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
HOOKS = DOCS / 'hooks'
MARKER = re.compile(r'^<!-- runs: (?P<name>\S+) -->$', re.M)
FENCED = re.compile(r'```(?P<lang>\w*)\n(?P<body>.*?)^```$', re.M | re.S)

REGISTRY = {  # name -> SHA-256 of the block's text (between its fences), under the test that runs it
    # test_doc_commands.py::test_quick_start_is_the_makefiles_demo_and_test
    'readme_quick_start': '99e8af344586880ab21719581ad68d4c054e1577c884ae457c5895a7c2ae5b0e',
    'quick_start': '99e8af344586880ab21719581ad68d4c054e1577c884ae457c5895a7c2ae5b0e',
    # test_doc_cifar100.py::test_cifar100_teacher_then_five_seeds_then_the_table (the README block is the two others)
    'readme_one_recipe': 'bfbd890aac7016a8967a5dd85accbce31dfcce8f74f8a2e4c14e3db896af1488',
    'cifar100_teacher': '9ab9597aa96f42bf2eeb356000bc641ed3caea1bb622f57fbe47cef1fa3e09c4',
    'cifar100_five_seeds': 'af0c8e6d6ebe63cfe3d14e12b6a8fa97d7c8cbd039584d1056b05c6100d8e5c5',
    # test_doc_cifar100.py::test_a_table_row_of_one_pair_is_one_sweep (with a teacher where cifar100_teacher puts it)
    'table_row_sweep': '38de518129aaaeba55d855d73608dff3132fd799f6f50f384dbd8b7824bfc5c9',
    # test_doc_commands.py::test_tuning_a_new_pair_locally
    'tuning_new_recipe': '70dc8a1197fe454514e9af0a54a086946e1ed2b4583f7c62bf0a5548d7ed9532',
    'tuning_sweep': '7ed0d8a1e793df05f080377e2103a8b1b801da9f1378af6321ee176103330650',
    'tuning_table': 'c50f482b7ba36431d17ad6be26663ad811e55b3cd580d0f69ed536d2284c869d',
    'tuning_train': '615d0e0ba8aa61b874d2bf0cce9700e351a770016b77ba57c78bb2bf181fe05c',
    # test_doc_commands.py::test_when_something_goes_wrong_examples
    'error_examples': '44afc1090655f3cd4ec08e8addb710d69f8303fd54570806e578ba58048df05e',
    # test_doc_commands.py::test_the_sbatch_script_and_the_two_node_torchrun_run_on_the_test_cluster
    'sbatch_script': 'd8758e03533e357e98df159c1bfc1822a6322cb60a37ba5a63f78678873110dc',
    'torchrun_two_nodes': '468faa789930153e23ec1d982e39908c52e52829cd101dbecf676c14a67de491',
    # test_cifar_recipes.py::test_the_docs_held_out_validation_split_builds_and_trains
    'heldout_validation': '07a4956dee59fb1641728c2771507194d2cd64094daa9bd7fb60cf61779c6372',
}


def pages() -> list[Path]:
    """README.md and every Markdown page of the site (the hooks' folder holds none)."""
    return [ROOT / 'README.md', *sorted(DOCS.rglob('*.md'))]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def marked_blocks() -> dict[str, tuple[str, str]]:
    """name -> (page, the block's text) for every marker of every page; a marker that is not right before a fenced
    block, or a name marked twice, is an AssertionError."""
    found = {}
    for path in pages():
        text, page = path.read_text(), str(path.relative_to(ROOT) if ROOT in path.parents else path)
        for marker in MARKER.finditer(text):
            where = f'{page}: <!-- runs: {marker["name"]} -->'
            fence = FENCED.match(text, marker.end() + 1)
            assert fence, f'{where} is not right before a fenced block'
            assert marker['name'] not in found, f'{where}: the name is also marked in {found[marker["name"]][0]}'
            found[marker['name']] = (page, fence['body'])
    return found


def block(name: str) -> str:
    """The text of the block marked ``name``, which must still be the text its test was written for."""
    page, text = marked_blocks()[name]
    assert digest(text) == REGISTRY[name], (
        f'{page}: the block marked {name!r} changed: check that its test still tests what it says, then set its '
        f'hash in tests/doc_blocks.py REGISTRY to {digest(text)!r}')
    return text


def hook(name: str) -> ModuleType:
    """A module of docs/hooks (``paper_tables``, ``pages``, ``rest``), imported as MkDocs imports it (its folder
    first on the path, so that ``pages`` finds ``paper_tables``)."""
    if name not in sys.modules:
        sys.path.insert(0, str(HOOKS))
        try:
            importlib.import_module(name)
        finally:
            sys.path.remove(str(HOOKS))
    module = sys.modules[name]
    assert Path(module.__file__).parent == HOOKS, f'{name} is imported from {module.__file__}, not {HOOKS}'
    return module
