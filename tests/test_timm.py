"""timm models by name (`timm_model`), the ViT optimizer and schedule keys, and the Mixup/CutMix collate, offline."""
import argparse
import math
import re
import socket
import sys

import pytest
import torch
import torchvision  # noqa: F401  (torchdistill's registries read torchvision.datasets when imported)
from conftest import cli_env, one_error_line, run_cli
from torchdistill.common.main_util import save_ckpt
from torchdistill.datasets.registry import get_collate_func
from torchdistill.models.registry import get_model
from torchdistill.optim.registry import get_optimizer, get_scheduler

import ttm_torchdistill  # noqa: F401  (registers timm_model and the optimizer and scheduler keys)
from ttm_torchdistill.data import MixupCutmixCollate, iterations_per_epoch, mixup_cutmix_collate
from ttm_torchdistill.extras import MissingExtra
from ttm_torchdistill.optim import no_decay_names, param_groups

timm = pytest.importorskip('timm')


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError('a network connection was attempted')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def _vit(**kwargs):
    return get_model('timm_model', name='test_vit', num_classes=10, img_size=32, **kwargs)


def test_timm_models_build_by_name_without_the_network(no_network):
    model = get_model('timm_model', name='deit_tiny_patch16_224', num_classes=10, img_size=32, drop_path_rate=0.1)
    assert type(model).__name__ == 'VisionTransformer' and model.embed_dim == 192 and len(model.blocks) == 12
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # drop_path_rate reaches timm
    assert get_model('timm_model', name='deit3_small_patch16_224.fb_in22k_ft_in1k', img_size=32).embed_dim == 384
    # a null kwarg means timm's default
    assert get_model('timm_model', name='test_resnet', num_classes=3, drop_path_rate=None).eval()(
        torch.randn(1, 3, 32, 32)).shape == (1, 3)


def _state(seed):
    torch.manual_seed(seed)
    return _vit().state_dict()


@pytest.mark.parametrize('fmt', ['bare', 'state_dict', 'state_dict_ema', 'model', 'torchdistill', 'ddp',
                                 'safetensors'])
def test_a_weights_file_loads_strictly_in_timms_and_torchdistills_formats(tmp_path, no_network, fmt):
    state = _state(1)
    path = tmp_path / ('w.safetensors' if fmt == 'safetensors' else 'w.pth')
    if fmt == 'bare':
        torch.save(state, path)
    elif fmt in ('state_dict', 'model'):
        torch.save({fmt: state, 'epoch': 3}, path)
    elif fmt == 'state_dict_ema':  # timm's training checkpoints: the EMA weights are preferred, as timm does
        torch.save({'state_dict': _state(2), 'state_dict_ema': state}, path)
    elif fmt == 'torchdistill':
        model = _vit()
        model.load_state_dict(state)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        save_ckpt(model, optimizer, None, 12.5, argparse.Namespace(seed=0), str(path))
    elif fmt == 'ddp':
        torch.save({f'module.{k}': v for k, v in state.items()}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    # a checkpoint means no download, even with pretrained: true
    loaded = _vit(checkpoint=str(path), pretrained=True).state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_bad_weights_files_and_names_are_one_line(tmp_path):
    other = tmp_path / 'other.pth'
    torch.manual_seed(0)
    torch.save(get_model('timm_model', name='test_vit2', num_classes=10, img_size=32).state_dict(), other)
    with pytest.raises(ValueError, match=r'does not fit the model: \d+ keys missing, \d+ unexpected, \d+ shape'):
        _vit(checkpoint=str(other))
    with pytest.raises(ValueError, match='no such file'):
        _vit(checkpoint=str(tmp_path / 'missing.pth'))
    (tmp_path / 'cut.pth').write_bytes(other.read_bytes()[:1000])
    with pytest.raises(ValueError, match='is unreadable'):
        _vit(checkpoint=str(tmp_path / 'cut.pth'))
    with pytest.raises(ValueError, match="'deit_tiny_patch16_22' is not a timm model; did you mean deit_tiny"):
        get_model('timm_model', name='deit_tiny_patch16_22')
    with pytest.raises(ValueError, match='pretrained=.yes.: expected true or false'):
        _vit(pretrained='yes')


def test_pretrained_weights_offline_are_one_line_naming_the_checkpoint_kwarg(tmp_path, image_root):
    env = cli_env(HF_HUB_OFFLINE=1, HF_HOME=tmp_path / 'hf', ILSVRC2012_ROOT=image_root)
    result = run_cli(['train', 'ilsvrc2012/kd/deit_tiny_from_deit3_small', '--device', 'cpu', '--check'], tmp_path,
                     env=env)
    one_error_line(result, 2, 'models.teacher_model', "cannot get timm's pretrained weights", 'kwargs.checkpoint')


def test_without_timm_the_package_imports_and_a_recipe_that_needs_it_is_one_line(tmp_path, image_root):
    fake = tmp_path / 'no_timm' / 'timm'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'timm'\", name='timm')\n")
    env = cli_env(ILSVRC2012_ROOT=image_root)
    env['PYTHONPATH'] = f'{fake.parent}:{env["PYTHONPATH"]}'
    code = ("import ttm_torchdistill\nfrom torchdistill.models.registry import get_model\n"
            "try:\n    get_model('timm_model', name='deit_tiny_patch16_224')\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc)\n")
    import subprocess
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ("MissingExtra timm_model 'deit_tiny_patch16_224' needs the timm package, which is "
                                  "not installed: pip install 'ttm-torchdistill[timm]'")
    result = run_cli(['train', 'ilsvrc2012/ce/deit_tiny', '--device', 'cpu', '--check'], tmp_path, env=env)
    one_error_line(result, 2, "pip install 'ttm-torchdistill[timm]'", 'timm_transform')
    assert issubclass(MissingExtra, ImportError) and issubclass(MissingExtra, ValueError)


