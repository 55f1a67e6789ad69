"""How a `ttm-distill` process ends (cli.leave): with its exit code, every line it wrote, the atexit handlers run,
and no thread that is still working cut short."""
import subprocess
import sys
from pathlib import Path

from conftest import cli_env

LEAVE = """
import atexit, sys, threading, time
from pathlib import Path
from ttm_torchdistill.cli import leave
out = Path(sys.argv[1])
atexit.register(lambda: (out / 'atexit').write_text('ran'))
if sys.argv[2] == 'thread':
    threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('done'))).start()
print('x' * 200_000)                      # more than a pipe holds: flushed before the process ends
print('to stderr', file=sys.stderr, end='')
leave(int(sys.argv[3]))
"""


def _run(tmp_path: Path, mode: str, code: int) -> subprocess.CompletedProcess:
    env = cli_env()
    env.pop('PYTHONUNBUFFERED', None)  # the streams buffer, as they do for a sweep's runs writing to pipes and files
    return subprocess.run([sys.executable, '-c', LEAVE, str(tmp_path), mode, str(code)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_leave_keeps_the_code_the_output_and_the_atexit_handlers(tmp_path):
    result = _run(tmp_path, 'plain', 3)
    assert result.returncode == 3
    assert result.stdout == 'x' * 200_000 + '\n' and result.stderr == 'to stderr'
    assert (tmp_path / 'atexit').read_text() == 'ran'


def test_leave_waits_for_a_thread_that_is_not_a_daemon(tmp_path):
    result = _run(tmp_path, 'thread', 0)
    assert result.returncode == 0 and (tmp_path / 'thread').read_text() == 'done'
    assert (tmp_path / 'atexit').read_text() == 'ran' and len(result.stdout) == 200_001


def test_the_executable_and_python_m_end_through_it(tmp_path):
    """Both entry points return the command's exit code and its one error line."""
    for argv in ([str(Path(sys.executable).parent / 'ttm-distill')], [sys.executable, '-m', 'ttm_torchdistill']):
        result = subprocess.run([*argv, 'table', str(tmp_path / 'nothing')], capture_output=True, text=True,
                                env=cli_env(), timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f'ttm-distill: error: table: {tmp_path / "nothing"}: no such '
                                                      'file or folder']
