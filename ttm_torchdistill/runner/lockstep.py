"""Runs that differ only in their loss, trained in lockstep in one process: one training loader and one teacher
forward per batch feed every run's student.

Each run (a *member*) keeps what it would have alone: its model, optimizer, scheduler, loss (with its state: CRD's
memory bank, ITRD's embedding), non-finite checks, checkpoints, metrics, run log, summary and curves. What they share
is what is the same for all: the datasets, the training loader's batches and the frozen teacher's forward, whose
outputs reach each member's box as ``supp_dict['cached_data']`` (see :mod:`.build`).

Exactness: every member is built as it would be alone (the seed set before its recipe is built), and each member's
share of an iteration (its step, its epoch's end) starts from the same random number generators' state, the one
the shared loader and teacher left; the group continues from the state the members end in. A member's weights are
therefore bit-identical to the same run trained alone (on the CPU) whenever the members draw alike, which they do
when they differ only in loss values: the same dropout masks, the same number of draws. Where they do not (a loss
that draws by its value), a warning says so once.

Isolation: a member that diverges or whose step fails stops alone, as it would alone (its error line, its last
checkpoint kept); the others go on. Members resumed from different epochs train as consecutive sub-groups.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..description import RunDescription
from ..errors import OutputError, TrainingDiverged, TrainingFailed, UsageError, one_line
from ..recipe import RecipeDocument, parse_overrides, resolve_recipe
from .build import CACHED_TEACHER
from .checkpoint import rng_state, set_rng_state
from .commands import check_outputs
from .distributed import DistContext, setup_distributed, teardown
from .logs import log_to_file, logger, member_lines, setup_logging
from .preflight import STEP_ERRORS
from .report import report_training
from .run import Run, seed_everything
from .tensorboard import EpochWriter
from .tensorboard import require as require_tensorboard
from .trainer import Trainer

__all__ = ['LOSS_SECTION', 'SHARED_OPTIONS', 'group_difference', 'run_lockstep']

LOSS_SECTION = 'train.criterion'
"""the recipe part in which the members of a group may differ: the loss terms' kwargs and weights"""
SHARED_OPTIONS = ('command', 'device', 'seed', 'amp', 'channels_last', 'compile', 'test', 'check')
"""the run options every member of a group must share"""
MEMBER_ERRORS = (UsageError, TrainingDiverged, TrainingFailed, OutputError)
"""what stops one member alone (as it would stop that run alone)"""


def group_difference(docs: list[RecipeDocument]) -> tuple[int, str] | None:
    """(index, key) of the first recipe that differs from the first outside the loss (its output path aside), or
    None: the recipes may train in lockstep."""
    first = docs[0].scalars(ignores=('dst_ckpt',))
    for index, doc in enumerate(docs[1:], 1):
        other = doc.scalars(ignores=('dst_ckpt',))
        for key in [*first, *(k for k in other if k not in first)]:
            in_loss = key == LOSS_SECTION or key.startswith(LOSS_SECTION + '.')
            if not in_loss and first.get(key) != other.get(key):
                return index, key.removesuffix('.!')
    return None


def _same_rng(a: dict, b: dict) -> bool:
    return (torch.equal(a['torch'], b['torch']) and len(a['cuda']) == len(b['cuda'])
            and all(torch.equal(x, y) for x, y in zip(a['cuda'], b['cuda'], strict=True))
            and a['python'] == b['python'] and a['numpy'][2:] == b['numpy'][2:]
            and np.array_equal(a['numpy'][1], b['numpy'][1]))


@dataclass(eq=False)
class Member:
    """One run of the group."""

    opts: RunDescription
    name: str
    console: str | None
    """where its console lines go (with the group's), appended to"""
    console_handler: logging.Handler | None = None
    handlers: list[logging.Handler] = field(default_factory=list)
    """its console's and its run log's"""
    run: Run | None = None
    trainer: Trainer | None = None
    curves: EpochWriter | None = None
    failed: bool = False

    def say(self, line: str) -> None:
        """A line on its console as the command line prints it (``ttm-distill: error: ...``), and on the group's."""
        print(f'{line} [{self.name}]', file=sys.stderr, flush=True)
        if self.console_handler is not None:
            self.console_handler.stream.write(line + '\n')
            self.console_handler.flush()

    def add_handler(self, handler: logging.Handler | None) -> logging.Handler | None:
        if handler is not None:
            self.handlers.append(handler)
        return handler


