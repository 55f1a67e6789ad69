"""The sweep package: plan, manifest, local and SLURM launchers, results (`ttm-distill sweep`)."""
