from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from train_helpers import tiny_config

from atrous.models import build
from atrous.training import (
    EpochSampler,
    Trainer,
    TrainingError,
    freeze_batchnorm,
    load_checkpoint,
    save_checkpoint,
    validate_model,
)
from atrous.training import checkpoint as ckpt_mod


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_reproduces_uninterrupted_run(tmp_path):
    # 6 images, batch 2, accumulation 2: iteration 2 stops mid-epoch 1, so the resume has to
    # restore the data position, the dropout RNG, momentum and the LR schedule.
    cfg = tiny_config(grad_accum=2, iterations=4, warmup_iters=1)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.train()
    part = Trainer(cfg, tmp_path / "part", progress=False)
    part.train(stop_at=2)
    assert part.iteration == 2 and not (tmp_path / "part" / "model.safetensors").exists()
    del part
    torch.manual_seed(1234)  # whatever happens in between must not matter
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.iteration == 2
    resumed.train()
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = lambda d: [
        r["loss"]
        for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert losses(tmp_path / "full") == losses(tmp_path / "part")
    assert (tmp_path / "part" / "model.safetensors").exists()


def test_checkpoint_contents_load_weights_only(tmp_path):
    cfg = tiny_config(iterations=1)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train()
    state = load_checkpoint(tmp_path / "last.pt")  # weights_only=True inside
    assert state["iteration"] == 1 and state["config"]["iterations"] == 1
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    torch.load(tmp_path / "last.pt", weights_only=True)

    from atrous.weights import load

    model = load(tmp_path / "model.safetensors")
    assert model.metadata["class_names"][:2] == ["background", "disc"]
    assert model.config["width_mult"] == 0.5


def test_crash_mid_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"iteration": 1, "w": torch.ones(3)}, path)

    def exploding_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"iteration": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt: not a readable"):
        load_checkpoint(bad)
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="not an atrous training checkpoint"):
        load_checkpoint(bad)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(iterations=3, ckpt_every=1)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train(stop_at=1)
    good = load_checkpoint(tmp_path / "last.pt")
    crit = tr.criterion
    real = type(crit).forward
    monkeypatch.setattr(type(crit), "forward", lambda self, o, t: real(self, o, t) * math.nan)
    with pytest.raises(TrainingError, match=r"loss is nan at iteration 2.*last\.pt.*intact"):
        tr.train()
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["iteration"] == 1
    for k, v in good["model"].items():
        assert torch.equal(v, after["model"][k])


def test_validate_confusion_miou():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # predicts class 0 on the left half, 1 on the right
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 0, :, :2] = 1
            out[:, 1, :, 2:] = 1
            return {"out": out}

    mask = np.array([[0, 0, 0, 1], [0, 0, 1, 255]], np.uint8)
    data = [{"image": np.zeros((2, 4, 3), np.uint8), "mask": mask}]
    m = validate_model(Fixed(), data, 2).metrics
    # class 0: tp 4, fp 0, fn 1 -> 4/5; class 1: tp 2, fp 1 (pixel (0,2)), fn 0 -> 2/3
    assert m.miou == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert m.pixel_accuracy == pytest.approx(6 / 7)


def test_validation_writes_best_and_metrics(tmp_path):
    cfg = tiny_config(iterations=2, val_every=1)
    Trainer(cfg, tmp_path, progress=False).train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "val_miou" in r]
    assert [r["iteration"] for r in vals] == [1, 2]
    assert all(0 <= r["val_miou"] <= 1 for r in vals)
    assert load_checkpoint(tmp_path / "best.pt")["best_miou"] == max(r["val_miou"] for r in vals)
    train = [r for r in recs if "loss" in r]
    assert {"loss", "lr", "images_per_s", "loss_ce", "data_wait_frac"} <= set(train[0])
    assert 0 <= train[0]["data_wait_frac"] <= 1


def test_epoch_sampler_shards_and_resumes():
    s = EpochSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(full) == list(range(10))
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    shards = []
    for r in range(3):
        t = EpochSampler(10, seed=3, rank=r, world=3)
        t.set_epoch(2)
        shards.append(list(t))
    assert all(len(x) == 4 for x in shards)
    assert {i for s in shards for i in s} == set(range(10))


def test_freeze_bn_and_options(tmp_path):
    model = build("deeplabv3_mobilenetv2", num_classes=3, width_mult=0.5)
    n = freeze_batchnorm(model)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert n > 0 and not bn.training and not bn.weight.requires_grad
    cfg = tiny_config(
        iterations=1,
        model_options={"width_mult": 0.5},
        freeze_bn=True,
        amp="bf16",
        channels_last=True,
        loss="ohem",
        region_loss="dice",
        class_weights="inverse_log",
        aux=True,
    )
    tr = Trainer(cfg, tmp_path, progress=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items() if "running_mean" in k}
    tr.train()
    after = tr.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # statistics untouched
    assert tr.criterion.weight is not None and tr.criterion.weight.numel() == 6
    assert {"ce", "dice", "aux_ce", "aux_dice"} <= set(tr.criterion.parts)