class LockstepGroup:
    def __init__(self, members: list[Member], ctx: DistContext) -> None:
        self.members, self.ctx = members, ctx
        self.active: list[Member] = []
        self.warned = False
        self.teacher_owner: Member | None = None
        """the member whose box runs the teacher forward every member shares (the first one built)"""

    # --- building -------------------------------------------------------------------------------------------
    def build(self) -> None:
        """Build each member as it would be built alone, then let it share the first one's datasets and teacher."""
        leader: Member | None = None
        for member in self.members:
            with member_lines(member.name), self._isolated(member):
                self._build(member, leader)
                self.active.append(member)
                leader = leader or member
        if leader is not None and leader.run.teacher is not None:
            self.teacher_owner = leader

    def _build(self, member: Member, leader: Member | None) -> None:
        opts = member.opts
        if opts.tensorboard:
            require_tensorboard('--tensorboard')
        check_outputs(opts)
        run = member.run = Run(opts, self.ctx, train=True)
        if leader is not None:  # built as alone, so the random draws match; then the shared parts replace its own
            run.config['datasets'] = leader.run.config['datasets']
            run.teacher = leader.run.teacher
        trainer = member.trainer = Trainer(run)
        if run.teacher is not None and any(p.requires_grad for p in run.teacher.parameters()):
            raise UsageError(f'{run.recipe_path}: models.teacher_model learns in this recipe (train.teacher '
                             'requires_grad without frozen_modules), so its forward cannot be shared: train it without '
                             '--lockstep')
        if opts.resume:
            trainer.resume()
        member.add_handler(trainer.open_log(member.name))

    @contextlib.contextmanager
    def _isolated(self, member: Member) -> Iterator[None]:
        """A member's error stops that member only: its line on its console, its lock freed."""
        try:
            yield
        except MEMBER_ERRORS as exc:
            self._fail(member, exc)

    def _fail(self, member: Member, exc: BaseException) -> None:
        member.failed = True
        if member in self.active:
            self.active.remove(member)
        member.say(f'ttm-distill: error: {exc}')
        self._close(member)

    def _close(self, member: Member) -> None:
        if member.curves is not None:
            member.curves.close()
            member.curves = None
        if member.run is not None:
            member.run.release()

    # --- training -------------------------------------------------------------------------------------------
    def train(self) -> None:
        """Train the members, those resumed from the same epoch together, the least advanced first."""
        starts = sorted({m.trainer.start_epoch for m in self.active})
        for start in starts:
            sub = [m for m in self.active if m.trainer.start_epoch == start]
            self._start_streams(sub)
            for member in sub:
                if member.opts.tensorboard and self.ctx.is_main:
                    member.curves = EpochWriter(member.opts.tensorboard)
                others = [m.name for m in sub if m is not member]
                with member_lines(member.name):
                    logger.info('training %s %s, device %s, %d epochs', member.run.name,
                                f'in lockstep with {len(others)} other run(s) ({", ".join(others)})' if others
                                else 'alone (the only run of its lockstep group)', self.ctx.device.type,
                                member.trainer.box.num_epochs)
            self._fit(sub, start)
            for member in sub:
                if not member.failed:
                    self._finish(member)

    def _start_streams(self, sub: list[Member]) -> None:
        """The random number generators as each member would start training alone: seeded afresh, or where its
        checkpoint left them."""
        first = sub[0]
        if first.trainer.resumed_rng is None:
            if first.opts.seed is not None:
                seed_everything(first.opts.seed + self.ctx.rank)
            return
        set_rng_state(first.trainer.resumed_rng, self.ctx.device)
        if any(not _same_rng(first.trainer.resumed_rng, m.trainer.resumed_rng) for m in sub[1:]):
            self._warn_streams('their checkpoints hold different random number generator states')

    def _warn_streams(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            logger.warning('lockstep: %s, so from here on the runs are not bit-identical to training each alone '
                           '(each still trains correctly on the shared batches)', why)

    def _each(self, members: list[Member], action: Callable[..., None], *args: object) -> None:
        """``action(member, *args)`` on each live member, each from the same random number generators' state; the
        group goes on from the state the members end in (the first's; a warning where they differ)."""
        start = rng_state(self.ctx.device)
        ends = []
        for member in [m for m in members if not m.failed]:
            set_rng_state(start, self.ctx.device)
            with member_lines(member.name), self._isolated(member):
                action(member, *args)
                ends.append(rng_state(self.ctx.device))
        if any(not _same_rng(ends[0], end) for end in ends[1:]):
            self._warn_streams('the runs drew different amounts of random numbers in one step')
        set_rng_state(ends[0] if ends else start, self.ctx.device)

    def _fit(self, sub: list[Member], start: int) -> None:
        trainer0 = sub[0].trainer
        loader = trainer0.box.train_data_loader
        for epoch in range(start, trainer0.box.num_epochs):
            live = [m for m in sub if not m.failed]
            if not live:
                return
            self._each(live, lambda m, e: m.trainer.begin_epoch(e), epoch)
            for member in live:
                member.trainer.start_steps(epoch, len(loader))
            with trainer0.stopping_in(epoch):
                for it, (images, targets, supp_dict) in enumerate(trainer0.run.batches(loader, 'train')):
                    images, targets = trainer0.to_device(images, targets)
                    supp_dict = self._teacher_outputs(sub, images, targets, supp_dict, epoch, it)
                    self._each(live, lambda m, *batch: m.trainer.step(*batch), it, images, targets, supp_dict)
            self._each(live, self._end_epoch, epoch)

    def _end_epoch(self, member: Member, epoch: int) -> None:
        trainer = member.trainer
        stats = trainer.finish_steps()
        with trainer.stopping_in(epoch):
            val = trainer.validate(epoch)
        trainer.end_epoch(epoch, stats, val, member.curves)

    def _teacher_outputs(self, sub: list[Member], images: torch.Tensor, targets: torch.Tensor, supp_dict: dict,
                         epoch: int, it: int) -> dict:
        """The batch's supplementary dict with the teacher's outputs, computed once for the group."""
        if self.teacher_owner is None:
            return supp_dict
        box, run = self.teacher_owner.trainer.box, self.teacher_owner.run
        try:
            with torch.no_grad(), run.autocast():
                outputs = box.teacher_forward_proc(box.teacher_model, images, targets, supp_dict)
        except STEP_ERRORS as exc:
            raise TrainingFailed(f'{run.recipe_path}: models.teacher_model ({run.teacher_config.get("key")}): the '
                                 f'shared teacher forward at epoch {epoch + 1}, iteration {it + 1} fails: '
                                 f'{type(exc).__name__}: {one_line(exc)[:300]}') from None
        if it == 0:
            self._check_teacher_hooks(sub)
        return {**supp_dict, CACHED_TEACHER: outputs}

    def _check_teacher_hooks(self, sub: list[Member]) -> None:
        """What the shared forward's hooks caught for each member: the same modules as for the first (a hook on a
        module of a member's own teacher wrapper, run in its forward, would catch nothing)."""
        def caught(member: Member) -> set[tuple[str, str]]:
            return {(path, io) for path, d in member.trainer.box.teacher_io_dict.items() for io in d}

        want = caught(self.teacher_owner)
        for member in sub:
            if not member.failed and caught(member) != want:
                missing = sorted(want - caught(member))
                raise UsageError(f'{member.run.recipe_path}: train.teacher.forward_hook catches '
                                 f'{missing[0][0] if missing else "a module"} in the teacher\'s auxiliary wrapper, '
                                 'which each run runs for itself: the teacher\'s forward cannot be shared; train '
                                 'these runs without --lockstep')

    def _finish(self, member: Member) -> None:
        """The member's end, as alone: modules cleaned, the test pass (unless skipped), its summary."""
        with member_lines(member.name), self._isolated(member):
            if member.curves is not None:
                member.curves.close()
                member.curves = None
            report_training(member.run, member.trainer, time.perf_counter() - self.started)
            self._close(member)

    def run(self) -> int:
        """Build, train and report; 0 when every member finished, 1 when one failed."""
        self.started = time.perf_counter()
        try:
            self.build()
            if self.active:
                self.train()
            for member in self.members:
                if member.trainer is not None and not member.failed:
                    member.trainer.box.clean_modules()
        finally:
            for member in self.members:
                self._close(member)
                for handler in member.handlers:
                    logger.removeHandler(handler)
                    handler.close()
        return 1 if any(m.failed for m in self.members) else 0


def _check_group(descriptions: list[RunDescription], names: list[str]) -> None:
    """Refuse members that may not share a group: options or recipe parts other than the loss differ."""
    first = descriptions[0]
    if first.command != 'train' or first.check or first.compile:
        raise UsageError('lockstep: only training runs, without --check and --compile, train in lockstep')
    for opts, name in zip(descriptions[1:], names[1:], strict=True):
        differ = next((k for k in SHARED_OPTIONS if getattr(opts, k) != getattr(first, k)), None)
        if differ is not None:
            raise UsageError(f'lockstep: runs {names[0]} and {name} differ in their {differ} ({getattr(first, differ)}'
                             f' vs {getattr(opts, differ)}); a lockstep group shares one')
    docs = [RecipeDocument.open(resolve_recipe(d.recipe), parse_overrides(d.overrides)) for d in descriptions]
    found = group_difference(docs)
    if found is not None:
        index, key = found
        raise UsageError(f'lockstep: runs {names[0]} and {names[index]} differ at {key}, outside {LOSS_SECTION}: '
                         'a lockstep group shares its model, data, batch size, optimizer, schedule and seed, and its '
                         "runs may differ only in the loss terms' kwargs and weights")


def run_lockstep(descriptions: list[RunDescription], names: list[str], consoles: list[str | None]) -> int:
    """Train the runs of ``descriptions`` in lockstep in this process (``names``: how their lines are marked;
    ``consoles``: a file per run for its console lines, or None). Returns 0 when all finished, 1 when one failed
    (the others finished); a group-wide error (its data, its teacher's forward) raises."""
    if not descriptions:
        raise UsageError('lockstep: no runs given')
    _check_group(descriptions, names)
    first = descriptions[0]
    ctx = setup_distributed(first.device)
    try:
        if ctx.world_size > 1:
            raise UsageError('lockstep: a group trains in one process; start it without torchrun')
        setup_logging(ctx, debug=first.debug, quiet=first.quiet)
        members = [Member(opts, name, console) for opts, name, console in zip(descriptions, names, consoles,
                                                                             strict=True)]
        for member in members:
            if member.console:
                member.console_handler = member.add_handler(log_to_file(ctx, member.console, True, member.opts.debug,
                                                                        member=member.name, console=True))
        return LockstepGroup(members, ctx).run()
    finally:
        teardown()
