"""A training run's lifecycle and the one epoch loop: each run (a *member*) is set up (outputs checked, built, checked
before any work, resumed, its log opened), trained epoch by epoch and finished (its test pass and summary). A lone
`ttm-distill train` is a group of one; `ttm-distill lockstep` trains several runs that differ only in their loss as
one group (:mod:`.lockstep`), where one training loader and one teacher forward per batch feed every student.

Lockstep exactness: every member is built as it would be alone (the seed set before its recipe is built), and each
member's share of an iteration (its step, its epoch's end) starts from the same random number generators' state, the
one the shared loader and teacher left; the group continues from the state the members end in. A member's weights are
therefore bit-identical to the same run trained alone (on the CPU) whenever the members draw alike. Where they do not
(a loss that draws by its value), a warning says so once. A lockstep member that diverges or whose step fails stops
alone, as it would alone; members resumed from different epochs train as consecutive sub-groups. A lone run's errors
are the command's.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..description import RunDescription
from ..errors import OutputError, TrainingDiverged, TrainingFailed, TrainingStopped, UsageError, one_line
from ..outputs import record_error
from .build import CACHED_TEACHER
from .checkpoint import rng_state, set_rng_state
from .claim import check_outputs
from .compiled import mark_step
from .distributed import DistContext, all_gather_objects
from .logs import logger, member_lines
from .preflight import STEP_ERRORS, check_one_batch, check_training
from .report import report_training
from .run import Run, seed_everything
from .stop import StopAgreement
from .tensorboard import EpochWriter
from .tensorboard import require as require_tensorboard
from .trainer import Trainer

__all__ = ['Group', 'Member']

MEMBER_ERRORS = (UsageError, TrainingDiverged, TrainingFailed, OutputError)
"""what stops one lockstep member alone (as it would stop that run alone)"""


def _same_rng(a: dict, b: dict) -> bool:
    return (torch.equal(a['torch'], b['torch']) and len(a['cuda']) == len(b['cuda'])
            and all(torch.equal(x, y) for x, y in zip(a['cuda'], b['cuda'], strict=True))
            and a['python'] == b['python'] and a['numpy'][2:] == b['numpy'][2:]
            and np.array_equal(a['numpy'][1], b['numpy'][1]))


def _place(member: Member) -> tuple[int, int]:
    """(epoch, iteration) where a member's training starts: resumed inside an epoch, or at an epoch's start."""
    position = member.trainer.position
    return member.trainer.start_epoch, position['iteration'] if position is not None else 0


@dataclass(eq=False)
class Member:
    """One run of the group."""

    opts: RunDescription
    name: str = ''
    """how its lines are marked in a lockstep group"""
    console: str | None = None
    """where its console lines go (with the group's), appended to"""
    console_handler: logging.Handler | None = None
    handlers: list[logging.Handler] = field(default_factory=list)
    """its console's and its run log's"""
    run: Run | None = None
    trainer: Trainer | None = None
    curves: EpochWriter | None = None
    failed: bool = False
    result: dict | None = None
    """its summary (or `--check`'s result) once it finished"""

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


class Group:
    """Members trained together: ``lockstep`` shares the training batches and the teacher's forward among them and
    isolates their failures; else the group is one run alone."""

    def __init__(self, members: list[Member], ctx: DistContext, lockstep: bool) -> None:
        if not lockstep and len(members) != 1:
            raise ValueError('a group of several runs trains in lockstep')
        self.members, self.ctx, self.lockstep = members, ctx, lockstep
        self.active: list[Member] = []
        self.warned = False
        self.stop = StopAgreement(ctx)
        self.teacher_owner: Member | None = None
        """the member whose box runs the teacher forward every member shares (the first one built, in lockstep)"""

    # --- the lifecycle ----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Set up, train and finish every member; 0 when every member finished, 1 when one failed. A lone run's
        error is raised."""
        self.started = time.perf_counter()
        try:
            self._build()
            if self.active:
                self._train()
            for member in self.members:
                if member.trainer is not None and not member.failed and not member.opts.check:
                    member.trainer.box.clean_modules()
        finally:
            for member in self.members:
                self._close(member)
                for handler in member.handlers:
                    logger.removeHandler(handler)
                    handler.close()
        return 1 if any(m.failed for m in self.members) else 0

    def _lines(self, member: Member) -> contextlib.AbstractContextManager:
        """The lines logged inside are ``member``'s (marked in a lockstep group)."""
        return member_lines(member.name) if self.lockstep else contextlib.nullcontext()

    def _build(self) -> None:
        """Set up each member as it would be set up alone; lockstep members then share the first one's datasets and
        teacher."""
        leader: Member | None = None
        for member in self.members:
            with self._lines(member), self._isolated(member):
                self._set_up(member, leader)
                if member.result is None:
                    self.active.append(member)
                leader = leader or member
        if self.lockstep and leader is not None and leader.run.teacher is not None:
            self.teacher_owner = leader

    def _set_up(self, member: Member, leader: Member | None) -> None:
        opts = member.opts
        if opts.tensorboard:
            require_tensorboard('--tensorboard')  # before the lock or anything else is made
        check_outputs(opts)
        run = member.run = Run(opts, self.ctx, train=True)
        if leader is not None:  # built as alone, so the random draws match; then the shared parts replace its own
            run.config['datasets'] = leader.run.config['datasets']
            run.teacher = leader.run.teacher
        trainer = member.trainer = Trainer(run)
        if self.lockstep and run.teacher is not None and any(p.requires_grad for p in run.teacher.parameters()):
            raise UsageError(f'{run.recipe_path}: models.teacher_model learns in this recipe (train.teacher '
                             'requires_grad without frozen_modules), so its forward cannot be shared: train it without '
                             '--lockstep')
        check_training(run, trainer.box)
        if opts.resume:
            trainer.resume()
        if opts.check:
            member.result = check_one_batch(run, trainer.box)
            return
        member.add_handler(trainer.open_log(member.name if self.lockstep else None))

    @contextlib.contextmanager
    def _isolated(self, member: Member) -> Iterator[None]:
        """A lockstep member's error stops that member only: its line on its console, its lock freed."""
        if not self.lockstep:
            yield
            return
        try:
            yield
        except MEMBER_ERRORS as exc:
            self._fail(member, exc)

    def _fail(self, member: Member, exc: BaseException) -> None:
        member.failed = True
        if member in self.active:
            self.active.remove(member)
        member.say(f'ttm-distill: error: {exc}')
        record_error(member.opts.error_record, exc)
        self._close(member)

    def _close(self, member: Member) -> None:
        if member.curves is not None:
            member.curves.close()
            member.curves = None
        if member.run is not None:
            member.run.release()

    def _train(self) -> None:
        """Train the members, those resumed from the same epoch together, the least advanced first."""
        for place in sorted({_place(m) for m in self.active}):
            sub = [m for m in self.active if _place(m) == place]
            start = place[0]
            self._start_streams(sub)
            for member in sub:
                if member.opts.tensorboard and self.ctx.is_main:
                    member.curves = EpochWriter(member.opts.tensorboard)
                with self._lines(member):
                    self._say_training(member, sub)
            self._fit(sub, start)
            for member in sub:
                if not member.failed:
                    self._finish(member)

    def _say_training(self, member: Member, sub: list[Member]) -> None:
        run, epochs = member.run, member.trainer.box.num_epochs
        if not self.lockstep:
            logger.info('training %s on %d process(es), device %s, %d epochs', run.name, self.ctx.world_size,
                        self.ctx.device.type, epochs)
            self._say_ranks(member)
            return
        others = [m.name for m in sub if m is not member]
        logger.info('training %s %s, device %s, %d epochs', run.name,
                    f'in lockstep with {len(others)} other run(s) ({", ".join(others)})' if others
                    else 'alone (the only run of its lockstep group)', self.ctx.device.type, epochs)

    def _say_ranks(self, member: Member) -> None:
        """With several processes: the world size, the global batch and where each rank runs."""
        ctx = self.ctx
        if not ctx.distributed:
            return
        places = all_gather_objects(f'{socket.gethostname()}:{ctx.device}')
        batch = member.trainer.box.train_data_loader.batch_size
        hosts = len(dict.fromkeys(place.rsplit(':', 2)[0] for place in places))
        logger.info('world size %d on %d host(s); global batch %s = %s per process x %d; devices: %s',
                    ctx.world_size, hosts, batch * ctx.world_size if batch else 'n/a', batch, ctx.world_size,
                    ', '.join(f'rank {rank} {place}' for rank, place in enumerate(places)))

    def _finish(self, member: Member) -> None:
        """The member's end, as alone: the test pass (unless skipped), its summary."""
        with self._lines(member), self._isolated(member):
            if member.curves is not None:
                member.curves.close()
                member.curves = None
            member.result = report_training(member.run, member.trainer, time.perf_counter() - self.started)
            self._close(member)

    # --- the random number generators -------------------------------------------------------------------------
    def _start_streams(self, sub: list[Member]) -> None:
        """The random number generators as each member would start training alone: seeded afresh (per rank), or
        where its checkpoint left them."""
        first = sub[0]
        if first.trainer.resumed_rng is None:
            if first.opts.seed is not None:
                seed_everything(first.opts.seed + self.ctx.rank)  # per-rank augmentation streams after the same init
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
        """``action(member, *args)`` on each live member; in a group of several, each from the same random number
        generators' state, the group going on from the state the members end in (the first's; a warning where
        they differ)."""
        live = [m for m in members if not m.failed]
        if len(live) == 1:
            with self._lines(live[0]), self._isolated(live[0]):
                action(live[0], *args)
            return
        start = rng_state(self.ctx.device)
        ends = []
        for member in live:
            set_rng_state(start, self.ctx.device)
            with self._lines(member), self._isolated(member):
                action(member, *args)
                ends.append(rng_state(self.ctx.device))
        if any(not _same_rng(ends[0], end) for end in ends[1:]):
            self._warn_streams('the runs drew different amounts of random numbers in one step')
        set_rng_state(ends[0] if ends else start, self.ctx.device)

    # --- the epoch loop ---------------------------------------------------------------------------------------
    def _fit(self, sub: list[Member], start: int) -> None:
        """The package's one epoch loop: epochs ``start`` .. the recipe's last, each member stepped on every batch of
        the first member's training loader, then each member's epoch end (validation, checkpoints, metrics).

        A stop request (:mod:`.stop`) ends it after a step, with a resume checkpoint of each member's place in the
        epoch, or at an epoch's start, where the last checkpoint is the one the previous epoch wrote. A member resumed
        inside an epoch replays the loader's batches up to its place (data only): the loader's random streams then
        continue as they were."""
        trainer0 = sub[0].trainer
        loader = trainer0.box.train_data_loader
        position = trainer0.position
        for epoch in range(start, trainer0.box.num_epochs):
            live = [m for m in sub if not m.failed]
            if not live:
                return
            if self.stop.agreed():
                self._stopped(live, epoch, 0)
            replay, resumed_rng = 0, None
            if position is not None and epoch == start:  # the generators as the epoch began, then as it stopped
                resumed_rng = rng_state(self.ctx.device)
                set_rng_state(position['epoch_rng'], self.ctx.device)
                replay = position['iteration']
            epoch_rng = rng_state(self.ctx.device)
            self._each(live, lambda m, e: m.trainer.begin_epoch(e, len(loader)), epoch)
            if replay:
                for member in live:
                    member.trainer.continue_epoch()
            with trainer0.stopping_in(epoch):
                for it, (images, targets, supp_dict) in enumerate(trainer0.run.batches(loader, 'train')):
                    if it < replay:
                        continue
                    if it == replay and resumed_rng is not None:
                        set_rng_state(resumed_rng, self.ctx.device)
                        resumed_rng = None
                    mark_step(trainer0.opts.compile)
                    images, targets = trainer0.to_device(images, targets)
                    supp_dict = self._teacher_outputs(sub, images, targets, supp_dict, epoch, it)
                    self._each(live, lambda m, *batch: m.trainer.step(*batch), it, images, targets, supp_dict)
                    if self.stop.agreed():
                        self._each(live, lambda m, *place: m.trainer.save_position(*place), epoch, it + 1, epoch_rng)
                        self._stopped(live, epoch, it + 1)
            if resumed_rng is not None:  # stopped after the epoch's last step: every batch was replayed
                set_rng_state(resumed_rng, self.ctx.device)
            self._each(live, lambda m, e: m.trainer.end_epoch(e, m.curves), epoch)

    def _stopped(self, live: list[Member], epoch: int, done: int) -> None:
        """Every rank stops here, after iteration ``done`` of ``epoch`` (0: before its first step)."""
        where = (f'inside epoch {epoch + 1}, after iteration {done} of {live[0].trainer.num_iters}' if done
                 else f'after epoch {epoch}' if epoch else 'before its first epoch')
        ckpts = ', '.join(str(m.run.last_ckpt) for m in live if m.run.last_ckpt.is_file())
        kept = (f'{"the resume checkpoint is" if done else "the last checkpoint is kept:"} {ckpts}; --resume continues '
                'it exactly' if ckpts else 'nothing to resume: it starts afresh')
        message = f'stopped by {self.stop.name} {where} (every rank finished its step); {kept}'
        logger.info(message)
        raise TrainingStopped(message)

    def _teacher_outputs(self, sub: list[Member], images: torch.Tensor, targets: torch.Tensor, supp_dict: dict,
                         epoch: int, it: int) -> dict:
        """The batch's supplementary dict with the teacher's outputs, computed once for a lockstep group (a lone run's
        box runs its teacher itself)."""
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
