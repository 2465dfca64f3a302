from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from atrous.models import build
from atrous.training import PolyLR, TrainConfig, build_optimizer, load_config, poly_factor
from atrous.training.config import apply_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_poly_factor_values():
    assert poly_factor(0, 100) == 1.0
    assert math.isclose(poly_factor(50, 100), 0.5**0.9)
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(150, 100) == 0.0
    # Warm-up: linear from warmup_factor, multiplied into the poly curve.
    assert math.isclose(poly_factor(0, 100, warmup_iters=10, warmup_factor=0.1), 0.1)
    assert math.isclose(poly_factor(5, 100, warmup_iters=10, warmup_factor=0.1), 0.55 * 0.95**0.9)
    assert math.isclose(poly_factor(10, 100, warmup_iters=10), 0.9**0.9)


def _tiny():
    return build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", aux=True)


def test_param_groups_head_multiplier_and_no_decay():
    model = _tiny()
    opt = build_optimizer(model, 0.01, weight_decay=1e-4, head_lr_mult=10, no_decay_norm_bias=True)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["lr"] == 0.01 and groups["head"]["lr"] == pytest.approx(0.1)
    assert groups["backbone_no_decay"]["weight_decay"] == 0
    assert groups["head"]["weight_decay"] == 1e-4
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    head_ids = {id(p) for p in groups["head"]["params"] + groups["head_no_decay"]["params"]}
    assert all(id(p) in head_ids for p in model.aux_classifier.parameters())
    assert opt.defaults["momentum"] == 0.9


def test_poly_scheduler_keeps_group_ratio_and_state_is_plain():
    model = _tiny()
    opt = build_optimizer(model, 0.01, head_lr_mult=10)
    sched = PolyLR(opt, 10, warmup_iters=2)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0][0] == pytest.approx(0.01 * 0.1)
    assert lrs[5][0] == pytest.approx(0.01 * 0.5**0.9)
    assert all(h == pytest.approx(10 * b) for b, h in lrs)
    assert opt.param_groups[0]["lr"] == 0.0
    for v in sched.state_dict().values():
        assert isinstance(v, (int, float, bool, list, type(None)))


def test_shipped_configs_load_and_cite_a_reference():
    files = sorted(CONFIGS.glob("*.json"))
    names = {f.stem for f in files}
    assert {"synthetic_demo", "voc_deeplabv3_resnet101_os16"} <= names and len(files) >= 5
    for f in files:
        cfg = load_config(f)
        assert cfg.reference, f
    voc = load_config(CONFIGS / "voc_deeplabv3_resnet101_os16.json")
    assert (voc.crop_size, voc.batch_size, voc.lr, voc.iterations) == (513, 16, 0.007, 30000)
    assert voc.reference_miou == 77.21 and voc.output_stride == 16


def test_overrides_and_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "deeplabv3_mobilenetv2", "lr": 0.1}))
    cfg = load_config(
        path,
        [
            "lr=0.5",
            "batch_size=2",
            "model_options.norm=gn",
            "scale_range=[0.5,1.0]",
            "val_split=null",
            "dataset=synthetic",
            "weight_decay=0",
        ],
    )
    assert cfg.lr == 0.5 and cfg.batch_size == 2 and cfg.model_options == {"norm": "gn"}
    assert cfg.scale_range == [0.5, 1.0] and cfg.val_split is None
    assert isinstance(cfg.weight_decay, float)
    with pytest.raises(ValueError, match=r"unknown setting 'nope'"):
        apply_overrides(cfg, ["nope=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, ["lr"])
    with pytest.raises(ValueError, match="batch_size"):
        apply_overrides(cfg, ["batch_size=0"])
    with pytest.raises(ValueError, match="amp"):
        apply_overrides(cfg, ["amp=fp8"])
    for bad in ("crop_class_balance=1.5", "blur=-0.1", "label_smoothing=1", "class_weight_cap=0.5"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            apply_overrides(cfg, [bad])
    aug = apply_overrides(cfg, ["crop_class_balance=0.5", "blur=0.3", "label_smoothing=0.1"])
    assert (aug.crop_class_balance, aug.blur, aug.label_smoothing) == (0.5, 0.3, 0.1)
    path.write_text(json.dumps({"lrr": 0.1}))
    with pytest.raises(ValueError, match=r"c\.json: unknown setting 'lrr' \(did you mean 'lr'\?\)"):
        load_config(path)
    path.write_text("{oops")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_config(tmp_path / "missing.json")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_scheduler_matches_closed_form_over_a_run():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.007, momentum=0.9)
    sched = PolyLR(opt, 30000)
    opt.step()
    for _ in range(15000):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.007 * 0.5**0.9)


def test_packaged_configs_are_the_repository_configs():
    # The demo reads its recipe from the package (no drifted embedded copy); the repository's
    # configs/ folder is the same files.
    from atrous.training import load_config, packaged_configs

    shipped = packaged_configs()
    assert {p.name for p in shipped.values()} == {p.name for p in CONFIGS.glob("*.json")}
    demo = load_config("synthetic_demo")
    assert demo.to_dict() == load_config(CONFIGS / "synthetic_demo.json").to_dict()
    assert demo.iterations == 600 and demo.model == "deeplabv3plus_mobilenetv2"
