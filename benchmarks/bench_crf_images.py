"""Dense CRF over a set of real images: atrous.crf.dense_crf against pydensecrf2 (issues 14, 31).

    PYTHONPATH=src python benchmarks/bench_crf_images.py --suite --out benchmarks/results/crf_images
    PYTHONPATH=src python benchmarks/bench_crf_images.py --suite --parts per-core --threads 1,2 \\
        --out benchmarks/results/crf_per_core
    PYTHONPATH=src python benchmarks/bench_crf_images.py \\
        [IMAGES_OR_FOLDERS ...] [--sizes 500x375,1000x750] [--labels 21] \\
        [--probs onehot|net --model runs/deploy_mnv2/model.safetensors] [--limit N]

``--suite`` is the whole benchmark in one run (over an hour here): the *per-core* part (issue
31: 21 labels at 500x375 with ours on each of ``--threads``, default 1 and 2, checked against
the issue's targets), then at the largest thread count 21 labels at 1000x750, 150 labels and a
network's probabilities at 500x375, and 7 varied images at 2000x1500 for linearity, with a
summary table; ``--parts`` runs some of them. Every table names the CPU (``lscpu``). pydensecrf2 is read from ``--ref-path``
(default ``/work/crfref_site``: ``pip install --target /work/crfref_site pydensecrf2``).

Without image arguments the set is the real images of ``../shared/data``: 20 CamVid val street
frames, the VOC, ADE20K and Cityscapes samples and 3 membrane (EM, greyscale) images. Each
image is resized to each size; the probabilities are noisy one-hots (``--probs onehot``:
softmax of 1.5 * one-hot of a smooth random label map + N(0, 1), ``--labels`` classes) or a
real network's (``--probs net``: softmax of ``--model`` on the image, its own classes).

Every measurement runs in a fresh process, as ``atrous predict --crf`` on one image does:
- ours: the *first call* (from the call; the process's ``import`` is reported apart), then
  a *new size* call (same process, positional-kernel cache cleared: a running service meeting
  a size it has not seen), then a *warm* repeat; peak RSS growth over the first call (VmHWM);
  the lattice vertex counts of both kernels (the C++ builds the same lattice);
- pydensecrf2: one call in its own fresh process (it has no warm-up), its peak RSS growth.
Each is run ``--repeat`` times (default 2) and its fastest kept: this VM stalls now and then (a
single run once showed a warm call twice as slow as the first call before it). The runs are
rounds over the whole set (ours then the C++ on each image), so an image's runs are minutes
apart and a stall that outlasts one run cannot hit all of them; every round's first call is
listed with the CPU time the machine spent elsewhere meanwhile (other processes, the kernel)
and the time the host stole from this VM's cores (``/proc/stat``), which names a slow run's
cause.
Label agreement: argmax of ours against the C++'s. The summary gives, per size, the median and
the worst ratio (ours / C++) over the set for each of first call, new size and warm, and the
median and worst memory ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PARAMS = {"pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0, "bi_xy_std": 67.0, "bi_rgb_std": 3.0}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


CPU = cpu_model()


def _native_built() -> bool:
    """Whether atrous.crf's compiled part is built (the C++ comparison's subject)."""
    sys.path.insert(0, str(ROOT / "src"))
    from atrous.crf import native

    return native.available()


def default_images() -> list[Path]:
    cam = sorted((DATA / "camvid" / "val").glob("*.jpg"))
    step = max(1, len(cam) // 20)
    return (
        cam[::step][:20]
        + sorted((DATA / "voc_sample").rglob("JPEGImages/*.jpg"))
        + sorted((DATA / "ade20k_sample" / "images").rglob("*.jpg"))
        + sorted((DATA / "cityscapes_sample" / "leftImg8bit").rglob("*.png"))
        + sorted((DATA / "membrane" / "image").glob("*.png"))[:3]
    )


def expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def onehot_probs(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Softmax of 1.5 * one-hot of a smooth random label map (discs) + N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    label = np.zeros((h, w), dtype=np.int64)
    for k in range(1, 12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.08, 0.3) * min(h, w)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    scores = 1.5 * np.eye(c, dtype=np.float32)[label % c].transpose(2, 0, 1)
    scores += rng.normal(0, 1.0, size=(c, h, w)).astype(np.float32)
    p = np.exp(scores - scores.max(0))
    return np.ascontiguousarray(p / p.sum(0), dtype=np.float32)


def load_segmenter(model: str | Path, threads: int) -> Any:
    """The Segmenter of trained weights, for ``--probs net``."""
    import torch

    import atrous.weights as W
    from atrous.inference import Segmenter

    torch.set_num_threads(threads)
    return Segmenter.from_model(W.load(model))


def prepare(
    path: Path, size: tuple[int, int], probs: str, labels: int, seg: Any, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from atrous.imageio import read_image

    w, h = size
    resized = Image.fromarray(read_image(path)).resize((w, h), Image.BILINEAR)
    img = np.ascontiguousarray(np.asarray(resized))
    if probs == "net":
        p = next(seg.predict_many([img], "proba"))  # (C, H, W)
        p = np.ascontiguousarray(np.asarray(p, dtype=np.float32))
    else:
        p = onehot_probs(h, w, labels, seed)
    return img, p


# --- the child processes --------------------------------------------------------------------


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _machine_cpu() -> tuple[float, float]:
    """Seconds of CPU time the whole machine has been busy (user, system, interrupts: every
    core) and stolen by the host, from ``/proc/stat`` (zeros where there is none)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Interference:
    """What else the machine did during a timed call: CPU seconds busy outside this process
    (other processes, the kernel's own work) and stolen by the host (a VM's cores running
    someone else), each from the kernel's 10 ms ticks (so +-0.01 s)."""

    def __enter__(self) -> Interference:
        self.busy, self.steal = _machine_cpu()
        self.own = _own_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, steal = _machine_cpu()
        self.other_s = max(0.0, (busy - self.busy) - (_own_cpu() - self.own))
        self.steal_s = steal - self.steal


