"""`python -m ttm_torchdistill ...` runs the `ttm-distill` command (also under torchrun)."""
from .cli import command

command()