def _expected_no_decay(names):
    """The rule stated by the issue, written from the names: norms, biases, cls token, position embeddings."""
    return [n for n in names if n in ('cls_token', 'pos_embed') or n.endswith('.bias')
            or re.search(r'(^|\.)norm\d?\.weight$', n)]


def test_no_weight_decay_exactly_on_norms_biases_cls_token_and_position_embeddings():
    model = get_model('timm_model', name='deit_tiny_patch16_224', img_size=32)
    names = [n for n, _ in model.named_parameters()]
    expected = _expected_no_decay(names)
    assert no_decay_names(model) == expected
    assert len(expected) == 12 * 8 + 6  # per block: 2 norms x (weight, bias) + 4 linear biases; + stem and head
    model.patch_embed.proj.bias.requires_grad_(False)  # frozen parameters are left out
    optimizer = get_optimizer(torch.nn.ModuleList([model]), 'adamw_no_decay_norm_bias_tokens', filters_params=False,
                              lr=1e-3, weight_decay=0.05)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = optimizer.param_groups
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    assert [by_id[id(p)] for p in no_decay['params']] == [n for n in expected if n != 'patch_embed.proj.bias']
    assert sorted(by_id[id(p)] for p in decay['params']) == sorted(set(names) - set(expected))
    assert optimizer.defaults['betas'] == (0.9, 0.999) and isinstance(optimizer, torch.optim.AdamW)
    # given a flat list (filters_params left on), only the shapes are known
    flat = param_groups([torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))], 0.1)
    assert [[tuple(p.shape) for p in g['params']] for g in flat] == [[(3, 3)], [(3,)]]


def test_warmup_cosine_follows_the_formula_per_iteration_and_refuses_bad_values():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = get_scheduler(optimizer, 'warmup_cosine_lr', iterations_per_epoch=4, num_epochs=5, warmup_epochs=1.5,
                              warmup_start_factor=1e-3, eta_min=1e-5)
    warmup, total = 6, 20
    for step in range(total):
        if step < warmup:
            expected = 1e-3 * (1e-3 + (1 - 1e-3) * step / warmup)
        else:
            expected = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2
        assert optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()
    for kwargs, fragment in ((dict(warmup_epochs=5), 'no iterations for the cosine part'),
                             (dict(iterations_per_epoch=0), 'iterations_per_epoch=0'),
                             (dict(eta_min=-1), 'eta_min=-1'), (dict(warmup_start_factor=0), 'warmup_start_factor'),
                             (dict(num_epochs='abc'), "num_epochs='abc'")):
        with pytest.raises(ValueError, match=fragment):
            get_scheduler(optimizer, 'warmup_cosine_lr', **{'iterations_per_epoch': 4, 'num_epochs': 5, **kwargs})


def test_iterations_per_epoch_counts_the_loaders_batches():
    data = list(range(10))
    assert iterations_per_epoch(data, 4) == len(torch.utils.data.DataLoader(data, batch_size=4)) == 3
    assert iterations_per_epoch(data, 4, drop_last=True) == 2
    with pytest.raises(ValueError, match='an epoch has 0 iterations'):
        iterations_per_epoch(data, 16, drop_last=True)


def _batch(labels, size=8):
    torch.manual_seed(len(labels))
    return [(torch.rand(3, size, size), y, {}) for y in labels]


def test_mixup_or_cutmix_per_batch_with_label_smoothed_soft_targets():
    key = mixup_cutmix_collate(num_classes=5, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    collate = get_collate_func(key)
    assert isinstance(collate, MixupCutmixCollate) and key.startswith('mixup_cutmix(num_classes=5')
    batch = _batch([0, 1, 2, 3])
    images = torch.stack([b[0] for b in batch])
    smooth = collate.soft_targets(torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(smooth.sum(1), torch.ones(4)) and smooth.min() == pytest.approx(0.02)
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        mixed, targets, supp = collate(batch)
        assert supp == {} and mixed.shape == images.shape and targets.shape == (4, 5)
        # every sample is mixed with its neighbour (torchvision rolls the batch by one) with one weight lam
        lam = (targets[0, 0] - 0.02) / 0.9
        assert torch.allclose(targets, lam * smooth + (1 - lam) * smooth.roll(1, 0), atol=1e-6)
        partner = images.roll(1, 0)
        if torch.allclose(mixed, lam * images + (1 - lam) * partner, atol=1e-5):
            kinds.add('mixup')
        else:  # CutMix: each pixel comes from the sample or its partner, the box's area is 1 - lam
            from_self = (mixed == images).all(1)
            assert ((mixed == images) | (mixed == partner)).all()
            assert from_self[0].float().mean() == pytest.approx(float(lam), abs=1e-6)
            kinds.add('cutmix')
    assert kinds == {'mixup', 'cutmix'}
    with pytest.raises(ValueError, match='outside 0 .. 4; check num_classes'):
        collate(_batch([0, 7]))
    with pytest.raises(ValueError, match='label_smoothing=1'):
        MixupCutmixCollate(5, label_smoothing=1)
    plain = MixupCutmixCollate(5, mixup_alpha=0, cutmix_alpha=0, label_smoothing=0)
    assert torch.equal(plain(batch)[1], torch.eye(5)[:4]) and torch.equal(plain(batch)[0], images)