def child(method: str, npz: str, out: str, threads: int, iterations: int) -> None:
    """One fresh process: time ``method`` on the inputs in ``npz``; JSON to stdout."""
    t_start = time.perf_counter()
    if method == "ours":
        import torch

        torch.set_num_threads(threads)
        from atrous.crf import clear_kernel_cache, dense_crf
    else:
        import pydensecrf.densecrf as dcrf
    t_import = time.perf_counter() - t_start
    z = np.load(npz)
    img, probs = z["image"], z["probs"]
    c, h, w = probs.shape
    base = _vm("VmRSS")
    res: dict[str, Any] = {"import_s": t_import}
    if method == "ours":
        with Interference() as busy:
            t0 = time.perf_counter()
            q = dense_crf(img, probs, iterations=iterations, **PARAMS)
            res["first_s"] = time.perf_counter() - t0
        res["other_cpu_s"], res["steal_s"] = busy.other_s, busy.steal_s
        res["peak_mb"] = _vm("VmHWM") - base
        clear_kernel_cache()
        t0 = time.perf_counter()
        dense_crf(img, probs, iterations=iterations, **PARAMS)
        res["new_size_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dense_crf(img, probs, iterations=iterations, **PARAMS)
        res["warm_s"] = time.perf_counter() - t0
        from atrous.crf.kernels import GaussianKernel, bilateral_features, positional_kernel

        t = torch.from_numpy(img.copy())[None]
        feats = bilateral_features(t, PARAMS["bi_xy_std"], PARAMS["bi_rgb_std"])
        res["v_bi"] = GaussianKernel(feats).lattice.num_vertices
        pk = positional_kernel(1, h, w, PARAMS["pos_xy_std"], torch.device("cpu"), "lattice")
        res["v_pos"] = pk.lattice.num_vertices
    else:
        with Interference() as busy:
            t0 = time.perf_counter()
            d = dcrf.DenseCRF2D(w, h, c)
            d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(probs, 1e-30)).reshape(c, -1)))
            d.addPairwiseGaussian(sxy=PARAMS["pos_xy_std"], compat=PARAMS["pos_w"])
            d.addPairwiseBilateral(
                sxy=PARAMS["bi_xy_std"],
                srgb=PARAMS["bi_rgb_std"],
                rgbim=np.array(img, order="C"),
                compat=PARAMS["bi_w"],
            )
            q = np.array(d.inference(iterations)).reshape(c, h, w)
            res["first_s"] = time.perf_counter() - t0
        res["other_cpu_s"], res["steal_s"] = busy.other_s, busy.steal_s
        res["peak_mb"] = _vm("VmHWM") - base
    np.save(out, np.asarray(q).argmax(0).astype(np.uint8))
    print(json.dumps(res))


