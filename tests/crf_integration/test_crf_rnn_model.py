"""CRF-as-RNN as the last layer of an atrous model: training, checkpoints, export, inference."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from atrous import weights
from atrous.cli import main
from atrous.crf import CRFRNNModel, DenseCRF, crf_rnn_options, with_crf_rnn
from atrous.inference import Segmenter
from atrous.models import build
from atrous.training import TrainConfig, Trainer, apply_overrides


def tiny_config(**overrides: Any) -> TrainConfig:
    """A MobileNetV2-0.5 DeepLab v3 (GroupNorm) on 6 synthetic 40 px images, 33 px crops."""
    base: dict[str, Any] = dict(
        model="deeplabv3_mobilenetv2",
        model_options={"norm": "gn", "width_mult": 0.5},
        dataset="synthetic",
        dataset_options={"length": 6, "size": 40},
        crop_size=33,
        scale_range=[0.75, 1.25],
        batch_size=2,
        iterations=4,
        lr=0.01,
        num_workers=0,
        deterministic=True,
        log_every=1,
        val_every=1000,
        val_max_images=2,
        ckpt_every=1000,
        device="cpu",
    )
    base.update(overrides)
    return TrainConfig(**base).validate()


CRF = {"iterations": 2, "eval_iterations": 3, "bi_xy_std": 10.0}


def _tiny_model(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("deeplabv3_mobilenetv2", num_classes=num_classes, norm="gn", width_mult=0.5)


def _crf_params(model: CRFRNNModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.crf.state_dict().items()}


# ---------------------------------------------------------------------------- options / model
def test_options_defaults_and_errors():
    o = crf_rnn_options({"iterations": 3})
    assert o["iterations"] == 3 and o["eval_iterations"] == 10 and o["bi_w"] == 4.0
    with pytest.raises(ValueError, match=r"crf_rnn: unknown option\(s\) \['iters'\]"):
        crf_rnn_options({"iters": 3})
    with pytest.raises(ValueError, match=re.escape("crf_rnn.bi_rgb_std=0: must be positive")):
        crf_rnn_options({"bi_rgb_std": 0})
    with pytest.raises(ValueError, match=re.escape("crf_rnn.iterations=-1")):
        crf_rnn_options({"iterations": -1})
    with pytest.raises(ValueError, match="must be an object"):
        crf_rnn_options([5])  # type: ignore[arg-type]


def test_train_config_field_validated_and_overridable():
    cfg = TrainConfig(crf_rnn={"iterations": 5})
    assert cfg.validate().crf_rnn == {"iterations": 5}
    with pytest.raises(ValueError, match=r"config: crf_rnn: unknown option"):
        TrainConfig(crf_rnn={"bogus": 1}).validate()
    cfg = apply_overrides(TrainConfig(), ['crf_rnn={"iterations": 4}', "crf_rnn.bi_w=2"])
    assert cfg.crf_rnn == {"iterations": 4, "bi_w": 2}


def test_rgb_recovered_from_normalized_input_and_modes():
    model = CRFRNNModel(_tiny_model(), **CRF)
    rgb = torch.randint(0, 256, (2, 3, 17, 19)).float()
    mean = torch.tensor(model.metadata["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.metadata["std"]).view(1, 3, 1, 1)
    x = (rgb / 255 - mean) / std
    assert torch.equal(model.rgb_from_input(x), rgb)
    # the forward with the recovered image equals the forward given the image
    model.eval()
    with torch.no_grad():
        a = model(x)["out"]
        b = model(x, rgb)["out"]
        base = model.without_crf()(x)["out"]
    assert torch.allclose(a, b)
    assert not torch.allclose(a, base)  # the CRF changed the logits
    assert model.iterations == 3
    model.train()
    assert model.iterations == 2


def test_gradients_reach_network_and_crf():
    model = CRFRNNModel(_tiny_model(), **CRF).train()
    x = torch.randn(2, 3, 24, 24)
    y = torch.randint(0, 3, (2, 24, 24))
    loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
    loss.backward()
    for name in ("crf.bi_weight", "crf.pos_weight", "crf.compat", "head.classifier.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_with_crf_rnn_none_strips_and_keeps_learned_weights():
    m = CRFRNNModel(_tiny_model(), **CRF)
    with torch.no_grad():
        m.crf.bi_weight.fill_(7.0)
    assert type(with_crf_rnn(m, None)).__name__ == "DeepLab"
    again = with_crf_rnn(m, {**CRF, "iterations": 4})
    assert again.crf.bi_weight[0].item() == 7.0 and again.iterations == 4
    fresh = with_crf_rnn(m, {**CRF, "bi_rgb_std": 5.0})  # other kernel: learned weights dropped
    assert fresh.crf.bi_weight[0].item() == 4.0


# ---------------------------------------------------------------------------- training
def test_train_resume_export_roundtrip(tmp_path):
    cfg = tiny_config(crf_rnn=CRF, iterations=3, lr=0.05)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    assert isinstance(full.model, CRFRNNModel)
    before = _crf_params(full.model)
    full.train()
    after = _crf_params(full.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "CRF params did not train"

    # resume mid-run reproduces the uninterrupted run, CRF parameters included
    part = Trainer(cfg, tmp_path / "part", progress=False)
    part.train(stop_at=2)
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert {"crf.bi_weight", "crf.pos_weight", "crf.compat"} <= set(state["model"])
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    resumed.train()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    # export -> load rebuilds model + CRF with identical outputs
    path = tmp_path / "full" / "model.safetensors"
    loaded = weights.load(path)
    assert isinstance(loaded, CRFRNNModel)
    assert loaded.crf_rnn_config == crf_rnn_options(CRF)
    x = torch.randn(1, 3, 40, 40)
    full.model.eval()
    with torch.no_grad():
        assert torch.equal(full.model(x)["out"], loaded(x)["out"])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["crf_rnn"])["eval_iterations"] == 3


def test_loss_decreases_end_to_end():
    """Fitting one batch through network + CRF (train iterations) lowers the loss."""
    model = CRFRNNModel(_tiny_model(), **CRF).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 24, 24, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()  # labels that follow the colours
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_plain_load_and_num_classes_override(tmp_path):
    m = CRFRNNModel(_tiny_model(), **CRF)
    path = weights.save(m, tmp_path / "m.safetensors")
    # fine-tuning to other classes re-initializes the CRF tensors whose shapes changed
    m5 = weights.load(path, num_classes=5, strict=False)
    assert isinstance(m5, CRFRNNModel) and m5.crf.num_classes == 5
    assert "crf.compat" in m5.metadata["reinitialized"]
    # a file without CRF still loads as a plain DeepLab
    plain = weights.save(_tiny_model(), tmp_path / "plain.safetensors")
    assert not isinstance(weights.load(plain), CRFRNNModel)


# ---------------------------------------------------------------------------- inference / CLI
def test_learned_crf_hook_matches_forward_at_scale_one():
    """Segmenter(net, crf=hook) at one scale, no tiles = the model's forward in eval mode."""
    model = CRFRNNModel(_tiny_model(), **CRF).eval()
    img = np.random.default_rng(0).integers(0, 256, (21, 26, 3), dtype=np.uint8)
    seg = Segmenter(model.without_crf(), crf=model.crf_hook())
    p = seg.predict_proba(img)
    x = seg.normalize(img, torch.device("cpu"))[None]
    with torch.no_grad():
        ref = torch.softmax(model(x)["out"][0], 0).numpy()
    assert np.abs(p - ref).max() < 1e-4
    assert seg.config()["crf"]["method"] == "crf_rnn"
    assert seg.config()["crf"]["iterations"] == 3


