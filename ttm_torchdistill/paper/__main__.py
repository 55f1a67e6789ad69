"""The command that renders the shipped recipes: ``python -m ttm_torchdistill.paper [--check]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as _package_doc
from . import write_recipes


def main(argv: list[str] | None = None) -> int:
    """Rewrite the recipes under the package's ``recipes/`` folder that differ from the tables (with
    ``--check``, only list them, and exit 1 if any)."""
    parser = argparse.ArgumentParser(prog='python -m ttm_torchdistill.paper', description=_package_doc)
    parser.add_argument('--check', action='store_true', help='only report recipes that differ from the tables')
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent / 'recipes'
    changed = write_recipes(root, check=args.check)
    verb = 'differ' if args.check else 'written'
    print(f'{len(changed)} recipe(s) {verb}' + ''.join(f'\n  {p}' for p in changed))
    return 1 if args.check and changed else 0


if __name__ == '__main__':
    sys.exit(main())
