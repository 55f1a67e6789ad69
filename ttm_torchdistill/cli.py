"""The command line, `ttm-distill COMMAND ...`: the parser, and each command's module imported only when it runs."""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import warnings
from typing import NoReturn

from .description import RunDescription
from .errors import COMMAND_ERRORS, TrainingStopped, UsageError
from .methods import feature_methods, logit_methods, short_names
from .outputs import record_error
from .stopping import catch_stop_signal, restore_signals

__all__ = ['command', 'main']

CHECK_HELP = ('validate the recipe and build everything (data, models, loss, optimizer, scheduler; train: the loss on '
              'one batch), then exit without training or writing anything')


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (the usage stays in --help)."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
"""torch.compile's modes (the runner's runner.compiled.COMPILE_MODES; torch is imported only when a command runs)"""

MAX_SEED = 2 ** 63 - 1 - 65536
"""torch takes seeds below 2**64; per-rank seeds add the rank"""


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f'{seed} is outside 0 .. {MAX_SEED}')
    return seed


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('recipe', metavar='RECIPE', help='recipe file, or a shipped recipe name (see `recipes`)')
    parser.add_argument('--device', choices=('cuda', 'cpu'), help='default: cuda if available, else cpu')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='override a recipe value before anything is built (VALUE is YAML); repeatable')
    parser.add_argument('--run-log', metavar='PATH', help='also write the log here; metrics go beside it')
    parser.add_argument('--summary', metavar='PATH', help='write a JSON summary of the run here')
    parser.add_argument('--seed', type=_seed, metavar='N', help='seed Python, NumPy and torch (per rank: N + rank)')
    parser.add_argument('--amp', choices=('bf16', 'fp16'), help='mixed precision forward; fp16 adds a GradScaler')
    parser.add_argument('--channels-last', action='store_true', help='channels_last models and inputs')
    parser.add_argument('--compile', nargs='?', const='default', choices=COMPILE_MODES, metavar='MODE',
                        help='torch.compile student and teacher; MODE: default (without a value), reduce-overhead '
                             '(CUDA graphs), max-autotune or max-autotune-no-cudagraphs')
    parser.add_argument('--debug', action='store_true', help='full tracebacks and torchdistill logs')


def _options(args: argparse.Namespace) -> RunDescription:
    return RunDescription(recipe=args.recipe, overrides=tuple(args.overrides), command=args.command,
                          device=args.device, run_log=args.run_log, summary=args.summary,
                          resume=getattr(args, 'resume', False), seed=args.seed, amp=args.amp,
                          channels_last=args.channels_last, debug=args.debug, check=getattr(args, 'check', False),
                          test=not getattr(args, 'no_test', False), tensorboard=getattr(args, 'tensorboard', None),
                          allow_recipe_change=getattr(args, 'allow_recipe_change', False), compile=args.compile,
                          error_record=getattr(args, 'error_record', None))


SLURM_TRAIN_FLAGS = ('nodes', 'gpus_per_node', 'tasks_per_node', 'slurm', 'wait', 'dry_run')


def _train(args: argparse.Namespace) -> int:
    if args.launcher == 'slurm':
        from .sweep.slurm_request import JobRequest
        from .sweep.slurm_train import submit_training

        if args.check:
            raise UsageError('--check with --launcher slurm: run `ttm-distill train RECIPE --check` here (or on a '
                             'node) first; the job itself checks the recipe before training')
        request = JobRequest(args.nodes if args.nodes is not None else 1, args.gpus_per_node, args.tasks_per_node,
                             tuple(args.slurm), args.wait, args.dry_run)
        return submit_training(_options(args), request)
    given = [f'--{name.replace("_", "-")}' for name in SLURM_TRAIN_FLAGS
             if getattr(args, name) not in (None, False, [])]
    if given:
        raise UsageError(f'{", ".join(given)}: only with --launcher slurm')
    from .runner.commands import run_train

    run_train(_options(args))
    return 0


def _test(args: argparse.Namespace) -> int:
    from .runner.commands import run_test

    run_test(_options(args))
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from .recipe import list_recipes

    for name in list_recipes():
        print(name)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .tools.demo import run_demo, run_grid

    if args.grid:
        run_grid(args.out + '/grid', tuple(args.seeds or (0, 1)), args.epochs, args.retrain_teacher)
    else:
        run_demo(args.out, tuple(args.seeds or (0, 1, 2)), args.epochs, args.retrain_teacher)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep.command import run_sweep

    return run_sweep(args.recipes, args.grid, args.seeds, args.overrides, args.output, launcher=args.launcher,
                     parallel=args.parallel, slurm=args.slurm, dry_run=args.dry_run, wait=args.wait,
                     runs_per_gpu=args.runs_per_gpu, lockstep=args.lockstep, group_size=args.group_size,
                     nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node)


