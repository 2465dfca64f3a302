"""TensorFlow V2 checkpoints read without TensorFlow: the small checkpoints TensorFlow saved
(one and two shards, ``tests/fixtures/tf_small``) tensor for tensor against ``expected.json``,
every form of path, and what the fixtures lack (every dtype, several index blocks), written
by ``tf_writer``, which reproduces TensorFlow's index bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tf_recipe
from tf_writer import Entry, Header, write_checkpoint, write_index, write_tarball

import atrous.weights as W
from atrous.weights._sstable import block_entries, masked_crc32c, read_block, varint
from atrous.weights.tf_checkpoint import (
    _open_bundle,
    _parse_index,
    is_model_tensor,
    list_tf_checkpoint,
    read_tf_checkpoint,
)

SMALL = Path(__file__).parents[1] / "fixtures" / "tf_small"
CASES = ["one_shard", "two_shards"]


def check_tensor(array: np.ndarray, spec: dict) -> None:
    """``array`` is the tensor ``expected.json`` describes, bit for bit."""
    name, dtype, shape = spec["name"], np.dtype(spec["dtype"]), tuple(spec["shape"])
    assert (array.dtype, array.shape) == (dtype, shape), name
    assert array.tobytes().hex() == spec["hex"], name
    np.testing.assert_array_equal(array, np.array(spec["values"], dtype).reshape(shape), name)
    assert array.flags.writeable and array.flags.c_contiguous, name


@pytest.mark.parametrize("case", CASES)
def test_every_tensor_bit_exact(case: str, expected: dict) -> None:
    tensors = read_tf_checkpoint(SMALL / case / "model.ckpt", model_only=False)
    specs = expected[case]["tensors"]
    assert list(tensors) == [t["name"] for t in specs]  # the index's (sorted) order
    for spec in specs:
        check_tensor(tensors[spec["name"]], spec)


@pytest.mark.parametrize("case", CASES)
def test_model_only_drops_slots_and_global_step(case: str, expected: dict) -> None:
    model = read_tf_checkpoint(SMALL / case / "model.ckpt")
    assert set(model) == set(expected[case]["model_tensors"]) - {"global_step"}
    skipped = {t["name"] for t in expected[case]["tensors"] if t["skip"]}
    assert len(skipped) == 4 and not skipped & set(model)
    for spec in expected[case]["tensors"]:
        if spec["name"] in model:
            check_tensor(model[spec["name"]], spec)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("conv1/weights", True),
        ("Momentum/weights", True),
        ("conv1/weights/AdamW", True),
        ("conv1/weights/Momentum", False),
        ("conv1/weights/Adam", False),
        ("conv1/weights/Adam_1", False),
        ("conv1/BatchNorm/gamma/RMSProp_1", False),
        ("conv1/weights/ExponentialMovingAverage", False),
        ("global_step", False),
        ("beta1_power", False),
        ("model/conv/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", False),
        ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", False),
    ],
)
def test_is_model_tensor(name: str, model: bool) -> None:
    assert is_model_tensor(name) is model


@pytest.mark.parametrize("case", CASES)
def test_list_reads_the_index_only(case: str, expected: dict, tmp_path: Path) -> None:
    shutil.copy(SMALL / case / "model.ckpt.index", tmp_path)  # no data files
    listing = list_tf_checkpoint(tmp_path / "model.ckpt", model_only=False)
    assert listing == {
        t["name"]: (t["dtype"], tuple(t["shape"])) for t in expected[case]["tensors"]
    }
    model = list_tf_checkpoint(tmp_path)
    assert set(model) == set(read_tf_checkpoint(SMALL / case))


def test_entries_and_crcs_match_expected(expected: dict) -> None:
    for case in CASES:
        header, entries = _parse_index(_open_bundle(SMALL / case, want_data=False, max_tar_bytes=0))
        assert header.num_shards == expected[case]["num_shards"] and not header.big_endian
        for spec in expected[case]["tensors"]:
            e = entries[spec["name"]]
            assert (e.shard_id, e.offset, e.size) == (spec["shard"], spec["offset"], spec["size"])
            assert e.crc32c == spec["crc32c"] == masked_crc32c(bytes.fromhex(spec["hex"]))


def _rename(folder: Path, new_prefix: str) -> None:
    for file in folder.iterdir():
        file.rename(folder / file.name.replace("model.ckpt", new_prefix))


def _tarball(folder: Path, suffix: str) -> Path:
    """The checkpoint in ``folder`` packed as the zoo packs one, beside a folder and a graph."""
    inner = "deeplabv3_pascal_train_aug"
    members: dict[str, bytes | None] = {inner: None, f"{inner}/frozen_inference_graph.pb": b"x"}
    members |= {f"{inner}/{f.name}": f.read_bytes() for f in sorted(folder.iterdir())}
    return write_tarball(folder.parent / f"{folder.name}{suffix}", members)


FORMS = {
    "prefix": lambda d: d / "model.ckpt",
    "prefix_str": lambda d: str(d / "model.ckpt"),
    "index": lambda d: d / "model.ckpt.index",
    "data_file": lambda d: next(d.glob("*.data-*")),
    "folder": lambda d: d,
    "prefix_30000": lambda d: (_rename(d, "model.ckpt-30000"), d / "model.ckpt-30000")[1],
    "folder_30000": lambda d: (_rename(d, "model.ckpt-30000"), d)[1],
    "tar_gz": lambda d: _tarball(d, ".tar.gz"),
    "tgz": lambda d: _tarball(d, ".tgz"),
    "tar": lambda d: _tarball(d, ".tar"),
    "tar_gz_30000": lambda d: (_rename(d, "model.ckpt-30000"), _tarball(d, ".tar.gz"))[1],
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES)
def test_every_path_form(case: str, form: str, expected: dict, small: Path) -> None:
    path = FORMS[form](small / case)
    tensors = read_tf_checkpoint(path, model_only=False)
    assert list(tensors) == [t["name"] for t in expected[case]["tensors"]]
    for spec in expected[case]["tensors"]:
        check_tensor(tensors[spec["name"]], spec)
    assert set(list_tf_checkpoint(path)) == set(read_tf_checkpoint(path))
    assert W.read_tf_checkpoint is read_tf_checkpoint and W.list_tf_checkpoint is list_tf_checkpoint


def test_writer_reproduces_tensorflow_index(tmp_path: Path) -> None:
    """The test writer is trustworthy: it rebuilds both fixture indexes byte for byte."""
    for case in CASES:
        bundle = _open_bundle(SMALL / case, want_data=False, max_tar_bytes=0)
        header, entries = _parse_index(bundle)
        ours = {
            n: Entry(e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c)
            for n, e in entries.items()
        }
        write_index(tmp_path / case, Header(num_shards=header.num_shards), ours)
        assert (tmp_path / f"{case}.index").read_bytes() == bundle.index


def test_every_dtype(tmp_path: Path) -> None:
    # Values that bfloat16 holds exactly (8 bits of mantissa).
    values = np.array([0.0, -1.5, 3.140625, 65280.0, -np.inf, 2.0**-10 * 1.0234375]).reshape(2, 3)
    stored = {  # enum: numpy dtype, as stored
        1: "<f4",
        2: "<f8",
        3: "<i4",
        4: "u1",
        5: "<i2",
        6: "i1",
        8: "<c8",
        9: "<i8",
        10: "?",
        17: "<u2",
        18: "<c16",
        19: "<f2",
        22: "<u4",
        23: "<u8",
    }
    tensors = {}
    for enum, dtype in stored.items():
        with np.errstate(invalid="ignore", over="ignore"):
            data = np.abs(values).clip(0, 100).astype(dtype)
        tensors[f"t{enum:02d}"] = (enum, (2, 3), data.tobytes())
    f32 = values.astype(np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype("<u2")
    tensors["t14"] = (14, (2, 3), bf16.tobytes())
    write_checkpoint(tmp_path / "model.ckpt", tensors, num_shards=3)
    out = read_tf_checkpoint(tmp_path)
    for enum, dtype in stored.items():
        assert out[f"t{enum:02d}"].dtype == np.dtype(dtype).newbyteorder("=")
        assert out[f"t{enum:02d}"].tobytes() == tensors[f"t{enum:02d}"][2]
    # bfloat16 -> float32 by the 16-bit shift: the values come back exactly.
    bf = out["t14"]
    assert bf.dtype == np.float32 and bf.flags.writeable
    np.testing.assert_array_equal(bf, f32)
    assert list_tf_checkpoint(tmp_path)["t14"] == ("bfloat16", (2, 3))


def test_index_with_many_data_blocks(tmp_path: Path) -> None:
    """Zoo indexes can outgrow one block: the reader follows the index block."""
    tensors = {
        f"layer_{i:03d}/BatchNorm/{leaf}": (1, (i % 7,), np.full(i % 7, i, "<f4").tobytes())
        for i in range(150)
        for leaf in ("beta", "gamma")
    }
    tensors["empty/weights"] = (1, (0, 3), b"")
    tensors["scalar"] = (9, (), np.int64(7).tobytes())
    write_checkpoint(tmp_path / "model.ckpt", tensors, num_shards=2, block_size=512)
    index = (tmp_path / "model.ckpt.index").read_bytes()
    footer = index[-48:]
    _, pos = varint(footer, 0)
    _, pos = varint(footer, pos)
    offset, pos = varint(footer, pos)
    size, _ = varint(footer, pos)
    assert len(list(block_entries(read_block(index, offset, size, "index"), "index"))) > 10
    out = read_tf_checkpoint(tmp_path / "model.ckpt")
    assert list(out) == sorted(tensors)
    for name, (_, shape, data) in tensors.items():
        assert out[name].shape == shape and out[name].tobytes() == data


@pytest.mark.parametrize("case", CASES)
def test_tf_recipe_rebuilds_the_small_fixture(case: str, expected: dict) -> None:
    """``tests/weights/tf_recipe.py`` (a copy of the reference's value rule) gives every tensor
    of the small checkpoints bit for bit, so later tests can rebuild weights without them."""
    for spec in expected[case]["tensors"]:
        value = tf_recipe.value(spec["name"], spec["shape"], spec["dtype"])
        assert value.tobytes().hex() == spec["hex"], spec["name"]
