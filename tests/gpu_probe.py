"""Test-only plugin: each process of one command records the GPUs it was given (tests of sweep --runs-per-gpu).

Named in a recipe's ``dependencies`` (tests/ is on PYTHONPATH), it is imported by every process that loads the
recipe. A process whose command line holds $GPU_PROBE_COMMAND (``train`` for the runs of a sweep, ``lockstep`` for
its lockstep groups) writes its command line and $CUDA_VISIBLE_DEVICES to $GPU_PROBE_DIR/<pid>.json; any other
process (the sweep's own check of the recipe, say) records nothing.
"""
import json
import os
import sys

if os.environ.get('GPU_PROBE_COMMAND') in sys.argv:
    with open(os.path.join(os.environ['GPU_PROBE_DIR'], f'{os.getpid()}.json'), 'w') as f:
        json.dump({'argv': sys.argv, 'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}, f)
