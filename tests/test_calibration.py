"""Teacher calibration: ECE, temperature scaling, and `ttm-distill calibrate`."""
import json

import pytest
import torch
from conftest import TESTS, cli, one_error_line

from ttm_torchdistill.calibration import expected_calibration_error, fit_temperature, nll, reliability_bins
from ttm_torchdistill.functional import power_sum


def _direct_ece(logits, targets, bins=15):
    """ECE written out sample by sample, bins (k/15, (k+1)/15]."""
    probs = torch.softmax(logits.double(), 1)
    total, n = 0.0, len(targets)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(n) if lo < probs[i].max().item() <= hi]
        if members:
            conf = sum(probs[i].max().item() for i in members) / len(members)
            acc = sum(int(probs[i].argmax().item() == targets[i].item()) for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def _calibrated(n=20000, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, k, generator=g)
    targets = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    return logits, targets


def test_ece_matches_a_direct_computation():
    logits, targets = _calibrated(n=2000)
    for scale in (0.3, 1.0, 3.0):
        assert expected_calibration_error(logits * scale, targets) == pytest.approx(
            _direct_ece(logits * scale, targets), abs=1e-12)
    count, _, _ = reliability_bins(logits, targets)
    assert count.sum() == 2000


@pytest.mark.parametrize('factor', [0.5, 2.5, 4.0])
def test_temperature_scaling_recovers_the_over_confidence_factor(factor):
    logits, targets = _calibrated()
    t_star = fit_temperature(logits * factor, targets)
    assert t_star == pytest.approx(factor, rel=0.05)
    assert expected_calibration_error(logits * factor / t_star, targets) < expected_calibration_error(
        logits * factor, targets) / 3
    assert nll(logits * factor, targets, t_star) < nll(logits * factor, targets)


def test_calibrate_command_reports_json_and_diagram(tmp_path):
    result = cli(['calibrate', TESTS / 'calibration_recipe.yaml', '--device', 'cpu', '-o', 'cal'], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / 'cal' / 'calibration_recipe.calibration.json').read_text())
    assert report['samples'] == 20000
    assert report['temperature'] == pytest.approx(2.5, rel=0.05)
    assert report['gamma_calibrated'] == pytest.approx(1 / report['temperature'])
    assert report['ece_scaled'] < report['ece'] / 3 and report['nll_scaled'] < report['nll']
    assert report['recipe_gamma'] == 0.5
    logits, _ = _calibrated()  # LogitData draws the same logits
    assert report['u_gamma_recipe'] == pytest.approx(power_sum(2.5 * logits.double(), 0.5).mean().item(), rel=1e-6)
    assert (tmp_path / 'cal' / 'calibration_recipe.reliability.png').stat().st_size > 10_000
    assert 'calibrated gamma = 1/T*' in result.stdout


def test_calibrate_summary_on_its_own_report_is_one_line(tmp_path):
    args = ['calibrate', TESTS / 'calibration_recipe.yaml', '--device', 'cpu', '-o', 'cal', '--summary',
            'cal/calibration_recipe.calibration.json']
    one_error_line(cli(args, tmp_path), 2, "--summary='cal/calibration_recipe.calibration.json' is also the report",
                   'its own path')
    assert list(tmp_path.iterdir()) == []


def test_calibrate_needs_a_teacher(tmp_path):
    result = cli(['calibrate', 'demo/ce', '--device', 'cpu'], tmp_path)
    assert result.returncode == 2 and 'no models.teacher_model' in result.stderr