def run_child(
    method: str, npz: str, out: str, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    ref_site = [args.ref_path] if args.ref_path else []
    pythonpath = os.pathsep.join([str(ROOT / "src"), *ref_site, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    cmd = [sys.executable, __file__, "--child", method, npz, out]
    cmd += ["--threads", str(threads), "--iterations", str(args.iterations)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{method} failed on {npz}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the parent --------------------------------------------------------------------------------


def _best(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """The fastest times of two runs, the larger peak memory; ``runs`` lists every run's first
    call with what else the machine did meanwhile (CPU seconds: other, stolen)."""
    run = [round(b["first_s"], 3), round(b["other_cpu_s"], 2), round(b["steal_s"], 2)]
    if a is None:
        return {**b, "runs": [run]}
    out = {k: max(v, b[k]) if k == "peak_mb" else min(v, b[k]) for k, v in a.items() if k != "runs"}
    return {**out, "runs": [*a["runs"], run]}


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")


def run_set(
    files: list[Path],
    sizes: list[tuple[int, int]],
    probs: str,
    labels: int,
    seg: Any,
    args: argparse.Namespace,
    title: str,
    threads: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every image at every size, ours on ``threads`` threads against the C++ (one thread:
    it has no other): the rows and the markdown lines."""
    rows: list[dict[str, Any]] = []
    lines = [f"# {title}"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            lines += [
                "",
                f"## {size[0]}x{size[1]}, ours on {threads} thread{'s' if threads > 1 else ''}"
                f" ({CPU})",
                "",
                "| image | V positional | V bilateral (per pixel) | labels | ours first s "
                "(import s) | ours first s, every round [CPU s busy elsewhere / stolen] "
                "| new size s | warm s | C++ s | first / C++ | new size / C++ "
                "| warm / C++ | peak MB ours / C++ | label agreement |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            print("\n".join(lines[-6:]), flush=True)
            # round after round over the whole set, so that an image's runs are minutes apart
            # (a stall of the machine that outlasts one run does not hit both); each round runs
            # ours then the C++ on the image, and each keeps its fastest over the rounds
            best: list[list[Any]] = [[None, None] for _ in files]
            n_rounds = max(1, args.repeat)
            for rnd in range(n_rounds):
                for i, f in enumerate(files):
                    img, p = prepare(f, size, probs, labels, seg, seed=i)
                    npz = os.path.join(tmp, "in.npz")
                    np.savez(npz, image=img, probs=p)
                    outs = [os.path.join(tmp, f"{m}{i}.npy") for m in ("ours", "ref")]
                    o = run_child("ours", npz, outs[0], args, threads)
                    r = run_child("ref", npz, outs[1], args, 1)
                    best[i] = [_best(best[i][0], o), _best(best[i][1], r)]
                    if rnd < n_rounds - 1:
                        print(
                            f"  round {rnd + 1}/{n_rounds}, {f.name}: ours {o['first_s']:.3f} s"
                            f", C++ {r['first_s']:.3f} s",
                            flush=True,
                        )
            n, n_labels = size[0] * size[1], p.shape[0]  # (every image's labels: the count
            # asked for, or the model's)
            for i, f in enumerate(files):
                ours, ref = best[i]
                ours_labels = np.load(os.path.join(tmp, f"ours{i}.npy"))
                ref_labels = np.load(os.path.join(tmp, f"ref{i}.npy"))
                agree = float((ours_labels == ref_labels).mean())
                row = {
                    "image": f.name,
                    "size": f"{size[0]}x{size[1]}",
                    "threads": threads,
                    "labels": n_labels,
                    "ours": ours,
                    "ref": ref,
                    "agreement": agree,
                    "first_ratio": ours["first_s"] / ref["first_s"],
                    "new_size_ratio": ours["new_size_s"] / ref["first_s"],
                    "warm_ratio": ours["warm_s"] / ref["first_s"],
                    "mem_ratio": ours["peak_mb"] / max(ref["peak_mb"], 1e-9),
                }
                rows.append(row)
                runs = ", ".join(
                    f"{a:.3f}" + (f" [{b:.2f}/{c:.2f}]" if b >= 0.05 or c >= 0.01 else "")
                    for a, b, c in ours["runs"]
                )
                line = (
                    f"| {f.name} | {ours['v_pos']} | {ours['v_bi']} ({ours['v_bi'] / n:.2f}) |"
                    f" {n_labels} | {ours['first_s']:.3f} ({ours['import_s']:.2f}) | {runs} |"
                    f" {ours['new_size_s']:.3f} | {ours['warm_s']:.3f} | {ref['first_s']:.3f} |"
                    f" {row['first_ratio']:.2f} | {row['new_size_ratio']:.2f} |"
                    f" {row['warm_ratio']:.2f} | {ours['peak_mb']:.0f} / {ref['peak_mb']:.0f} |"
                    f" {100 * agree:.3f}% |"
                )
                lines.append(line)
                print(line, flush=True)
            sel = [r for r in rows if r["size"] == f"{size[0]}x{size[1]}"]
            ratios = "; ".join(f"{k}: {v}" for k, v in summarize(sel).items())
            text = (
                f"\n**{size[0]}x{size[1]}, {len(sel)} images, {threads} threads, {CPU}** "
                f"(ratio ours / C++): {ratios}."
            )
            lines.append(text)
            print(text, flush=True)
    return rows, lines


def summarize(sel: list[dict[str, Any]]) -> dict[str, str]:
    """Median and worst ratio (with the worst image) of each timing and of memory."""
    out = {}
    for key, what in (
        ("first_ratio", "first call"),
        ("new_size_ratio", "new size"),
        ("warm_ratio", "warm"),
        ("mem_ratio", "peak memory"),
    ):
        v = [r[key] for r in sel]
        worst = max(sel, key=lambda r: r[key])
        out[what] = f"median {pct(v, 50):.2f}, worst {max(v):.2f} ({worst['image']})"
    out["label agreement"] = f"worst {100 * min(r['agreement'] for r in sel):.3f}%"
    per_mp = [r["ours"]["first_s"] / (_pixels(r["size"]) / 1e6) for r in sel]
    out["ours first call"] = f"median {pct(per_mp, 50):.2f} s/MP"
    return out


def _pixels(size: str) -> int:
    w, h = (int(v) for v in size.split("x"))
    return w * h


# The images of the linearity part (varied vertex densities): two street frames, the
# smoothest and the most textured VOC sample, a textured ADE20K scene, Cityscapes, one EM frame.
LINEARITY_SET = (
    "0016E5_07959.jpg",
    "0016E5_08119.jpg",
    "sample_1.jpg",
    "sample_23.jpg",
    "ADE_val_00000002.jpg",
    "frankfurt_000000_000294_leftImg8bit.png",
    "0.png",
)


# Issue 31's targets for the per-core part (500x375, 21 labels, first call, ours / C++):
# threads -> (median, worst); label agreement and peak memory hold at every thread count.
TARGETS = {1: (0.5, 0.7), 2: (0.33, 0.5)}
MIN_AGREEMENT, MAX_MEMORY = 0.999, 1.3
PARTS = ("per-core", "onehot-21", "onehot-150", "net", "linearity")


def verdict(sel: list[dict[str, Any]], threads: int) -> str:
    """Issue 31's targets against the rows of one thread count."""
    first = [r["first_ratio"] for r in sel]
    med, worst = pct(first, 50), max(first)
    agree = min(r["agreement"] for r in sel)
    mem = max(r["mem_ratio"] for r in sel)
    checks = []
    if threads in TARGETS:
        t_med, t_worst = TARGETS[threads]
        checks += [
            f"median {med:.2f} <= {t_med} {'met' if med <= t_med else 'MISSED'}",
            f"worst {worst:.2f} <= {t_worst} {'met' if worst <= t_worst else 'MISSED'}",
        ]
    checks += [
        f"agreement {100 * agree:.3f}% >= 99.9% {'met' if agree >= MIN_AGREEMENT else 'MISSED'}",
        f"peak memory {mem:.2f} <= {MAX_MEMORY} {'met' if mem <= MAX_MEMORY else 'MISSED'}",
    ]
    return "; ".join(checks)


def suite(files: list[Path], args: argparse.Namespace) -> None:
    """The whole benchmark in one run (``--parts`` picks some): the per-core part (issue 31:
    500x375, 21 labels, at every ``--threads`` count), 21 labels at 1000x750, 150 labels and a
    network's probabilities at 500x375, and 7 images at 2000x1500 for linearity (these at the
    largest thread count)."""
    all_rows: list[dict[str, Any]] = []
    parts: list[str] = []
    summary = [
        "| part | size | threads | labels | images | first call: median / worst | new size "
        "| warm | peak memory | worst agreement | ours s/MP (first, median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts: list[str] = []
    lin = [f for f in files if f.name in LINEARITY_SET]
    seg = None
    model = Path(args.model) if args.model else ROOT / "runs/deploy_mnv2/model.safetensors"
    most = max(args.thread_counts)
    plan = [
        ("per-core", files, [(500, 375)], "onehot", 21, args.thread_counts),
        ("onehot-21", files, [(1000, 750)], "onehot", 21, [most]),
        ("onehot-150", files, [(500, 375)], "onehot", 150, [most]),
        ("net", files, [(500, 375)], "net", 0, [most]),
        ("linearity", lin, [(2000, 1500)], "onehot", 21, [most]),
    ]
    wanted = set(args.parts.split(",")) if args.parts else set(PARTS)
    for name, fs, sizes, probs, labels, counts in plan:
        if name not in wanted:
            continue
        if probs == "net":
            if not model.is_file():
                note = (
                    f"# {name}: not run, no model at {model} (train one with "
                    "`make camvid-deploy` or pass --model)"
                )
                parts += ["", note]
                print(parts[-1], flush=True)
                continue
            seg = load_segmenter(model, most)
        source = f" ({model.name})" if probs == "net" else f" ({labels} labels)"
        for threads in counts:
            title = f"{name}: {len(fs)} images, probabilities {probs}{source}, {threads} threads"
            rows, lines = run_set(fs, sizes, probs, labels, seg, args, title, threads)
            for r in rows:
                r["part"] = name
            all_rows += rows
            parts += [""] + lines
            for w, h in sizes:
                sel = [r for r in rows if r["size"] == f"{w}x{h}"]
                sm = summarize(sel)
                timings = " | ".join(
                    sm[k].replace("median ", "").replace(", worst ", " / ")
                    for k in ("first call", "new size", "warm", "peak memory")
                )
                summary.append(
                    f"| {name} | {w}x{h} | {threads} | {sel[0]['labels']} | {len(sel)} | "
                    f"{timings} | {sm['label agreement'][6:]} | {sm['ours first call'][7:]} |"
                )
                if name == "per-core":
                    verdicts.append(f"- {threads} thread(s): {verdict(sel, threads)}")
    # linearity: the same images at every size (the 21-label part gives the two smaller ones)
    lin_names = {f.name for f in lin}
    lin_rows = [
        r
        for r in all_rows
        if r["image"] in lin_names
        and r["threads"] == most
        and r["part"] in ("per-core", "onehot-21", "linearity")
    ]
    table = [
        "| size | images | ours first s/MP (median) | ours warm s/MP | C++ s/MP | "
        "ours warm us per lattice vertex (pos + bi, median) |",
        "|---|---|---|---|---|---|",
    ]
    for size in sorted({r["size"] for r in lin_rows}, key=_pixels):
        sel = [r for r in lin_rows if r["size"] == size]
        mp = _pixels(size) / 1e6
        per_v = [1e6 * r["ours"]["warm_s"] / (r["ours"]["v_pos"] + r["ours"]["v_bi"]) for r in sel]
        table.append(
            f"| {size} | {len(sel)} | {pct([r['ours']['first_s'] / mp for r in sel], 50):.2f}"
            f" | {pct([r['ours']['warm_s'] / mp for r in sel], 50):.2f}"
            f" | {pct([r['ref']['first_s'] / mp for r in sel], 50):.2f}"
            f" | {pct(per_v, 50):.2f} |"
        )
    compiled = "compiled mean field" if _native_built() else "torch path (no compiled part)"
    head = [
        f"# Dense CRF over real images against pydensecrf2 (issues 14, 31), {CPU}, "
        f"{args.iterations} iterations, DeepLab v2 parameters, ours on "
        f"{'/'.join(map(str, args.thread_counts))} threads ({compiled}) against the C++ on one "
        f"(its only), each measurement a fresh process (fastest of {args.repeat} rounds over the "
        f"set); "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        "",
        f"## Summary (ratio ours / C++), {CPU}",
        "",
    ]
    if verdicts:
        summary += ["", "Issue 31's targets (500x375, 21 labels, first call):", "", *verdicts]
    linearity = ["", f"## Linearity (the same images at every size, {most} threads, {CPU})", ""]
    text = "\n".join(head + summary + linearity + table + parts) + "\n"
    print(text, flush=True)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(all_rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="*", help="image files or folders (default: ../shared/data)")
    ap.add_argument("--sizes", default="500x375,1000x750")
    ap.add_argument("--labels", type=int, default=21)
    ap.add_argument("--probs", choices=("onehot", "net"), default="onehot")
    ap.add_argument("--model", help="weights for --probs net")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images")
    ap.add_argument(
        "--threads",
        default="1,2",
        help="ours' thread counts, comma-separated (the per-core part runs at each, the "
        "other parts and a plain run at the largest)",
    )
    ap.add_argument("--parts", help=f"the suite's parts, comma-separated (default all: {PARTS})")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="rounds over the set, each a fresh process per image and method; each number is "
        "the fastest (a shared VM stalls now and then: one stall is not the code)",
    )
    ap.add_argument(
        "--ref-path",
        default="/work/crfref_site",
        help="where pydensecrf2 is installed (pip install --target)",
    )
    ap.add_argument("--out", help="write the markdown and JSON here (no suffix)")
    ap.add_argument(
        "--suite",
        action="store_true",
        help="issue 14's whole benchmark: 21 labels at 500x375 and 1000x750, 150 "
        "labels and a network's probabilities (--model, default the CamVid "
        "MobileNetV2 of runs/deploy_mnv2) at 500x375, and 7 images at 2000x1500 "
        "for linearity",
    )
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "NPZ", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.thread_counts = sorted({int(t) for t in str(args.threads).split(",")})
    if args.child:
        child(*args.child, args.thread_counts[0], args.iterations)
        return
    files = expand(args.images) if args.images else default_images()
    if args.limit:
        files = files[: args.limit]
    if args.suite:
        suite(files, args)
        return
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    seg = None
    threads = max(args.thread_counts)
    if args.probs == "net":
        seg = load_segmenter(args.model, threads)
    source = f" ({args.model})" if seg is not None else f" ({args.labels} labels)"
    title = (
        f"dense CRF over {len(files)} real images, {args.iterations} iterations, DeepLab v2 "
        f"parameters, probabilities: {args.probs}{source}, {threads} threads, {CPU}, each "
        f"measurement a fresh process (fastest of {args.repeat} rounds over the set); load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    rows, lines = run_set(files, sizes, args.probs, args.labels, seg, args, title, threads)
    if args.out:
        Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
