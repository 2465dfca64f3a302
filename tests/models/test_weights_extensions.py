"""Weights extensions: parts a higher layer adds to a model (the learned CRF-as-RNN) are
saved and loaded through hooks, in the file format atrous has always written."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import atrous.models as M
import atrous.weights as W
from atrous.weights import extensions

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _declared_in_pyproject() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][extensions.ENTRY_POINT_GROUP])


def _tiny(num_classes: int = 3) -> M.DeepLab:
    torch.manual_seed(0)
    return M.build("deeplabv3_mobilenetv2", num_classes, norm="gn", width_mult=0.5).eval()


def _file_as_written_before_the_extension_hooks(path: Path) -> dict[str, str]:
    """A CRF-as-RNN weights file exactly as atrous wrote it before issue #10: the base
    entries, ``crf_rnn`` (the options as JSON) and the ``crf.*`` tensors."""
    from atrous.crf import CRFRNNModel, crf_rnn_options

    model = CRFRNNModel(_tiny(), iterations=2, eval_iterations=3, bi_xy_std=10.0)
    with torch.no_grad():
        model.crf.pos_weight.fill_(0.25)
    cfg = model.config
    crf = crf_rnn_options({"iterations": 2, "eval_iterations": 3, "bi_xy_std": 10.0})
    meta = {"format": "atrous", "arch": cfg["arch"], "num_classes": str(cfg["num_classes"])}
    meta["output_stride"] = str(cfg["output_stride"])
    meta["atrous_rates"] = json.dumps(cfg["atrous_rates"])
    meta["config"] = json.dumps(cfg)
    meta["mean"] = json.dumps(list(model.metadata["mean"]))
    meta["std"] = json.dumps(list(model.metadata["std"]))
    meta["crf_rnn"] = json.dumps(crf)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return meta


def test_save_writes_the_same_entries_and_tensor_names(tmp_path: Path) -> None:
    old = tmp_path / "old.safetensors"
    meta = _file_as_written_before_the_extension_hooks(old)
    model = W.load(old)
    assert type(model).__name__ == "CRFRNNModel"
    new = W.save(model, tmp_path / "new.safetensors")
    with safe_open(str(old), "pt") as a, safe_open(str(new), "pt") as b:
        assert b.metadata() == meta
        assert sorted(a.keys()) == sorted(b.keys())
        assert any(k.startswith("crf.") for k in b.keys())  # noqa: SIM118
        for k in a.keys():  # noqa: SIM118
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k


def test_old_file_loads_in_a_process_that_never_imported_crf(tmp_path: Path) -> None:
    path = tmp_path / "old.safetensors"
    _file_as_written_before_the_extension_hooks(path)
    code = (
        "import sys, atrous.weights as W\n"
        "assert not any(m.startswith('atrous.crf') for m in sys.modules)\n"
        f"m = W.load({str(path)!r})\n"
        "print(type(m).__name__, m.crf_rnn_config['eval_iterations'],"
        " float(m.crf.pos_weight[0]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CRFRNNModel", "3", "0.25"]


def test_registered_hooks_are_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "_REGISTRY", dict(extensions._REGISTRY))
    calls = []

    def attach(model, options, tensors, reinit_ok):
        calls.append((options, sorted(tensors), reinit_ok))
        model.metadata["probe"] = options["tag"]
        return model, []

    def options(model):
        return getattr(model, "probe_options", None)

    W.register_extension("probe", tensor_prefix="probe.", save=options, load=attach)
    model = _tiny()
    model.probe_options = {"tag": "x"}
    path = W.save(model, tmp_path / "m.safetensors")
    loaded = W.load(path)
    assert calls == [({"tag": "x"}, [], False)] and loaded.metadata["probe"] == "x"
    plain = W.save(_tiny(), tmp_path / "plain.safetensors")
    W.load(plain)
    assert len(calls) == 1  # a model without the part records no entry


def test_extension_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "PROVIDERS", {"gone": "atrous.no_such_module"})
    path = W.save(_tiny(), tmp_path / "m.safetensors", extra={"gone": "{}"})
    with pytest.raises(W.CheckpointError, match=r"m\.safetensors: gone: .*no_such_module"):
        W.load(path)
    with pytest.raises(ValueError, match="tensor_prefix"):
        W.register_extension("bad", tensor_prefix="crf", save=lambda m: None, load=None)


def test_each_declared_extension_module_registers_its_entry() -> None:
    declared = _declared_in_pyproject()
    assert declared == {"crf_rnn": "atrous.crf.rnn_model"}
    for key, module in declared.items():
        importlib.import_module(module)
        assert extensions.extension(key).metadata_key == key


def test_the_installed_entry_points_are_the_declared_ones() -> None:
    installed = {ep.name: ep.value for ep in entry_points(group=extensions.ENTRY_POINT_GROUP)}
    assert installed == _declared_in_pyproject(), (
        "atrous's installed metadata is older than pyproject.toml: install it again "
        "(pip install -e ., or make test)"
    )


def test_a_provider_that_registers_nothing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "PROVIDERS", {"idle": "atrous.constants"})
    with pytest.raises(W.CheckpointError, match=r"idle: atrous\.constants registers no extension"):
        extensions.extension("idle")
    with pytest.raises(W.CheckpointError, match="no installed package declares one"):
        extensions.extension("unknown_entry")
