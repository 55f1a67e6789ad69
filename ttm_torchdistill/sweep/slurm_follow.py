"""`train --launcher slurm --wait`: follow a training job to its end (its state changes and rank 0's console lines as
they come, across requeues) and end with the run's status: 0 when every rank finished, else the run's one-line
error (the rank that was killed, the run's own error line, or the state the job ended in) and a non-zero code."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ['exit_records', 'follow_job', 'job_state']

POLL_S = 2.0
QUEUE_MISSES = 3
"""polls in a row that do not find the job before it counts as gone (a passing squeue failure is not an end)"""
FINAL = frozenset({'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL',
                   'DEADLINE', 'PREEMPTED', 'SPECIAL_EXIT'})
"""states a job does not leave by itself (SLURM requeues a PREEMPTED or NODE_FAIL job where the partition asks)"""


def job_state(job_id: str) -> tuple[str | None, int]:
    """(the job's state, how many times it was requeued) as scontrol shows it; (None, 0) once SLURM forgot it."""
    try:
        out = subprocess.run(['scontrol', 'show', 'job', '-o', str(job_id)], capture_output=True, text=True,
                             timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return None, 0
    state = re.search(r'\bJobState=(\S+)', out.stdout)
    restarts = re.search(r'\bRestarts=(\d+)', out.stdout)
    return (state.group(1) if state and out.returncode == 0 else None), int(restarts.group(1)) if restarts else 0


def exit_records(folder: Path, job_id: str) -> dict[int, dict]:
    """Each rank's exit record of the job (written by its task as its rank ended), by rank."""
    records = {}
    for path in folder.glob(f'{job_id}.rank*.exit.json'):
        try:
            record = json.loads(path.read_text())
            records[int(record['rank'])] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def _print_new(log: Path, offset: int) -> int:
    """Print what ``log`` holds past ``offset``; returns the new offset (0 again when the file was started anew)."""
    try:
        size = log.stat().st_size
    except OSError:
        return offset
    if size < offset:
        offset = 0
    if size > offset:
        with log.open('rb') as f:
            f.seek(offset)
            sys.stdout.write(f.read(size - offset).decode(errors='replace'))
            sys.stdout.flush()
    return size


def follow_job(job_id: str, folder: Path, world: int) -> int:
    """Follow job ``job_id`` (its task logs and records in ``folder``, ``world`` ranks) to its end."""
    log = folder / f'{job_id}_0_log.out'
    offset, seen, restarts, misses = 0, None, 0, 0
    while True:
        state, count = job_state(job_id)
        offset = _print_new(log, offset)
        if state is not None and (state, count) != (seen, restarts):
            again = f', requeued {count} time(s)' if count else ''
            print(f'SLURM job {job_id}: {state}{again}', flush=True)
            seen, restarts = state, count
        if state is None:
            misses += 1
            if misses >= QUEUE_MISSES:
                break
        elif state in FINAL:
            break
        else:
            misses = 0
        time.sleep(POLL_S)
    _print_new(log, offset)
    return _outcome(job_id, folder, world, seen)


def _outcome(job_id: str, folder: Path, world: int, state: str | None) -> int:
    records = exit_records(folder, job_id)
    if len(records) == world and all(r.get('code') == 0 for r in records.values()):
        print(f'SLURM job {job_id}: the run finished on all {world} rank(s)', flush=True)
        return 0
    own = [r['line'] for _, r in sorted(records.items()) if r.get('line')]
    error = folder / f'{job_id}.error.txt'
    recorded = error.read_text(errors='replace').strip() if error.is_file() else ''
    match = re.match(r'exit code (\d+): (.*)', recorded)
    if own:
        line, code = own[0], 1
    elif match:
        line, code = match.group(2), int(match.group(1))
    else:
        line, code = (f'ttm-distill: error: SLURM job {job_id} ended as {state or "unknown (no longer listed)"} '
                      f'before the run finished; its task logs are in {folder}'), 1
    print(line, file=sys.stderr, flush=True)
    return code
