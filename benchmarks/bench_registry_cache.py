"""First and second ``atrous.weights.load`` of a TF zoo entry through the cache (#27).

A full-size Xception-65 v3+ VOC checkpoint (the ``xception65_v3plus_voc21`` parity fixture:
the zoo's variables and shapes, 165 MB of float32, valued by the reference rule) is written as
the zoo's tarball and served from 127.0.0.1 under the real file name of
``tf:xception65_coco_voc_trainaug``. Each step runs in a fresh process and times the call
alone (imports excluded):

1. first ``load(name)``: download, CRC32C of every tensor, SHA-256 record, conversion, the
   atrous safetensors written and its record, then the model loaded from it;
2. second ``load(name)`` in a new process: the converted file's SHA-256 checked, loaded;
3. for comparison, ``load(tarball)`` of the same file by path (read, CRC, convert, no cache);
4. ``fetch(name)`` of the cached tarball (its SHA-256 against the record).

The fixture's values repeat with a short period, so its tarball is 6.5 MB where the zoo's is
439 MB; ``--random`` fills the same variables with random float32 instead, which compresses
as little as real weights do (a 153 MB tarball), so that step 3 pays the gzip inflation the
real file costs.

    PYTHONPATH=src python benchmarks/bench_registry_cache.py [--random]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from http_server import FileServer  # noqa: E402
from registry_files import tf_tarball  # noqa: E402

NAME = "tf:xception65_coco_voc_trainaug"
STEP = """
import json, sys, time
import torch
torch.set_num_threads(2)
from atrous import weights
t0 = time.perf_counter()
out = {step!r}
if out == "fetch":
    weights.fetch({name!r})
else:
    model = weights.load({what!r})
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def run(step: str, what: str, env: dict) -> float:
    code = STEP.format(step=step, name=NAME, what=what)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def random_tarball(variables_file: str) -> bytes:
    """The fixture's variables filled with random float32 (int64 global_step), as a tarball."""
    import io
    import tarfile

    import numpy as np
    from registry_files import DTYPES, _variables
    from tf_writer import write_checkpoint

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        raw = {}
        for var, (shape, dtype) in _variables(variables_file).items():
            value = (
                rng.standard_normal(shape).astype(np.float32)
                if dtype == "float32"
                else (np.full(shape, 30000, np.int64))
            )
            raw[var] = (DTYPES[dtype], shape, value.tobytes())
        write_checkpoint(Path(tmp) / "model.ckpt", raw)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for part in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
                tar.add(Path(tmp) / part, arcname=f"deeplabv3_fixture/{part}")
        return buf.getvalue()


def main() -> None:
    from atrous.weights import get_weights

    file_name = get_weights(NAME).file_name
    variables = "xception65_v3plus_voc21.variables.txt"
    data = random_tarball(variables) if "--random" in sys.argv else tf_tarball(variables)
    with tempfile.TemporaryDirectory() as tmp, FileServer({file_name: data}, 1800) as server:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "ATROUS_HOME": tmp,
            "ATROUS_MIRROR": server.url,
        }
        local = Path(tmp) / file_name
        local.write_bytes(data)
        rows = {
            "1. first load(name): download, checks, convert, cache": run("load", NAME, env),
            "2. second load(name), new process: cached conversion": run("load", NAME, env),
            "3. load(tarball path): read, CRC, convert (no cache)": run("load", str(local), env),
            "4. fetch(name) of the cached tarball": run("fetch", NAME, env),
        }
        converted = (
            Path(tmp) / "weights" / "deeplabv3_pascal_train_aug_2018_01_04.atrous.safetensors"
        )
        size = converted.stat().st_size / 1e6
    print(f"{NAME}, tarball {len(data) / 1e6:.1f} MB, converted {size:.0f} MB, 2 threads:")
    for label, seconds in rows.items():
        print(f"  {label:58} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
