"""`python -m ttm_torchdistill ...` runs the `ttm-distill` command (also under torchrun)."""
import sys

from .cli import main

sys.exit(main())