def test_bf16_on_a_cpu_without_native_bf16_says_so(tmp_path, capsys, monkeypatch):
    import atrous.training.amp as amp_module  # where the trainer's mixed precision is set up

    cfg = tiny_config(iterations=1, model_options={"width_mult": 0.5}, amp="bf16")
    monkeypatch.setattr(amp_module, "bf16_supported", lambda: False)
    Trainer(cfg, tmp_path / "slow", progress=False)
    assert "no native bfloat16" in capsys.readouterr().out
    monkeypatch.setattr(amp_module, "bf16_supported", lambda: True)
    Trainer(cfg, tmp_path / "fast", progress=False)
    assert "no native bfloat16" not in capsys.readouterr().out


def test_finetune_from_weights_reinitializes_head(tmp_path, capsys):
    from atrous.weights import save

    src = build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.5)
    save(src, tmp_path / "src.safetensors")
    cfg = tiny_config(iterations=1, weights=str(tmp_path / "src.safetensors"))
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert "re-initialized for 6 classes: ['head.classifier.bias', 'head.classifier.weight']" in out
    n = len(src.state_dict())
    assert f"loaded {n - 2}/{n} tensors" in out and "missing (left at init): none" in out
    assert tr.model.metadata["missing_keys"] == []  # the re-initialized head is not "missing"
    sd = src.state_dict()
    own = tr.model.state_dict()
    assert own["head.classifier.weight"].shape[0] == 6
    k = "backbone.features.0.0.weight"
    assert torch.equal(own[k], sd[k])


def test_resume_needs_checkpoint_and_too_small_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"last\.pt"):
        Trainer(tiny_config(), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="fewer than"):
        Trainer(tiny_config(batch_size=8), tmp_path, progress=False)


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    cfg = tiny_config(iterations=3, ckpt_every=1)
    Trainer(cfg, tmp_path, progress=False).train(stop_at=1)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # logged, then crashed before saving
        f.write(json.dumps({"iteration": 2, "loss": 9.0}) + "\n" + '{"iterat')
    tr = Trainer(cfg, tmp_path, resume=True, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1]
    tr.train()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in recs if "loss" in r] == [1, 2, 3]
    assert all(r.get("loss") != 9.0 for r in recs)


def test_pretrained_backbone_is_loaded(tmp_path):
    src = build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.5)
    torch.save(src.backbone.state_dict(), tmp_path / "imagenet.pth")
    cfg = tiny_config(iterations=1, pretrained_backbone=str(tmp_path / "imagenet.pth"))
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    k = "backbone.features.3.conv.0.0.weight"
    assert torch.equal(tr.model.state_dict()[k], src.state_dict()[k])