def _lockstep(args: argparse.Namespace) -> int:
    from .sweep.jobs import run_group

    return run_group(args.directory, args.runs)


def _table(args: argparse.Namespace) -> int:
    from .tools.table import table

    text = table(args.paths, args.format, args.output)
    print(f'wrote {args.output}' if args.output else text)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .tools.plot import plot_runs

    print(f'wrote {plot_runs(args.runs, args.output)}')
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .tools.calibrate import calibrate

    calibrate(_options(args), args.split, args.output)
    return 0


def _new_recipe(args: argparse.Namespace) -> int:
    from .tools.new_recipe import new_recipe

    path = new_recipe(args.base, args.teacher, args.student, args.method, args.gamma, args.beta, args.output,
                      args.force)
    print(f'wrote {path}')
    return 0


def _meanings(knob: str) -> str:
    """What `new-recipe --gamma` or `--beta` sets, per method (the registry's declarations)."""
    by_meaning: dict[str, list[str]] = {}
    for method in logit_methods() + feature_methods():
        meaning = method.gamma if knob == 'gamma' else method.beta
        if meaning is not None:
            by_meaning.setdefault(meaning.meaning, []).append(method.name)
    return '; '.join(f'{", ".join(names)}: {meaning}' for meaning, names in by_meaning.items())


