"""``atrous serve`` under load (issue 13): a bounded load generator on 127.0.0.1 only.

    python benchmarks/bench_serve.py runs/mnv2/model.safetensors runs/r50/model.safetensors
    python benchmarks/bench_serve.py W --concurrency 1,4,16 --requests 8 --soak 300

For each model the server runs as a user starts it (``atrous serve W --port P``, a
subprocess, 2 threads), once with dynamic batching (``--max-batch 8``) and once without
(``--max-batch 1``). At each concurrency a fixed number of requests is sent (``--requests``
per connection, and never past ``--time-limit`` seconds), drawn from real images of mixed
sizes (CamVid val 480x360, VOC, ADE20K, Cityscapes at 1024x512), 5% of them bad (truncated
or not an image). Every reply is checked: a good image's label map must equal the
``Segmenter``'s on the same image (run in this process), a bad one must get a 4xx; the table
counts lost (no reply), wrong and unexpected replies. Reported: throughput, p50/p95/p99
latency, the batch-size histogram (from ``/metrics``), the server's peak RSS (VmHWM); at
concurrency 1, each image sent right after a bare ``Segmenter`` call on it (paired, so the
machine's drift hits both) with the server's ``Server-Timing`` parts; and the model-level
ceiling of batching on this machine (``max_batch`` same-size images as one batch against one
by one). ``--soak S`` then keeps concurrency 16 going for S seconds on the batched server and
samples its RSS and heap trims (``--memory-limit-mb``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def images() -> list[tuple[str, bytes, np.ndarray]]:
    """(name, encoded bytes, RGB) of real images of mixed sizes."""
    from atrous.imageio import read_image

    files = (
        sorted((DATA / "camvid/val").glob("*.[jp][pn]g"))[::10][:8]
        + sorted((DATA / "voc_sample/VOC2012/JPEGImages").glob("*.jpg"))[:3]
        + sorted((DATA / "ade20k_sample/images/validation").glob("*.jpg"))[:2]
        + sorted((DATA / "cityscapes_sample/leftImg8bit").rglob("*.png"))[:1]
    )
    out = []
    for f in files:
        rgb = read_image(f)
        if rgb.shape[1] > 1024:
            h, w = rgb.shape[:2]
            rgb = np.asarray(Image.fromarray(rgb).resize((1024, round(h * 1024 / w))))
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG" if f.suffix == ".jpg" else "PNG", quality=95)
        data = buf.getvalue()
        out.append((f.name, data, read_image_from(data)))
    return out


def read_image_from(data: bytes) -> np.ndarray:
    from atrous.imageio import read_image_bytes

    return read_image_bytes(data)


def bad_requests() -> list[bytes]:
    good = io.BytesIO()
    Image.new("RGB", (300, 200), (90, 120, 30)).save(good, format="JPEG")
    return [good.getvalue()[:400], b"this is not an image", b""]


class Server:
    """``atrous serve`` in a subprocess on a free local port."""

    def __init__(self, weights: str, max_batch: int, threads: int, extra: tuple = ()) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "atrous", "serve", weights, "--port", str(self.port)]
        cmd += ["--max-batch", str(max_batch), "--threads", str(threads), "--max-queue", "256"]
        cmd += ["--log-level", "warning", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        import httpx

        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server died: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not get ready")
            time.sleep(0.2)

    def rss_mb(self, key: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics_text(self) -> str:
        import httpx

        return httpx.get(self.url + "/metrics").text

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric in ``/metrics`` (0 when absent)."""
        prefix = name + " "
        lines = self.metrics_text().splitlines()
        return next((float(ln.split()[-1]) for ln in lines if ln.startswith(prefix)), 0.0)

    def batch_histogram(self) -> dict[int, int]:
        cum = {}
        for line in self.metrics_text().splitlines():
            if line.startswith("atrous_batch_size_bucket{") and "+Inf" not in line:
                le = float(line.split('le="')[1].split('"')[0])
                cum[int(le)] = int(float(line.split()[-1]))
        hist, prev = {}, 0
        for k in sorted(cum):
            hist[k] = cum[k] - prev
            prev = cum[k]
        return {k: v for k, v in hist.items() if v}

    def stop(self) -> int:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


