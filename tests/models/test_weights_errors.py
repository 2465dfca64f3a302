"""Bad checkpoint files: each is refused with one clear line that names the file, and no
code in a pickle ever runs (issue #11)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from bad_checkpoints import MARKER_NAME, Evil, tiny_model, write_checkpoint_corpus
from safetensors import safe_open
from safetensors.torch import save_file

import atrous.weights as W

TORCH_ADVICE = "will likely succeed"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_checkpoint_corpus(folder)


def _error(path: Path) -> str:
    with pytest.raises(W.CheckpointError) as info:
        W.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "Traceback" not in message, message
    assert TORCH_ADVICE not in message and "add_safe_globals" not in message, message
    return message


def test_every_corpus_file_is_refused_with_its_reason(corpus) -> None:
    folder, expected = corpus
    assert len(expected) >= 10
    for name, substring in expected.items():
        assert substring in _error(folder / name), name
    assert not (folder / MARKER_NAME).exists()


def test_malicious_pickles_do_not_run(tmp_path: Path) -> None:
    marker = tmp_path / MARKER_NAME
    zipped, raw = tmp_path / "evil.pth", tmp_path / "raw.pth"
    torch.save(Evil(marker), zipped)
    raw.write_bytes(__import__("pickle").dumps(Evil(marker), protocol=4))
    for path in (zipped, raw):
        message = _error(path)
        assert "atrous never executes code from a checkpoint" in message
        assert "system" in message
    assert "plain Python pickle" in _error(raw)
    assert not marker.exists()


def _recipe(message: str) -> str:
    """The Python code of the conversion recipe in ``message``."""
    words = shlex.split(message.split("convert them: ", 1)[1])
    assert words[:2] == ["python", "-c"] and words[3:5] == ["&&", "atrous"], message
    return words[2]


def _run_recipe(message: str, cwd: Path) -> None:
    code = _recipe(message)
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_namespace_checkpoint_names_the_class_and_its_recipe_works(tmp_path: Path) -> None:
    import argparse

    model = tiny_model()
    path = tmp_path / "run.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "model": model.state_dict()}, path)
    message = _error(path)
    assert "argparse.Namespace" in message and "Python objects beyond tensors" in message
    assert "atrous never executes code from a checkpoint" in message
    assert 'm = c["model"]' in _recipe(message) and "atrous convert" in message
    _run_recipe(message, tmp_path)
    converted = W.load(tmp_path / "run_weights.pth", width_mult=0.25)
    assert converted.config["num_classes"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(converted.state_dict()[k], v), k


def test_pickled_module_recipe_uses_its_state_dict(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "whole model.pth"  # a space: the recipe quotes the path
    torch.save(model, path)
    message = _error(path)
    assert "atrous.models.deeplab.DeepLab" in message
    assert ".state_dict()" in _recipe(message)
    _run_recipe(message, tmp_path)
    assert W.load(tmp_path / "whole model_weights.pth", width_mult=0.25).config["num_classes"] == 3
    assert shlex.quote(str(path.with_name("whole model_weights.pth"))) in message


def test_other_torch_load_failures_get_one_line_reasons(tmp_path: Path) -> None:
    sd = tiny_model().state_dict()
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    (tmp_path / "legacy_cut.pth").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as z:
        z.writestr("readme.txt", "hello")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "misnamed.pth"))
    (tmp_path / "text.pth").write_text("hello")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases = {
        "legacy_cut.pth": "truncated",
        "other.pth": "a zip archive but not a PyTorch checkpoint",
        "misnamed.pth": "a safetensors file: rename it",
        "text.pth": "neither a zip archive nor a pickle",
        "empty.pth": "empty (0 bytes)",
    }
    for name, reason in cases.items():
        assert reason in _error(tmp_path / name), name
    assert W.load(legacy, width_mult=0.25).config["num_classes"] == 3  # the old format still loads


def _edited(tmp_path: Path, **changes: str) -> Path:
    """A tiny model saved by atrous, with metadata entries replaced by ``changes``."""
    model = tiny_model()
    palette = [(0, 0, 0), (9, 9, 9), (255, 255, 255)]
    extra = {"inference_scales": "[1.0, 1.5]"}
    path = W.save(
        model, tmp_path / "m.safetensors", class_names=["a", "b", "c"], palette=palette, extra=extra
    )
    with safe_open(str(path), "pt") as f:
        meta = {**f.metadata(), **changes}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "key", ["config", "class_names", "mean", "std", "palette", "inference_scales", "crf_rnn"]
)
def test_malformed_json_names_the_file_and_key(tmp_path: Path, key: str) -> None:
    message = _error(_edited(tmp_path, **{key: '{"a": 1 "b": 2}'}))
    assert f"metadata '{key}': malformed JSON (Expecting ',' delimiter" in message


def test_safetensors_that_is_not_one(tmp_path: Path) -> None:
    good = _edited(tmp_path)
    data = good.read_bytes()
    cases = {"garbage": b"\x07garbage!" * 64, "header": data[:100], "tensors": data[:-1000]}
    cases["empty"] = b""
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        assert "not a safetensors file" in _error(path), name


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"arch": "deeplabv3_resnet5"},
            "arch='deeplabv3_resnet5': unknown architecture; "
            "did you mean 'deeplabv3_resnet50'? known: deeplabv1_vgg16, ",
        ),
        ({"arch": "deeplabv3_resnet50"}, "arch='deeplabv3_resnet50' disagrees with 'config'"),
        ({"config": '{"arch": "unet", "num_classes": 3}'}, "'config' arch='unet': unknown"),
        ({"config": '{"num_classes": 3}'}, "'config' has no arch"),
        ({"config": "[1, 2]"}, "'config': must be a JSON object"),
        ({"num_classes": "three"}, "num_classes='three': must be a positive integer"),
        ({"num_classes": "-3"}, "num_classes='-3': must be a positive integer"),
        ({"num_classes": "4"}, "num_classes='4' disagrees with 'config'"),
        ({"config": "CFG:num_classes=2.5"}, "'config' num_classes=2.5: must be a positive"),
        ({"config": "CFG:num_classes=true"}, "'config' num_classes=True: must be a positive"),
        ({"config": 'CFG:num_classes="3"'}, "'config' num_classes='3': must be a positive"),
        ({"mean": "[0.5, 0.5]"}, "metadata 'mean': must be 3 numbers, got [0.5, 0.5]"),
        ({"mean": '["a", 0, 0]'}, "metadata 'mean': must be 3 numbers"),
        ({"std": "[0.2, 0, 0.2]"}, "metadata 'std': must be 3 positive numbers"),
        ({"std": "[0.2, NaN, 0.2]"}, "metadata 'std': must be 3 positive numbers"),
        ({"class_names": '["a", "b"]'}, "'class_names': 2 names for 3 classes"),
        ({"class_names": "[1, 2, 3]"}, "'class_names': must be a list of strings"),
        ({"palette": "[[0, 0, 0], [256, 0, 0], [1, 2, 3]]"}, "'palette': must be a list of RGB"),
        ({"palette": "[[0, 0], [0, 0], [0, 0]]"}, "'palette': must be a list of RGB"),
        ({"inference_scales": "1.5"}, "'inference_scales': must be a non-empty list of positive"),
        ({"inference_scales": "[1.0, 0]"}, "'inference_scales': must be a non-empty list"),
        ({"inference_scales": "[]"}, "'inference_scales': must be a non-empty list"),
    ],
)
def test_bad_metadata_values_name_the_key(tmp_path: Path, changes: dict, match: str) -> None:
    cfg = changes.get("config", "")
    if cfg.startswith("CFG:"):  # one entry of the saved config replaced
        key, value = cfg[4:].split("=")
        changes = {"config": json.dumps({**tiny_model().config, key: json.loads(value)})}
    message = _error(_edited(tmp_path, **changes))
    assert "m.safetensors: metadata " in message and match in message, message


def test_config_that_does_not_build_names_the_file(tmp_path: Path) -> None:
    cfg = json.dumps({**tiny_model().config, "output_stride": 7})
    assert "cannot build deeplabv3_mobilenetv2 from the recorded" in _error(
        _edited(tmp_path, config=cfg)
    )


def test_atrous_files_load_exactly_as_before(tmp_path: Path) -> None:
    """A file written by ``save`` passes every check and restores the same metadata."""
    model = tiny_model()
    path = _edited(tmp_path)
    loaded = W.load(path)
    assert loaded.config == model.config
    assert loaded.metadata["class_names"] == ["a", "b", "c"]
    assert loaded.metadata["mean"] == tuple(model.metadata["mean"])
    assert loaded.metadata["std"] == tuple(model.metadata["std"])
    assert loaded.metadata["palette"] == [[0, 0, 0], [9, 9, 9], [255, 255, 255]]
    assert loaded.metadata["inference_scales"] == [1.0, 1.5]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # The copies of the config's entries may name the arch by an alias.
    alias = _edited(tmp_path, arch="deeplabv3_mobilenet")
    assert W.load(alias).config["arch"] == "deeplabv3_mobilenetv2"