@pytest.fixture
def crf_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    net = build("deeplabv3_mobilenetv2", num_classes=6, norm="gn", width_mult=0.5)
    return weights.save(CRFRNNModel(net, **CRF), tmp_path / "crf.safetensors")


def test_eval_cli_runs_learned_crf(crf_weights, tmp_path, capsys):
    flags = "--format synthetic --size 32 --limit 2 --trimap-widths none --no-progress"
    common = ["eval", str(crf_weights), *flags.split()]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    meta = json.loads((tmp_path / "a" / "metrics.json").read_text())["metadata"]
    assert meta["crf"]["method"] == "crf_rnn"
    assert main([*common, "--no-crf-rnn", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["metadata"]["crf"] is None
    assert main([*common, "--crf", "--crf-iterations", "2", "--out", str(tmp_path / "c")]) == 0
    meta = json.loads((tmp_path / "c" / "metrics.json").read_text())["metadata"]
    assert meta["crf"]["method"] == "dense_crf" and meta["crf"]["iterations"] == 2


def test_crf_params_file(crf_weights, tmp_path, capsys):
    """--crf-params FILE (crf-search's best_crf.json) sets the dense CRF; flags win."""
    from atrous.cli import build_parser
    from atrous.cli._common import crf_hook

    params = tmp_path / "best.json"
    params.write_text(json.dumps({"method": "dense_crf", "iterations": 2, "bi_w": 6.0}))
    parse = lambda *a: build_parser().parse_args(["eval", str(crf_weights), *a])
    assert crf_hook(parse("--crf-params", str(params))) == DenseCRF(iterations=2, bi_w=6.0)
    hook = crf_hook(parse("--crf-params", str(params), "--crf-bi-w", "2"))
    assert hook == DenseCRF(iterations=2, bi_w=2.0)
    assert crf_hook(parse("--crf")) == DenseCRF()
    assert crf_hook(parse()) is None
    params.write_text(json.dumps({"bi_weight": 1}))
    flags = "--format synthetic --size 32 --limit 1 --no-progress"
    rc = main(["eval", str(crf_weights), *flags.split(), "--crf-params", str(params)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--crf-params" in err and "unknown key(s) ['bi_weight']" in err


def test_predict_cli_runs_learned_crf(crf_weights, tmp_path):
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 256, (30, 34, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    out = tmp_path / "pred"
    args = ["predict", str(crf_weights), str(tmp_path / "a.png"), "-o", str(out)]
    assert main([*args, "--probs", "--no-progress"]) == 0
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert any(f.endswith(".png") for f in files), files
    # the saved labels are the learned CRF's, not the network's
    model = weights.load(crf_weights)
    seg = Segmenter(model.without_crf(), crf=model.crf_hook())
    expected = seg.predict(img)
    mask = np.asarray(Image.open(next(p for p in out.rglob("a*.png") if "overlay" not in p.name)))
    assert np.array_equal(mask, expected)


def test_bf16_autocast_training_step(tmp_path):
    """Under autocast the CRF still runs in float32 (the lattice needs it)."""
    cfg = tiny_config(crf_rnn=CRF, iterations=1, amp="bf16")
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train()
    assert all(torch.isfinite(p).all() for p in tr.model.crf.parameters())


def test_split_crf():
    from atrous.crf import split_crf

    plain = _tiny_model()
    assert split_crf(plain) == (plain, None)
    model = CRFRNNModel(_tiny_model(), **CRF)
    net, hook = split_crf(model)
    assert type(net).__name__ == "DeepLab" and net.head is model.head
    assert hook is not None and hook.iterations == 3 and hook.crf is model.crf
