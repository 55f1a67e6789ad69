"""`python -m ttm_torchdistill ...` runs the `ttm-distill` command (also under torchrun)."""
import sys

from .runner.cli import main

sys.exit(main())
