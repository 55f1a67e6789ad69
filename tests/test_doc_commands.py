"""The documentation's walkthroughs run as written: only data roots (environment variables), epochs and batch sizes
change.

Each test takes the command blocks that its page marks for it (``<!-- runs: NAME -->``, tests/doc_blocks.py), appends
the short-run overrides to every `ttm-distill train/test/sweep/calibrate` command, runs the blocks with bash in a fresh
folder on generated data, and checks what the page says comes out. A marked block that changes fails until its test
is looked at (tests/test_docs.py checks the registry of their hashes).
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import FAST, ROOT, make_image_folder
from doc_blocks import block

SHORT = {  # per command: the overrides that make a run one short epoch on tiny data
    'train': FAST, 'test': [o for o in FAST if o.startswith('test.')]}
SHORT['sweep'] = SHORT['calibrate'] = SHORT['train']


def runnable(block: str) -> str:
    """A block as bash runs it in the test: optional ``[...]`` parts dropped, the short-run overrides appended to
    each run command."""
    lines = block.replace('\\\n', ' ').splitlines()
    out = []
    for line in lines:
        code, hash_, comment = line.partition('  #')
        code = re.sub(r'\s\[[^\]]*\]', '', code)
        match = re.search(r'\bttm-distill (train|test|sweep|calibrate)\b', code)
        if match:  # a key the command sets itself gets the short value in place; the others are appended
            for override in SHORT[match.group(1)]:
                key = override.partition('=')[0]
                code, found = re.subn(rf'--set {re.escape(key)}=\S+', f'--set {override}', code)
                if not found:
                    code = code.rstrip() + f' --set {shlex.quote(override)}'
        out.append(code + (hash_ + comment if hash_ else ''))
    return '\n'.join(out) + '\n'


def run_blocks(texts: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    script = 'set -euo pipefail\n' + ''.join(runnable(t) for t in texts)
    (cwd / 'blocks.sh').write_text(script)
    result = subprocess.run(['bash', 'blocks.sh'], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f'{script}\n--- out\n{result.stdout[-3000:]}\n--- err\n{result.stderr[-3000:]}'
    return result


def test_quick_start_is_the_makefiles_demo_and_test():
    for name in ('readme_quick_start', 'quick_start'):
        lines = [line.split('#')[0].strip() for line in block(name).splitlines()]
        assert [line for line in lines if line] == ['make demo', 'make test'], name
    makefile = (ROOT / 'Makefile').read_text()
    assert '\t$(VENV)/bin/ttm-distill demo $(DEMO_ARGS)\n' in makefile  # test_demo runs it with fewer seeds/epochs
    assert re.search(r'^test: \$\(STAMP\) lint docs\n\t\$\(PY\) -m pytest', makefile, re.M)
    assert re.search(r'^docs: \$\(STAMP\)\n\t.*mkdocs build --strict ', makefile, re.M)  # the site, strictly


def test_a_block_is_made_short():
    line = runnable('ttm-distill sweep r.yaml --grid gamma=1 --set train.num_epochs=30 \\\n'
                    '    -o d [--parallel N] [--dry-run]   # note\n')
    assert '[' not in line.split('#')[0] and line.count('--set') == len(SHORT['sweep']) and '# note' in line
    assert 'train.num_epochs=1 ' in line and 'num_epochs=30' not in line


def test_tuning_a_new_pair_locally(tmp_path, shell_env):
    steps = [block(f'tuning_{step}') for step in ('new_recipe', 'sweep', 'table', 'train')]
    assert [shlex.split(b.split('#')[0])[0] for b in steps] == ['ttm-distill'] * len(steps)
    work = tmp_path / 'work'
    # 4 training images (one batch of the tests' size) and 2 validation images: 9 runs of a ResNet-50 teacher at 224 px
    images = make_image_folder(tmp_path / 'ilsvrc2012', per_split={'train': 2, 'val': 1})
    result = run_blocks(steps, work, dict(shell_env, ILSVRC2012_ROOT=str(images)))
    manifest = json.loads(next(work.glob('sweeps/*/sweep.json')).read_text())
    assert manifest['runs'] and all(r['state'] == 'finished' for r in manifest['runs'])
    assert {r['group'] for r in manifest['runs']} == {f'seed{s}' for s in manifest['seeds']}  # --lockstep
    for run in manifest['runs']:  # every output of every run lives in the sweep folder
        folder = work / 'sweeps' / Path(next(work.glob('sweeps/*')).name) / run['dir']
        assert {'run.log', 'run.metrics.jsonl', 'summary.json', run['ckpt']} <= {p.name for p in folder.iterdir()}
    written = {p.name for p in work.glob('resource/**/*') if p.is_file()}  # only step 5 writes the recipe's own
    name = 'ilsvrc2012-efficientnet_b0_from_resnet50'
    assert written == {f'{name}.pt', f'{name}.last.pt', f'{name}.metrics.jsonl'}  # the run lock went with the run
    assert 'best:' in result.stdout and 'train it with the test pass' in result.stdout
    final = [p for p in work.glob('final/*.json')]
    assert final and json.loads(final[0].read_text())['student_test_top1'] is not None


def test_when_something_goes_wrong_examples(tmp_path, shell_env):
    work = tmp_path / 'work'
    for command in runnable(block('error_examples')).splitlines():
        if not command.strip() or command.lstrip().startswith('#'):
            continue
        expected = re.search(r'#\s*exit (\d+)', command)
        result = subprocess.run(['bash', '-c', command], cwd=work, env=shell_env, capture_output=True,
                                text=True, timeout=600)
        assert expected, f'an example without "# exit N": {command}'
        assert result.returncode == int(expected.group(1)), (command, result.stdout[-2000:], result.stderr)
        assert 'Traceback' not in result.stderr
        if result.returncode:
            errors = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill')]
            assert len(errors) == 1, result.stderr


def _fast(command: str) -> str:
    """A run command's batch size set to the tests' and the other short-run overrides appended."""
    for override in FAST:
        key = override.partition('=')[0]
        command, found = re.subn(rf'--set {re.escape(key)}=\S+', f'--set {override}', command)
        if not found:
            command = command.rstrip() + f' --set {shlex.quote(override)}'
    return command


def test_the_sbatch_script_and_the_two_node_torchrun_run_on_the_test_cluster(tmp_path, shell_env, slurm_cluster):
    """Distributed and SLURM's blocks on the test cluster's two nodes, as written but for one CPU task a
    node instead of 4 GPUs, the data root, batch size, epochs, the interpreter and (torchrun) a free port instead of
    29500: the sbatch script, and the two-node torchrun command started on each node of a job (NODE_RANK from SLURM,
    HEAD_NODE the batch host). Each run trains on 2 ranks over the 2 nodes."""
    from slurm_cluster import _free_ports

    script = block('sbatch_script')
    assert script.startswith('#!/bin/bash\n')
    assert 'export MASTER_ADDR=$(hostname)' in script and '#SBATCH --signal=USR2@90' in script
    script = re.sub(r'#SBATCH --gpus-per-node=\d+\n', '', script)
    for old, new in (('--ntasks-per-node=4', '--ntasks-per-node=1'), ('--cpus-per-task=8', '--cpus-per-task=1'),
                     ('--time=48:00:00', '--time=10'), ('=/datasets/ilsvrc2012', f'={shell_env["ILSVRC2012_ROOT"]}'),
                     ('srun python', f'srun {sys.executable}')):
        assert old in script, old
        script = script.replace(old, new)
    srun = re.search(r'^srun .*?(?<!\\)\n', script, re.M | re.S).group(0)
    script = script.replace(srun, _fast(srun.replace('\\\n', ' ')) + '\n')
    torchrun = re.search(r'^(torchrun --nnodes=2 (?:.*\\\n)*.*)$', block('torchrun_two_nodes'), re.M).group(1)
    torchrun = torchrun.replace('\\\n', ' ')
    for old, new in (('torchrun ', f'{sys.executable} -m torch.distributed.run '),
                     ('--nproc_per_node=4', '--nproc_per_node=1'), (':29500', f':{_free_ports(1)[0]}')):
        assert old in torchrun, old
        torchrun = torchrun.replace(old, new)
    env = dict(shell_env, SLURM_CONF=str(slurm_cluster.conf))
    jobs = {}
    for name, body in (('sbatch', script), ('torchrun', None)):
        work = tmp_path / name
        work.mkdir()
        if body is None:
            (work / 'node.sh').write_text(_fast(torchrun.strip()) + '\n')
            body = ('#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=1\n'
                    '#SBATCH --time=10\nexport HEAD_NODE=$(hostname)\n'
                    "srun bash -c 'export NODE_RANK=$SLURM_NODEID; exec bash node.sh'\n")
        (work / 'job.sbatch').write_text(body)
        submitted = subprocess.run(['sbatch', '--parsable', 'job.sbatch'], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        jobs[name] = submitted.stdout.strip().split(';')[0]
    for job in jobs.values():
        slurm_cluster.wait_for(job, timeout=420)
    summary = json.loads((tmp_path / 'sbatch/runs/wttm-r18.json').read_text())
    assert summary['world_size'] == 2 and summary['epochs_run'] == 1
    assert 'world size 2 on' in (tmp_path / 'sbatch/runs/wttm-r18.log').read_text()
    assert (tmp_path / 'torchrun/resource/ckpt/ilsvrc2012/wttm/ilsvrc2012-mobilenet_v1_from_resnet50.pt').is_file()
    assert 'world size 2 on' in (tmp_path / f'torchrun/slurm-{jobs["torchrun"]}.out').read_text()
