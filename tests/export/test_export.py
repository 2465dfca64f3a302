"""Export (issue 12): a model → .onnx / .pt2 that runs at sizes other than its trace size and
gives the eager model's output; in-graph preprocessing and argmax reproduce ``atrous
predict``; the metadata round-trips; the Segmenter runs an exported file with every feature;
bad files get one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.crf.rnn_model import with_crf_rnn
from atrous.export import ExportError, export
from atrous.inference import Segmenter
from atrous.weights.exported import ExportedModel

NAMES = ["bg", "road", "car", "tree", "sky"]
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142], [107, 142, 35], [70, 130, 180]]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = M.build("deeplabv3plus_mobilenetv2", num_classes=5, width_mult=0.25).eval()
    with torch.no_grad():  # well-separated logits, so argmax ties cannot decide a test
        m.head.classifier.weight.mul_(50.0)
    m.metadata.update(class_names=NAMES, palette=PALETTE)
    m.metadata.update(mean=(0.5, 0.45, 0.4), std=(0.25, 0.2, 0.22))
    return m


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("export")
    m = _model()
    out = {"weights": W.save(m, d / "m.safetensors")}
    labels = {"with_preprocess": True, "output": "labels"}
    for name, kw in (("onnx", {}), ("pt2", {}), ("labels", labels)):
        path = d / (f"{name}.onnx" if name != "pt2" else "m.pt2")
        report = export(W.load(out["weights"]), path, **kw)
        assert all(c["ok"] for c in report.checks) and len(report.checks) == 2
        out[name] = path
    return out


def _rgb(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_exported_file_matches_eager_at_other_sizes(files, kind) -> None:
    eager, exported = W.load(files["weights"]), W.load(files[kind])
    assert isinstance(exported, ExportedModel)
    for shape in ((1, 3, 71, 93), (3, 3, 40, 129), (2, 3, 513, 257)):
        x = torch.randn(*shape)
        with torch.no_grad():
            ref, got = eager(x)["out"], exported(x)["out"]
        assert got.shape == ref.shape
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4, shape


def test_onnx_graph_is_checked_dynamic_and_carries_metadata(files) -> None:
    proto = onnx.load(str(files["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    ops = {n.op_type for n in proto.graph.node}
    assert "Resize" in ops and "AveragePool" not in ops  # pooling is a mean over H, W
    resize = [n for n in proto.graph.node if n.op_type == "Resize"]
    for n in resize:
        attrs = {a.name: a for a in n.attribute}
        assert attrs["coordinate_transformation_mode"].s == b"half_pixel"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == NAMES and json.loads(meta["palette"]) == PALETTE
    assert json.loads(meta["mean"]) == [0.5, 0.45, 0.4]
    assert meta["arch"] == "deeplabv3plus_mobilenetv2" and meta["atrous_version"]
    assert meta["export_output"] == "logits" and meta["export_input"] == "float_nchw"


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_metadata_round_trips_through_load(files, kind) -> None:
    m = W.load(files[kind])
    assert m.metadata["class_names"] == NAMES and m.metadata["palette"] == PALETTE
    assert m.metadata["mean"] == (0.5, 0.45, 0.4) and m.metadata["std"] == (0.25, 0.2, 0.22)
    assert m.config == W.load(files["weights"]).config
    assert m.metadata["backend"] == ("onnxruntime" if kind == "onnx" else "eager")
    assert m.metadata["export"]["export_dynamic"] == "batch,height,width"


def test_preprocess_and_labels_graph_reproduces_atrous_predict(files, tmp_path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(files["labels"]), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == "tensor(uint8)" and out.type == "tensor(uint8)"
    images = tmp_path / "images"
    images.mkdir()
    arrays = {f"im{i}.png": _rgb(i, *hw) for i, hw in enumerate([(60, 80), (97, 45), (33, 200)])}
    for name, a in arrays.items():
        Image.fromarray(a).save(images / name)
    dest = str(tmp_path / "o")
    rc = main(["predict", str(files["weights"]), str(images), "-o", dest, "--no-progress"])
    assert rc == 0
    for name, a in arrays.items():
        expected = np.asarray(Image.open(tmp_path / "o" / name))
        (labels,) = sess.run(None, {inp.name: a[None]})
        assert labels.dtype == np.uint8 and labels.shape == (1, *a.shape[:2])
        assert _agreement(labels[0], expected) >= 0.9995  # fp32 near-ties may flip a pixel
        assert len(np.unique(expected)) > 1  # the comparison says something


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_segmenter_on_an_exported_file_gives_eager_tta_and_tiles(files, kind) -> None:
    image = _rgb(7, 150, 190)
    kw = dict(scales=(0.75, 1.0, 1.25), flip=True, tile_size=65, batch_size=3)
    ref = Segmenter.from_model(W.load(files["weights"]), **kw).logits(image)
    got = Segmenter.from_model(W.load(files[kind]), **kw).logits(image)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
    labels = Segmenter.from_model(W.load(files[kind]), **kw).predict(image)
    assert (labels == ref.argmax(0).numpy()).mean() > 0.999


def test_predict_and_eval_take_exported_files(files, tmp_path, capsys) -> None:
    Image.fromarray(_rgb(3, 48, 64)).save(tmp_path / "a.png")
    outs = {}
    for kind in ("weights", "onnx", "pt2"):
        args = ["predict", str(files[kind]), str(tmp_path / "a.png"), "-o", str(tmp_path / kind)]
        rc = main([*args, "--no-progress", "--flip"])
        assert rc == 0
        outs[kind] = np.asarray(Image.open(tmp_path / kind / "a.png"))
    assert _agreement(outs["onnx"], outs["weights"]) >= 0.9995
    np.testing.assert_array_equal(outs["pt2"], outs["weights"])  # the same kernels: exact
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for i in range(2):
        Image.fromarray(_rgb(10 + i, 40, 56)).save(data / "images" / f"{i}.png")
        mask = np.random.default_rng(i).integers(0, 5, (40, 56)).astype(np.uint8)
        Image.fromarray(mask).save(data / "masks" / f"{i}.png")
    scores = {}
    for kind in ("weights", "onnx"):
        flags = "--split all --no-progress --trimap-widths none"
        out = ["--out", str(tmp_path / f"e{kind}")]
        rc = main(["eval", str(files[kind]), "--data", str(data), *flags.split(), *out])
        assert rc == 0
        scores[kind] = json.loads((tmp_path / f"e{kind}" / "metrics.json").read_text())[
            "confusion_matrix"
        ]
    a, b = (np.array(scores[k]) for k in ("weights", "onnx"))
    assert np.abs(a - b).sum() / 2 <= 0.001 * a.sum()  # at most 0.1% of pixels moved
    capsys.readouterr()
    args = ["predict", str(files["labels"]), str(tmp_path / "a.png"), "-o", str(tmp_path / "x")]
    rc = main([*args, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "exported with input uint8_nhwc and output labels" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_exported_files_get_one_clear_error(files, tmp_path) -> None:
    (tmp_path / "text.onnx").write_text("this is not a model")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(files["onnx"].read_bytes()[:5000])
    # A graph with an operator no runtime implements.
    node = onnx.helper.make_node("NoSuchOp", ["input"], ["logits"], domain="com.example")
    value = onnx.helper.make_tensor_value_info
    inputs = [value("input", onnx.TensorProto.FLOAT, [1, 3, 8, 8])]
    outputs = [value("logits", onnx.TensorProto.FLOAT, [1, 2, 8, 8])]
    graph = onnx.helper.make_graph([node], "g", inputs, outputs)
    opsets = [onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid("com.example", 1)]
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, tmp_path / "op.onnx")
    (tmp_path / "text.pt2").write_text("not a zip")
    cases = {
        "text.onnx": "not an ONNX model, or a truncated one",
        "corrupt.onnx": "not an ONNX model, or a truncated one",
        "op.onnx": "cannot run an operator in it",
        "text.pt2": "not a torch.export .pt2 archive",
    }
    for name, problem in cases.items():
        with pytest.raises(W.CheckpointError) as e:
            W.load(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and problem in str(e.value), e.value
        assert "Traceback" not in str(e.value) and "\n" not in str(e.value)


def test_crf_rnn_model_is_refused_with_a_reason_or_exported_without(tmp_path) -> None:
    torch.manual_seed(0)
    base = M.build("deeplabv3_mobilenetv2", num_classes=3, width_mult=0.25, norm="gn")
    m = with_crf_rnn(base, {}).eval()
    with pytest.raises(ExportError, match=r"CRF-as-RNN layer, which cannot be exported.*--no-crf"):
        export(m, tmp_path / "crf.onnx")
    assert not (tmp_path / "crf.onnx").exists()
    report = export(m, tmp_path / "net.pt2", crf="drop")
    assert all(c["ok"] for c in report.checks)


def test_static_export_and_bad_requests(tmp_path) -> None:
    m = _model()
    report = export(m, tmp_path / "s.pt2", dynamic=False, size=(1, 64, 80))
    errors = {k: report.checks[0][k] for k in ("ok", "max_abs", "max_rel")}
    assert report.checks == [{"size": [1, 64, 80], **errors}]
    fixed = W.load(tmp_path / "s.pt2")
    assert fixed(torch.randn(1, 3, 64, 80))["out"].shape == (1, 5, 64, 80)
    fixed_size = r"exported for a fixed input of batch 1, 64x80; got batch 2, 64x80: export it"
    with pytest.raises(ValueError, match=fixed_size + " with --dynamic"):
        fixed(torch.randn(2, 3, 64, 80))
    with pytest.raises(ExportError, match=r"must end in \.onnx or \.pt2"):
        export(m, tmp_path / "m.bin")
    with pytest.raises(ExportError, match=r"sides >= 33"):
        export(m, tmp_path / "m.pt2", size=(1, 8, 8))
    with pytest.raises(ExportError, match=r"output must be one of"):
        export(m, tmp_path / "m.pt2", output="argmax")


def test_fp16_onnx_keeps_float32_io_halves_the_file_and_matches_eager(files, tmp_path) -> None:
    m = W.load(files["weights"])
    report = export(m, tmp_path / "h.onnx", precision="fp16")
    assert [c["size"] for c in report.checks] == [[1, 65, 81], [2, 50, 77]]
    assert all(c["ok"] and c["max_rel"] <= 1e-2 for c in report.checks)
    proto = onnx.load(str(tmp_path / "h.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    halves = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 10
    assert (tmp_path / "h.onnx").stat().st_size < 0.6 * files["onnx"].stat().st_size
    loaded = W.load(tmp_path / "h.onnx")
    assert loaded.metadata["export"]["export_precision"] == "fp16"
    assert loaded.metadata["class_names"] == NAMES
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        ref = m(x)["out"]
    got = loaded(x)["out"]
    assert got.dtype == torch.float32
    assert float((ref.argmax(1) == got.argmax(1)).double().mean()) > 0.99
    with pytest.raises(ExportError, match=r"fp16 export writes ONNX"):
        export(m, tmp_path / "h.pt2", precision="fp16")
