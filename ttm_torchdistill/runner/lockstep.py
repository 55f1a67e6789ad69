"""Runs that differ only in their loss, trained in lockstep in one process (`ttm-distill lockstep`, what `sweep
--lockstep` starts for each group): which runs may share a group (the same recipe with other loss values, or recipes
that differ only in ``train.criterion``, e.g. KD, TTM and WTTM recipes of one pair), and the group's command. Each
member builds its own loss from its own recipe; the group itself is
:mod:`.loop`'s: one training loader and one teacher forward per batch feed every run's student, each run keeping what
it would have alone (its model, optimizer, scheduler, loss and its state, checks, checkpoints, metrics, run log,
summary and curves) and stopping alone when it fails.
"""
from __future__ import annotations

from ..description import RunDescription
from ..errors import COMMAND_ERRORS, UsageError
from ..outputs import record_error
from ..recipe import RecipeDocument, parse_overrides, resolve_recipe
from .distributed import setup_distributed, teardown
from .logs import log_to_file, setup_logging
from .loop import Group, Member

__all__ = ['LOSS_SECTION', 'NOTES_SECTION', 'SHARED_OPTIONS', 'group_difference', 'run_lockstep']

LOSS_SECTION = 'train.criterion'
"""the recipe part in which the members of a group may differ: their loss (its terms, their kwargs and weights)"""
NOTES_SECTION = 'paper'
"""the recipe part that does not change training either (what the paper reports), in which members may differ"""
SHARED_OPTIONS = ('command', 'device', 'seed', 'amp', 'channels_last', 'compile', 'test', 'check')
"""the run options every member of a group must share"""


def _shared(key: str) -> bool:
    """Whether a recipe key is one that the members of a group share (outside the loss and the paper's notes)."""
    return not any(key == section or key.startswith(section + '.') for section in (LOSS_SECTION, NOTES_SECTION))


def group_difference(docs: list[RecipeDocument]) -> tuple[int, str] | None:
    """(index, key) of the first recipe that differs from the first outside the loss (its output path and the paper's
    notes aside), or None: the recipes may train in lockstep."""
    first = docs[0].scalars(ignores=('dst_ckpt',))
    for index, doc in enumerate(docs[1:], 1):
        other = doc.scalars(ignores=('dst_ckpt',))
        for key in [*first, *(k for k in other if k not in first)]:
            if _shared(key) and first.get(key) != other.get(key):
                return index, key.removesuffix('.!')
    return None


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
                         f'runs may differ only in their loss ({LOSS_SECTION})')


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
        try:
            return Group(members, ctx, lockstep=True).run()
        except COMMAND_ERRORS as exc:  # the group's own (its data, its teacher's forward), each unfinished run's
            for member in members:
                if member.result is None and not member.failed:
                    record_error(member.opts.error_record, exc)
            raise
    finally:
        teardown()