def test_tensorboard_curve_and_inference_scales(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from atrous.weights import load

    cfg = tiny_config(iterations=2, val_every=2, eval_scales=[0.75, 1.0], tb_images=2)
    Trainer(cfg, tmp_path, progress=False).train()
    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "val/miou", "val/pixel_acc"} <= set(tags["scalars"])
    assert {"val/0", "val/1"} <= set(tags["images"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    model = load(tmp_path / "model.safetensors")
    assert model.metadata["inference_scales"] == [0.75, 1.0]


def test_adamw_optimizer_trains(tmp_path):
    tr = Trainer(tiny_config(iterations=2, optimizer="adamw", lr=1e-3), tmp_path, progress=False)
    before = _weights(tr)
    tr.train()
    assert isinstance(tr.optimizer, torch.optim.AdamW)
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    with pytest.raises(ValueError, match="optimizer"):
        tiny_config(optimizer="lbfgs")


def test_time_limit_sets_iterations_from_speed(tmp_path):
    # a budget far below what 1000 iterations need: the run is re-planned and ends on time
    cfg = tiny_config(iterations=1000, time_limit=0.1, log_every=2, val_every=1000)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train()
    assert 1 <= tr.iteration < 1000  # planned after 5 (fewer where those 5 spent the budget)
    assert tr.total_iterations == tr.iteration
    assert tr.elapsed < 15.0  # 6 s budget, set-up included; loose, as CI machines are noisy
    assert (tmp_path / "model.safetensors").is_file()
    assert tr.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_sigint_saves_last_checkpoint_and_resumes(tmp_path):
    import signal

    cfg = tiny_config(iterations=6)
    tr = Trainer(cfg, tmp_path, progress=False)
    real_step = tr._step

    def step_then_interrupt(batches):
        loss = real_step(batches)
        if tr.iteration == 2:
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C would, between two iterations
        return loss

    tr._step = step_then_interrupt
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup &
    tr.train()
    assert tr.iteration == 2
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    assert not (tmp_path / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handler is removed
    resumed = Trainer(cfg, tmp_path, resume=True, progress=False)
    resumed.train()
    assert resumed.iteration == 6 and (tmp_path / "model.safetensors").is_file()


def test_compile_option_trains_and_checkpoints_plain_names(tmp_path):
    # the "eager" backend exercises the wiring without a C++ toolchain
    cfg = tiny_config(iterations=2, compile=True, compile_backend="eager")
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train()
    assert tr.ddp_model is not tr.model  # the compiled wrapper
    keys = load_checkpoint(tmp_path / "last.pt")["model"].keys()
    assert not any(k.startswith("_orig_mod") for k in keys)
    with pytest.raises(ValueError, match="compile"):
        tiny_config(compile=3)


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sync_bn=true needs CUDA"):
        Trainer(tiny_config(sync_bn=True), tmp_path, progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="SyncBatchNorm needs CUDA")
def test_sync_bn_single_gpu_trains(tmp_path):
    cfg = tiny_config(iterations=1, sync_bn=True, device="cuda", model_options={"norm": "bn"})
    Trainer(cfg, tmp_path, progress=False).train()


def test_training_normalizes_with_the_weights_mean_std(tmp_path):
    # Bug: the datasets were built before the model, with ImageNet statistics, so fine-tuning
    # weights that carry another mean/std trained on one normalization and validated on another.
    from atrous.weights import save

    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    src = build("deeplabv3_mobilenetv2", num_classes=6, norm="gn", width_mult=0.5)
    save(src, tmp_path / "src.safetensors", mean=mean, std=std)
    tr = Trainer(
        tiny_config(weights=str(tmp_path / "src.safetensors")), tmp_path / "run", progress=False
    )
    assert tuple(tr.model.metadata["mean"]) == mean
    x = tr.train_set[0]["image"]  # normalized (3, H, W)
    rgb = (x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)) * 255
    # the model's normalization inverts to whole uint8 values; ImageNet's would not
    assert rgb.min() > -0.01 and rgb.max() < 255.01
    assert (rgb - rgb.round()).abs().max() < 1e-3


def test_time_limit_keeps_the_config_immutable(tmp_path):
    # Bug: the time-limit fit overwrote cfg.iterations, so config.json (written at the start)
    # and the config inside last.pt disagreed. The fitted length is the trainer's state.
    cfg = tiny_config(iterations=1000, time_limit=0.03, log_every=2, val_every=1000)
    tr = Trainer(cfg, tmp_path, progress=False)
    tr.train()
    assert tr.cfg.iterations == 1000 and cfg.iterations == 1000
    assert tr.total_iterations == tr.iteration < 1000
    saved = json.loads((tmp_path / "config.json").read_text())
    state = load_checkpoint(tmp_path / "last.pt")
    assert saved == state["config"] == cfg.to_dict()
    assert state["total_iterations"] == tr.iteration
    again = Trainer(cfg, tmp_path, resume=True, progress=False)
    assert again.total_iterations == tr.iteration  # the fitted length survives a resume


def test_skipped_samples_reach_the_trainer_from_workers(tmp_path):
    # Bug: skip records were written in __getitem__ inside each DataLoader worker and died
    # with it. They now travel with the batch and are counted (and checkpointed) by the trainer.
    from PIL import Image

    from atrous.data.palettes import voc_colormap

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    names = [f"2007_00000{i}" for i in range(6)]
    for n in names:
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{n}.jpg"
        )
        m = Image.fromarray(rng.choice(np.array([0, 15], np.uint8), (40, 40)), mode="P")
        m.putpalette(voc_colormap().ravel().tolist())
        m.save(voc / "SegmentationClass" / f"{n}.png")
    (voc / "JPEGImages" / f"{names[3]}.jpg").write_bytes(b"not a jpeg")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names) + "\n")
    cfg = tiny_config(
        dataset="voc",
        data_root=str(tmp_path / "VOCdevkit"),
        val_split=None,
        dataset_options={"on_error": "skip"},
        num_workers=2,
        iterations=3,
        ckpt_every=1,
    )
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train()
    assert list(tr.skips.skipped) == [str(voc / "JPEGImages" / f"{names[3]}.jpg")]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert list(state["skipped"]) == list(tr.skips.skipped)


def test_the_learning_curve_says_how_many_images_its_miou_is_on() -> None:
    """Issue 28: the demo's curve said "best val mIoU 65.4%" beside a table's 68.3% with no
    word on why (16 validation images against the whole split)."""
    from atrous.training.curve import curve_title

    val = [{"iteration": 100, "val_miou": 0.5}, {"iteration": 200, "val_miou": 0.654}]
    assert curve_title(val, 16) == "best val mIoU 65.4% at iteration 200 (on 16 val images)"
    assert curve_title(val) == "best val mIoU 65.4% at iteration 200"