def _add_launch_arguments(parser: argparse.ArgumentParser, slurm_help: str) -> None:
    parser.add_argument('--launcher', choices=('local', 'slurm'), default='local', help=f'slurm: {slurm_help}')
    parser.add_argument('--nodes', type=int, metavar='N', help='slurm: nodes per job (default 1)')
    parser.add_argument('--gpus-per-node', type=int, metavar='G',
                        help='slurm: GPUs per node, one rank (task) per GPU, NCCL; without it: CPU ranks, Gloo')
    parser.add_argument('--tasks-per-node', type=int, metavar='K',
                        help='slurm: CPU ranks per node without --gpus-per-node (default 1)')
    parser.add_argument('--slurm', action='append', default=[], metavar='KEY=VALUE',
                        help='submitit SlurmExecutor parameter: partition, time (minutes), cpus_per_task, mem, '
                             'account, qos, additional_parameters, ...; train also takes max_requeues (default 20); '
                             'repeatable')
    parser.add_argument('--wait', action='store_true', help='slurm: follow the job until it ends')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog='ttm-distill', description='Run torchdistill recipes with TTM / WTTM (and any other loss).')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    train = sub.add_parser('train', help='train a student, validating every epoch, then test teacher and student')
    _add_run_arguments(train)
    train.add_argument('--resume', action='store_true', help="continue from the recipe's last checkpoint")
    train.add_argument('--allow-recipe-change', action='store_true',
                       help='--resume even where models, data, loss, optimizer or scheduler differ from the checkpoint')
    train.add_argument('--check', action='store_true', help=CHECK_HELP)
    train.add_argument('--no-test', action='store_true', help='skip the test pass (searches choose on validation)')
    train.add_argument('--tensorboard', metavar='DIR', help='write per-epoch curves for TensorBoard here')
    train.add_argument('--error-record', metavar='PATH', help=argparse.SUPPRESS)  # a sweep run's error.txt
    _add_launch_arguments(train, 'the run as one SLURM job through submitit, one rank per task (docs/distributed.md, '
                                 '"One command, one SLURM job")')
    train.add_argument('--dry-run', action='store_true',
                       help='slurm: print the job\'s parameters and the command each rank runs; submit nothing')
    train.set_defaults(func=_train)
    test = sub.add_parser('test', help="test the teacher and the recipe's best student checkpoint")
    _add_run_arguments(test)
    test.add_argument('--check', action='store_true', help=CHECK_HELP)
    test.set_defaults(func=_test)
    recipes = sub.add_parser('recipes', help='list the shipped recipes')
    recipes.add_argument('--debug', action='store_true', help='full tracebacks')
    recipes.set_defaults(func=_recipes)
    demo = sub.add_parser('demo', help='teacher + CE/KD/TTM/WTTM students on the bundled digits, offline')
    demo.add_argument('--out', default='demo_runs', help='folder for checkpoints, results and the figure')
    demo.add_argument('--seeds', type=int, nargs='+', metavar='N', help='student seeds (default: 0 1 2)')
    demo.add_argument('--epochs', type=int, metavar='N',
                      help='student epochs, also of --grid (default: the recipes\' 30)')
    demo.add_argument('--retrain-teacher', action='store_true', help='train the teacher again instead of reusing it')
    demo.add_argument('--grid', action='store_true',
                      help='instead: the validation-split hyperparameter grid behind the demo recipes')
    demo.add_argument('--debug', action='store_true', help='full tracebacks')
    demo.set_defaults(func=_demo)
    calibrate = sub.add_parser('calibrate', help="teacher NLL/ECE, temperature scaling T*, and gamma = 1/T*")
    _add_run_arguments(calibrate)
    calibrate.add_argument('--split', choices=('val', 'test'), default='val')
    calibrate.add_argument('-o', '--output', default='calibration', metavar='DIR', help='folder for JSON and PNG')
    calibrate.set_defaults(func=_calibrate)
    new = sub.add_parser('new-recipe', help='write a recipe for another teacher-student pair from an existing one')
    new.add_argument('--from', dest='base', required=True, metavar='RECIPE', help='base recipe (file or name)')
    new.add_argument('--teacher', required=True, metavar='KEY[:WEIGHTS]',
                     help='torchvision key[:weights name, default DEFAULT] or registry key:checkpoint file')
    new.add_argument('--student', required=True, metavar='KEY')
    new.add_argument('--method', required=True, metavar='METHOD',
                     help=f'{", ".join(m.name for m in logit_methods())}; a feature method '
                          f'({", ".join(m.name for m in feature_methods())}: a CIFAR-100 base and pair, cross entropy '
                          'plus its term); crd, itrd, reviewkd from a base of the same method; or a method that a '
                          "plugin of the base recipe's dependencies registers")
    new.add_argument('--gamma', type=float, help=f'{_meanings("gamma")}; default: the base recipe\'s where it means '
                                                 "the same, else the method's own")
    carries = ', '.join(m.name for m in logit_methods() + feature_methods() if m.beta_carries)
    new.add_argument('--beta', type=float, help=f'{_meanings("beta")}; default: the base recipe\'s for the same '
                                                f'method; needed when the method changes, except for {carries}')
    new.add_argument('-o', '--output', metavar='PATH', help='default: STUDENT_from_TEACHER.METHOD.yaml')
    new.add_argument('--force', action='store_true', help='overwrite PATH if it exists')
    new.add_argument('--debug', action='store_true', help='full tracebacks')
    new.set_defaults(func=_new_recipe)
    plot = sub.add_parser('plot', help='per-epoch curves (loss, lr, val top-1, TTM diagnostics) of runs, as a PNG')
    plot.add_argument('runs', nargs='+', metavar='RUN', help='metrics .jsonl, run log, --summary JSON or run folder')
    plot.add_argument('-o', '--output', default='runs.png', metavar='PNG')
    plot.add_argument('--debug', action='store_true', help='full tracebacks')
    plot.set_defaults(func=_plot)
    table = sub.add_parser('table', help='mean +- std of runs per recipe from --summary JSONs, beside the paper\'s '
                                         'top-1; or a sweep folder by recipe and grid point')
    table.add_argument('paths', nargs='+', metavar='PATH', help='--summary JSON files, or folders searched recursively')
    table.add_argument('--format', choices=('markdown', 'csv', 'json'), default='markdown')
    table.add_argument('-o', '--output', metavar='FILE', help='write the table here instead of printing it')
    table.add_argument('--debug', action='store_true', help='full tracebacks')
    table.set_defaults(func=_table)
    sweep = sub.add_parser('sweep', help='grid search over recipe values x seeds, or several recipes of one pair (a '
                                         'table row) x seeds, locally or as a SLURM job array')
    sweep.add_argument('recipes', nargs='+', metavar='RECIPE',
                       help='recipe file, or a shipped recipe name; several: recipes of one teacher-student pair and '
                            'dataset, each in DIR/<label>/ (its method folder or file stem), each one point without '
                            '--grid')
    sweep.add_argument('--grid', action='append', default=[], metavar='NAME=V1,V2,...',
                       help=f'a short name ({", ".join(short_names())}: the parameter of the recipe\'s loss term that '
                            'has it) or a full --set key; repeatable: the grid is the cross product (required with '
                            'one recipe)')
    sweep.add_argument('--seeds', type=int, nargs='+', default=[0, 1], metavar='N', help='seeds per point (0 1)')
    sweep.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                       help='override a recipe value in every run (VALUE is YAML); repeatable')
    sweep.add_argument('-o', '--output', required=True, metavar='DIR', help='sweep folder; re-running continues it')
    sweep.add_argument('--parallel', type=int, metavar='N',
                       help='runs at a time (local default: one per visible GPU, 1 on CPU; slurm: array %%N)')
    sweep.add_argument('--runs-per-gpu', type=int, metavar='N',
                       help='local: N runs (lockstep groups) at once on each visible GPU (default 1); ignored, with a '
                            'note, on CPU')
    sweep.add_argument('--lockstep', action='store_true',
                       help="train each seed's points together in one process: one data loader and one teacher "
                            'forward per batch feed every student (the grid may vary loss parameters only; recipes '
                            'that differ in more than train.criterion train in groups of their own). Each '
                            "point's files and, on the CPU, its weights are what it would get alone, dropout "
                            'included; memory grows by one student, its optimizer and its loss state per point')
    sweep.add_argument('--group-size', type=int, metavar='N',
                       help='--lockstep: at most N points per group (default: all points of a seed); lower it when '
                            "a group's students do not fit in memory together")
    _add_launch_arguments(sweep, 'one SLURM job array through submitit, a task per run (with --nodes / '
                                 '--gpus-per-node: a distributed job per run)')
    sweep.add_argument('--dry-run', action='store_true', help='print the runs (and SLURM parameters), change nothing')
    sweep.add_argument('--debug', action='store_true', help='full tracebacks')
    sweep.set_defaults(func=_sweep)
    lockstep = sub.add_parser('lockstep', help='train runs of a sweep folder in lockstep (what `sweep --lockstep` '
                                               'starts for each group)')
    lockstep.add_argument('directory', metavar='DIR', help='the sweep folder (its sweep.json lists the runs)')
    lockstep.add_argument('runs', nargs='+', metavar='RUN',
                          help='runs of the sweep, named POINT/seedK (several recipes: LABEL/POINT/seedK, LABEL/seedK)')
    lockstep.add_argument('--debug', action='store_true', help='full tracebacks')
    lockstep.set_defaults(func=_lockstep)
    return parser


