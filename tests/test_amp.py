"""--amp fp16 scales the loss and steps through a GradScaler inside the recipe's own post-forward process
(torchdistill's default: accumulation, clipping and the schedule are its own); a recipe with another process is
refused in one line."""
import torch
from conftest import TINY, cli, one_error_line

CLIP = ['--set', 'train.optimizer={key: SGD, max_grad_norm: 0.5, kwargs: {lr: 0.1, momentum: 0.9}}']


def _clipped_norms(monkeypatch) -> list[float]:
    norms, clip = [], torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *args, **kwargs):
        total = clip(params, max_norm, *args, **kwargs)
        norms.append(float(total))
        return total
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', recording)
    return norms


def test_fp16_scales_through_the_box_and_unscales_before_clipping(tmp_path, monkeypatch):
    norms = _clipped_norms(monkeypatch)
    (tmp_path / 'fp32').mkdir(), (tmp_path / 'fp16').mkdir()
    assert cli(['train', TINY, '--device', 'cpu', '--seed', '0', *CLIP], tmp_path / 'fp32').returncode == 0
    fp32, norms[:] = list(norms), []
    result = cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--amp', 'fp16', *CLIP], tmp_path / 'fp16')
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(norms) == len(fp32) == 8  # 2 epochs of 4 steps, each clipped once
    for half, full in zip(norms, fp32, strict=True):  # unscaled before clipping: fp16's norms, not 65536 times them
        assert abs(half - full) < 0.05 * full + 1e-3, (norms, fp32)
    ckpt = torch.load(tmp_path / 'fp16/ckpt/tiny/wttm/student.last.pt', weights_only=False)
    assert ckpt['scaler']['scale'] > 0 and ckpt['scaler']['_growth_tracker'] == 8  # 8 finite steps in a row


def test_fp16_refuses_a_recipe_with_its_own_post_forward_process(tmp_path):
    assert cli(['train', TINY, '--device', 'cpu', '--amp', 'fp16', '--check'], tmp_path).returncode == 0
    recipe = TINY.read_text().replace("  post_epoch_process: 'default_post_epoch_process_with_teacher'\n",
                                      "  post_epoch_process: 'default_post_epoch_process_with_teacher'\n"
                                      "  post_forward_process: 'post_forward_process_of_its_own'\n")
    (tmp_path / 'own.yaml').write_text(recipe)
    own = ['train', tmp_path / 'own.yaml', '--device', 'cpu']
    one_error_line(cli([*own, '--amp', 'fp16'], tmp_path), 2,
                   "train.post_forward_process is 'post_forward_process_of_its_own'", '--amp bf16')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['own.yaml']  # refused before anything was written
    assert cli([*own, '--amp', 'bf16', '--check'], tmp_path).returncode == 0