async def load(
    url: str,
    concurrency: int,
    per_conn: int,
    time_limit: float,
    pool: list[tuple[str, bytes, Any]],
    seed: int,
) -> dict[str, Any]:
    """``concurrency`` connections, each sending ``per_conn`` requests (stopping at
    ``time_limit``); returns latencies and the reply checks."""
    import httpx

    rng = random.Random(seed)
    plan = [[rng.choice(pool) for _ in range(per_conn)] for _ in range(concurrency)]
    lat: list[float] = []
    tally = {"ok": 0, "bad_4xx": 0, "wrong": 0, "lost": 0, "unexpected": 0, "rejected_503": 0}
    stop_at = time.monotonic() + time_limit

    async def worker(items: list, client: httpx.AsyncClient) -> None:
        for _name, data, expected in items:
            if time.monotonic() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/v1/segment", content=data, timeout=600)
            except httpx.HTTPError:
                tally["lost"] += 1
                continue
            dt = time.perf_counter() - t0
            if expected is None:
                tally["bad_4xx" if 400 <= r.status_code < 500 else "unexpected"] += 1
                continue
            if r.status_code == 503:
                tally["rejected_503"] += 1
                continue
            if r.status_code != 200:
                tally["unexpected"] += 1
                continue
            got = np.asarray(Image.open(io.BytesIO(r.content)))
            tally["ok" if np.array_equal(got, expected) else "wrong"] += 1
            lat.append(dt)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(worker(items, client) for items in plan))
    wall = time.perf_counter() - t0
    return {"latencies": lat, "wall_s": wall, **tally}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def bench(weights: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import atrous.weights as W
    from atrous.inference import Segmenter

    torch.set_num_threads(args.threads)
    model = W.load(weights)
    arch = model.config["arch"]
    seg = Segmenter.from_model(model)
    imgs = images()
    expected = {name: seg.predict(rgb) for name, _, rgb in imgs}
    good = [(n, d, expected[n]) for n, d, _ in imgs]
    bad = [(f"bad{i}", d, None) for i, d in enumerate(bad_requests())]
    # 5% bad: one bad entry for every 19 good ones
    pool = good * 19 + bad * max(1, len(good) // len(bad))
    ceiling = batching_ceiling(seg, imgs, args.max_batch)
    print(json.dumps({"model_level_batching": ceiling}), flush=True)
    rows = []
    paired = None
    for batched in (True, False):
        server = Server(weights, args.max_batch if batched else 1, args.threads)
        try:
            if batched:
                paired = paired_with_bare(server, seg, imgs, rounds=3)
                summary = {k: v for k, v in paired.items() if k != "pairs"}
                print(json.dumps({"paired_concurrency_1": summary}), flush=True)
            for c in args.concurrency:
                per = max(args.requests, 1) if c > 1 else args.requests * 3
                before = server.batch_histogram()
                res = asyncio.run(load(server.url, c, per, args.time_limit, pool, seed=c))
                after = server.batch_histogram()
                level_hist = {k: v - before.get(k, 0) for k, v in after.items()}
                n = len(res["latencies"])
                not_ok = ("bad_4xx", "wrong", "lost", "unexpected", "rejected_503")
                row = {
                    "model": arch,
                    "batching": batched,
                    "concurrency": c,
                    "requests": n + sum(res[k] for k in not_ok),
                    "throughput": (n / res["wall_s"]) if res["wall_s"] else 0.0,
                    "p50": pct(res["latencies"], 50),
                    "p95": pct(res["latencies"], 95),
                    "p99": pct(res["latencies"], 99),
                    "batch_histogram": {k: v for k, v in level_hist.items() if v},
                    **{k: res[k] for k in ("ok", *not_ok)},
                }
                rows.append(row)
                rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                print(json.dumps(rounded), flush=True)
            peak = server.rss_mb("VmHWM")
            soak = None
            if batched and args.soak:
                soak = run_soak(server, pool, args)
        finally:
            rc = server.stop()
        for r in rows:
            if r["batching"] == batched:
                r.update(peak_rss_mb=peak, exit_code=rc)
        if soak:
            rows[-1]["soak"] = soak
    return {
        "weights": weights,
        "model_level_batching": ceiling,
        "paired_concurrency_1": paired,
        "rows": rows,
    }


def batching_ceiling(seg: Any, imgs: list, max_batch: int, rounds: int = 3) -> dict[str, Any]:
    """What batching can give at most on this machine: ``max_batch`` same-size images
    (CamVid frames) as one ``predict_many`` batch against one by one, alternated ``rounds``
    times in this process; the ratio of the medians (> 1: the batch is faster per image)."""
    from collections import Counter

    shape = Counter(rgb.shape for _, _, rgb in imgs).most_common(1)[0][0]
    same = [rgb for _, _, rgb in imgs if rgb.shape == shape]
    group = (same * max_batch)[:max_batch]
    seg.batch_size = max_batch
    list(seg.predict_many(group, "labels"))  # warm
    one, batch = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for rgb in group:
            seg.predict(rgb)
        one.append((time.perf_counter() - t0) / len(group))
        t0 = time.perf_counter()
        list(seg.predict_many(group, "labels"))
        batch.append((time.perf_counter() - t0) / len(group))
    return {
        "image": f"{shape[1]}x{shape[0]}",
        "batch": max_batch,
        "one_by_one_s_per_image": pct(one, 50),
        "batched_s_per_image": pct(batch, 50),
        "speedup": pct(one, 50) / pct(batch, 50),
    }


def paired_with_bare(server: Server, seg: Any, imgs: list, rounds: int) -> dict[str, Any]:
    """Concurrency 1, each image sent to the server right after a bare ``Segmenter`` call on
    it in this process (paired, so the machine's drift hits both): p50 and p99 of each, and
    the server's Server-Timing parts (median ms)."""
    import httpx

    bare, served, parts = [], [], {}
    with httpx.Client() as client:
        for _ in range(rounds):
            for _, data, rgb in imgs:
                t0 = time.perf_counter()
                seg.predict(rgb)
                bare.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                r = client.post(server.url + "/v1/segment", content=data, timeout=600)
                served.append(time.perf_counter() - t0)
                for part in r.headers.get("server-timing", "").split(", "):
                    if ";dur=" in part:
                        k, v = part.split(";dur=")
                        parts.setdefault(k, []).append(float(v))
    return {
        "bare_p50": pct(bare, 50),
        "bare_p99": pct(bare, 99),
        "server_p50": pct(served, 50),
        "server_p99": pct(served, 99),
        "ratio_p50": pct(served, 50) / pct(bare, 50),
        "ratio_p99": pct(served, 99) / pct(bare, 99),
        "server_timing_ms": {k: round(pct(v, 50), 1) for k, v in parts.items()},
        "pairs": list(zip(bare, served)),
    }


def run_soak(server: Server, pool: list, args: argparse.Namespace) -> dict[str, Any]:
    """Concurrency 16 for ``args.soak`` seconds, the server's RSS sampled between rounds."""
    samples = [(0.0, server.rss_mb())]
    t0 = time.monotonic()
    served = 0
    while time.monotonic() - t0 < args.soak:
        res = asyncio.run(load(server.url, 16, 4, args.soak, pool, seed=int(time.time())))
        served += len(res["latencies"])
        samples.append((time.monotonic() - t0, server.rss_mb()))
    trims = server.metric("atrous_memory_trims_total")
    first_half = [m for t, m in samples if t <= args.soak / 2]
    second_half = [m for t, m in samples if t > args.soak / 2]
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "requests": served,
        "rss_start_mb": samples[0][1],
        "rss_max_first_half_mb": max(first_half),
        "rss_max_second_half_mb": max(second_half or first_half),
        "rss_end_mb": samples[-1][1],
        "trims": int(trims),
        "samples": samples,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | batching | concurrency | requests | throughput img/s | p50 s | p95 s |"
        " p99 s | correct / bad→4xx / wrong / lost / other | batch sizes | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            hist = ", ".join(f"{k}:{v}" for k, v in r["batch_histogram"].items())
            lines.append(
                f"| {r['model']} | {'max 8' if r['batching'] else 'off'} | {r['concurrency']} |"
                f" {r['requests']} | {r['throughput']:.2f} | {r['p50']:.3f} | {r['p95']:.3f} |"
                f" {r['p99']:.3f} | {r['ok']} / {r['bad_4xx']} / {r['wrong']} / {r['lost']} /"
                f" {r['unexpected'] + r['rejected_503']} | {hist} | {r['peak_rss_mb']:.0f} |"
            )
        p = res["paired_concurrency_1"]
        if p:
            lines.append(
                f"| {res['rows'][0]['model']} | max 8, paired with a bare Segmenter "
                f"call | 1 | {len(p['pairs'])} | | {p['server_p50']:.3f} (bare "
                f"{p['bare_p50']:.3f}: {p['ratio_p50']:.2f}×) | | {p['server_p99']:.3f}"
                f" (bare {p['bare_p99']:.3f}: {p['ratio_p99']:.2f}×) | | | |"
            )
    for res in results:
        c, p = res["model_level_batching"], res["paired_concurrency_1"] or {}
        timing = ", ".join(f"{k} {v}" for k, v in p.get("server_timing_ms", {}).items())
        lines.append(
            f"\n{res['rows'][0]['model']}: model-level batching on this machine: "
            f"{c['batch']} images of {c['image']} as one batch take "
            f"{c['batched_s_per_image']:.3f} s per image against "
            f"{c['one_by_one_s_per_image']:.3f} s one by one ({c['speedup']:.2f}×)."
            f" Server-Timing at concurrency 1 (median ms): {timing}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=6, help="requests per connection")
    ap.add_argument("--time-limit", type=float, default=240, help="seconds per level at most")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--soak", type=float, default=0, help="seconds of soak at concurrency 16")
    ap.add_argument("--out", default=None, help="write the markdown table and JSON here")
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    results = [bench(w, args) for w in args.weights]
    md = table(results)
    print(md)
    for res in results:
        soak = next((r.get("soak") for r in res["rows"] if r.get("soak")), None)
        if soak:
            print(
                f"soak {res['rows'][0]['model']}: {soak['requests']} requests in "
                f"{soak['seconds']} s; RSS {soak['rss_start_mb']:.0f} MB at start, max "
                f"{soak['rss_max_first_half_mb']:.0f} MB in the first half, "
                f"{soak['rss_max_second_half_mb']:.0f} MB in the second, "
                f"{soak['rss_end_mb']:.0f} MB at the end; {soak['trims']} heap trims"
            )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(md + "\n")
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
