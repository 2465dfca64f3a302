from __future__ import annotations

import pytest
import torch
from torch import nn
from train_helpers import tiny_config

from atrous.training import Trainer
from atrous.training.ema import WeightEMA
from atrous.weights import read_state_dict


def test_ema_follows_the_closed_form_with_warmup_and_copies_int_buffers():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for n in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model.train()(torch.randn(4, 3))  # BN statistics move, num_batches_tracked counts
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert torch.allclose(ema.module[0].weight, expected, atol=1e-6)
    assert ema.module[1].num_batches_tracked == model[1].num_batches_tracked == 5
    assert not torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert not ema.module.training and not ema.module[0].weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, 1.0)


def test_ema_run_validates_exports_and_resumes_the_average(tmp_path):
    cfg = tiny_config(iterations=4, ema_decay=0.5)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.train()
    live = full.model.state_dict()
    avg = full.ema.module.state_dict()
    assert any(not torch.equal(live[k], avg[k]) for k in live if live[k].is_floating_point())
    assert full.eval_model is full.ema.module
    exported, _ = read_state_dict(tmp_path / "full" / "model.safetensors")
    for k, v in exported.items():
        assert torch.equal(v, avg[k]), k  # the shipped weights are the average
    # a training checkpoint read as weights gives the average too; resume restores both
    from_ckpt, _ = read_state_dict(tmp_path / "full" / "last.pt")
    assert all(torch.equal(from_ckpt[k], avg[k]) for k in avg)
    part = Trainer(cfg, tmp_path / "part", progress=False)
    part.train(stop_at=2)
    del part
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    resumed.train()
    assert resumed.ema.updates == full.ema.updates == 4
    for k, v in resumed.ema.module.state_dict().items():
        assert torch.equal(v, avg[k]), k


def test_ema_added_on_resume_starts_from_the_live_weights(tmp_path):
    Trainer(tiny_config(iterations=4), tmp_path, progress=False).train(stop_at=2)
    tr = Trainer(tiny_config(iterations=4, ema_decay=0.9), tmp_path, resume=True, progress=False)
    live = tr.model.state_dict()
    assert all(torch.equal(v, live[k]) for k, v in tr.ema.module.state_dict().items())
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_config(ema_decay=1.5)