def command() -> NoReturn:
    """The `ttm-distill` executable and `python -m ttm_torchdistill`: main(), then exit(its code)."""
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with ``code`` as the interpreter does, without freeing every object first: the ~340,000 objects of torch
    and torchvision take 0.7-0.9 s of CPU to tear down, in every command and in each sweep run, rank and SLURM task.

    What an exit must do still happens: the atexit handlers run (logging's flush and close, multiprocessing's children,
    weakref finalizers such as temporary folders) and the standard streams are flushed. While a thread that is not a
    daemon still runs, the interpreter's own exit waits for it as usual."""
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader has gone: as the interpreter's own exit would say
        os._exit(120)
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    trains_here = args.command == 'lockstep' or (args.command == 'train' and args.launcher == 'local')
    previous = catch_stop_signal() if trains_here else {}
    try:
        return _run(args)
    finally:
        restore_signals(previous)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command: its errors end in one line and an exit code."""
    # recipes written for GPUs ask for pinned memory; on a CPU-only machine that is only noise
    warnings.filterwarnings('ignore', message=".*'pin_memory' argument is set as true but no accelerator")
    try:
        return args.func(args)
    except TrainingStopped as exc:
        print(f'ttm-distill: {exc}', file=sys.stderr)
        return exc.exit_code
    except COMMAND_ERRORS as exc:
        if getattr(args, 'debug', False):
            raise
        print(f'ttm-distill: error: {exc}', file=sys.stderr)
        record_error(getattr(args, 'error_record', None), exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print('ttm-distill: interrupted', file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if getattr(args, 'debug', False) or not _peer_failed(exc):
            raise
        return 1  # another rank failed and said why; this one stops quietly


PEER_GONE = ('Connection closed by peer', 'Connection reset by peer', 'remote worker crashing')
"""what Gloo says on the ranks left in a collective when another rank's process ends"""


def _peer_failed(exc: RuntimeError) -> bool:
    """Under torchrun, a collective that failed because another rank's process ended (with its own error)."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and any(s in str(exc) for s in PEER_GONE)
