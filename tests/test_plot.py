"""`ttm-distill plot` over runs' metrics files."""
from conftest import TINY, cli

from ttm_torchdistill.tools.plot import find_metrics, load_metrics


def test_plot_overlays_runs_from_metrics_logs_and_summaries(tmp_path):
    for run in ('a', 'b'):
        result = cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--run-log', f'{run}/run.log',
                          '--summary', f'{run}/summary.json',
                          '--set', f'models.student_model.dst_ckpt={run}/ckpt.pt'], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    assert find_metrics(str(tmp_path / 'a' / 'run.log')) == tmp_path / 'a' / 'run.metrics.jsonl'
    assert find_metrics(str(tmp_path / 'b' / 'summary.json')) == tmp_path / 'b' / 'run.metrics.jsonl'
    records = load_metrics(tmp_path / 'a' / 'run.metrics.jsonl')
    assert all(r['student_entropy'] > 0 and r['u_gamma'] >= 1 for r in records)
    result = cli(['plot', 'a/run.log', 'b/summary.json', '-o', 'plots/runs.png'], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'plots' / 'runs.png').stat().st_size > 20_000


def test_plot_without_metrics_is_one_clear_error(tmp_path):
    result = cli(['plot', 'nothing-here.log'], tmp_path)
    assert result.returncode == 2 and 'no metrics file' in result.stderr and 'Traceback' not in result.stderr
