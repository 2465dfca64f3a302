"""The live camera's transport (issue 29): which keeps up, the WebSocket ``/v1/stream`` or
repeated ``POST /v1/segment`` with at most one or two requests in flight?

    python benchmarks/bench_camera.py                          # a MobileNetV2 DeepLab v3+
    python benchmarks/bench_camera.py --model W --rtt-ms 0,40 --rounds 3 --seconds 10

The server runs as a user starts it (``atrous serve W --threads T``, a subprocess; uvicorn
speaks WebSocket through wsproto). A simulated camera makes a frame every 1/``--fps`` s: CamVid
val frames at 480x360, the page's frame size, as JPEG at quality 80 (the page's
``canvas.toBlob``). Each transport sends, for ``--seconds`` s, the newest camera frame not yet
sent whenever it may:

- ``ws``: the page's policy: every camera frame, while fewer than 4 are unanswered; the server
  answers a frame that a newer one replaced while it waited as dropped;
- ``ws, 1 ahead``: one frame at a time over the WebSocket, the next as soon as the reply comes;
- ``POST, 1 in flight`` and ``POST, 2 in flight``: ``POST /v1/segment?format=png``, from one or
  two threads.

The transports take turns, ``--rounds`` times (in a rotated order each round, so that a
machine's drift hits them alike), and each ``--rtt-ms`` is run: 0 is localhost; above it a
proxy in this process holds every byte half the round trip in each direction (a Wi-Fi or LAN
link's latency, without its bandwidth limit). Reported per transport, over its rounds: camera
frames made, frames sent, answered, dropped by the server, skipped by the client (never sent),
answered frames per second, the latency from the frame's capture to its reply (median, 90th
percentile and worst, and the median of each round's last quarter, which a queue would grow),
the round trip (send to reply) and the server's CPU seconds per answered frame. Writes ``--out``
(markdown, with ``lscpu``'s model name and the load average before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_serve import Server
from common import cpu_model
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID_VAL = ROOT.parent / "shared" / "data" / "camvid" / "val"
PAGE_SIZE = (480, 360)  # the page's frame: the long side at 480 pixels (CAMERA_SIDE)
PAGE_AHEAD = 4  # the page's frames sent and not yet answered, at most (CAMERA_AHEAD)
PAUSE = 2.0  # seconds between runs, longer than a model call: no run inherits another's work


def camera_frames(count: int = 30) -> list[bytes]:
    """``count`` JPEG frames at the page's size: CamVid val frames where the data is, else a
    smooth synthetic scene that moves."""
    files = sorted(CAMVID_VAL.glob("*.[jp][pn]g"))[:count]
    frames = []
    for k in range(count):
        if files:
            im = Image.open(files[k % len(files)]).convert("RGB").resize(PAGE_SIZE)
        else:
            rng = np.random.default_rng(k)
            small = rng.integers(0, 256, (PAGE_SIZE[1] // 16, PAGE_SIZE[0] // 16, 3), np.uint8)
            im = Image.fromarray(small).resize(PAGE_SIZE, Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        frames.append(buf.getvalue())
    return frames


@dataclass
class Camera:
    """A camera making frame ``i`` at ``t0 + i / fps``; the frames of the first ``seconds``
    are the ones measured (:attr:`made`). The client sends the newest frame not yet sent
    (:meth:`claim`). It goes on after the window until the window's frames are settled: a
    camera that stopped would leave its last frame waiting, never replaced, a full model call
    (the page's camera never stops that way)."""

    fps: float
    seconds: float
    t0: float = field(default_factory=time.perf_counter)
    last: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def made(self) -> int:
        return int(self.seconds * self.fps)

    def captured_at(self, i: int) -> float:
        return self.t0 + i / self.fps

    def claim(self, stop: threading.Event) -> int | None:
        """Wait for a frame newer than the last one claimed and claim it; None once ``stop``
        is set."""
        while not stop.is_set():
            with self.lock:
                i = int((time.perf_counter() - self.t0) * self.fps)
                if i > self.last:
                    self.last = i
                    return i
            time.sleep(max(0.0, self.captured_at(self.last + 1) - time.perf_counter()) + 1e-4)
        return None


@dataclass
class Run:
    """What one transport got: per answered frame, its capture, send and reply times."""

    name: str
    camera: Camera
    sent: dict[int, float] = field(default_factory=dict)
    replied: dict[int, float] = field(default_factory=dict)
    dropped: int = 0
    failed: int = 0
    cpu: float = 0.0  # the server's CPU seconds during the run

    def ages(self) -> list[float]:
        return [self.replied[i] - self.camera.captured_at(i) for i in sorted(self.replied)]


def row(runs: list[Run]) -> list[str]:
    """One transport's table cells over its rounds."""
    ages = [a for r in runs for a in r.ages()]
    tails = [a for r in runs for a in r.ages()[-max(1, len(r.replied) // 4) :]]
    rtt = [r.replied[i] - r.sent[i] for r in runs for i in r.replied]
    made = sum(r.camera.made for r in runs)
    sent = sum(len(r.sent) for r in runs)
    answered = sum(len(r.replied) for r in runs)
    span = sum(r.camera.seconds for r in runs)
    return [
        runs[0].name,
        str(made),
        str(sent),
        str(answered),
        f"{answered / span:.2f}",
        str(sum(r.dropped for r in runs)),
        str(made - sent),
        f"{statistics.median(ages):.3f}",
        f"{np.percentile(ages, 90):.3f}",
        f"{max(ages):.3f}",
        f"{statistics.median(tails):.3f}",
        f"{statistics.median(rtt):.3f}",
        f"{sum(r.cpu for r in runs) / max(1, answered):.3f}",
        str(sum(r.failed for r in runs)),
    ]


class DelayProxy:
    """A TCP proxy on 127.0.0.1 to ``port`` that holds every byte ``delay`` seconds in each
    direction (half a round trip), in order, on an event loop of its own thread."""

    def __init__(self, port: int, delay: float) -> None:
        self.target, self.delay = port, delay
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        start = asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result()
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, reader: Any, writer: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled by close()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: Any, writer: Any) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(data)
                await writer.drain()

        task = asyncio.ensure_future(deliver())
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                queue.put_nowait((self.loop.time() + self.delay, data))
        queue.put_nowait((0.0, None))
        with contextlib.suppress(ConnectionError):
            await task

    def close(self) -> None:
        """Stop listening, end the connections still open, stop the loop."""

        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ws(url: str, frames: list[bytes], fps: float, seconds: float, ahead: int, name: str) -> Run:
    """Frames over ``/v1/stream``, at most ``ahead`` unanswered, the newest sent each time."""
    import websocket  # websocket-client

    ws = websocket.create_connection(url.replace("http", "ws") + "/v1/stream", timeout=120)
    run = Run(name, Camera(fps, seconds))
    order: list[int] = []  # the camera index of each frame sent, in the server's numbering
    free = threading.Semaphore(ahead)
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            if not free.acquire(timeout=0.5):
                continue
            i = run.camera.claim(stop)
            if i is None:
                return
            if i < run.camera.made:
                run.sent[i] = time.perf_counter()
            order.append(i)
            ws.send_binary(frames[i % len(frames)])

    sender = threading.Thread(target=send)
    sender.start()
    ws.settimeout(0.5)
    header, quiet_since, settled = None, time.perf_counter(), set()
    try:
        # until a frame past the window was sent and every frame of the window is settled
        while run.camera.last < run.camera.made or len(settled) < len(run.sent):
            try:
                message = ws.recv()
            except websocket.WebSocketTimeoutException:
                if time.perf_counter() - quiet_since > 120:
                    raise RuntimeError("no reply from the server for 120 s") from None
                continue
            quiet_since = time.perf_counter()
            if header is None:
                header = json.loads(message)
                if header.get("bytes") is not None:
                    continue  # its labels come next
            i, status = order[header["frame"]], header["status"]
            header = None
            free.release()
            if i >= run.camera.made:
                continue
            settled.add(i)
            if status == "ok":
                run.replied[i] = quiet_since
            elif status == "dropped":
                run.dropped += 1
            else:
                run.failed += 1
    finally:
        stop.set()
        sender.join()
        ws.close()
    return run


def run_post(
    url: str, frames: list[bytes], fps: float, seconds: float, inflight: int, name: str
) -> Run:
    """``POST /v1/segment`` from ``inflight`` threads, each sending the newest frame not yet
    sent when its last reply came."""
    import httpx

    run = Run(name, Camera(fps, seconds))
    stop = threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while (i := run.camera.claim(stop)) is not None and i < run.camera.made:
                with lock:
                    run.sent[i] = time.perf_counter()
                r = client.post(
                    url + "/v1/segment?format=png",
                    content=frames[i % len(frames)],
                    headers={"content-type": "image/jpeg"},
                )
                t = time.perf_counter()
                with lock:
                    if r.status_code == 200:
                        run.replied[i] = t
                    else:
                        run.failed += 1

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return run


def small_model(width_mult: float, folder: Path) -> Path:
    """A DeepLab v3+ MobileNetV2 with CamVid's 12 classes (random weights: the speed is the
    same) saved in ``folder``."""
    import torch

    import atrous.models as M
    import atrous.weights as W

    torch.manual_seed(0)
    model = M.build("deeplabv3plus_mobilenetv2", num_classes=12, width_mult=width_mult).eval()
    return W.save(model, folder / f"mnv2_w{width_mult:g}.safetensors")


TRANSPORTS = [
    (run_ws, PAGE_AHEAD, f"ws (the page: every frame, <= {PAGE_AHEAD} unanswered)"),
    (run_ws, 1, "ws, 1 ahead"),
    (run_post, 1, "POST, 1 in flight"),
    (run_post, 2, "POST, 2 in flight"),
]


def bench_model(weights: Path, args: argparse.Namespace, frames: list[bytes]) -> list[list[str]]:
    """Every transport against one server on ``weights``, at each round trip; the rows."""
    server = Server(str(weights), max_batch=8, threads=args.threads)
    rows = []
    try:
        # a few frames first: the model's first calls at a new size are slow
        run_post(server.url, frames, args.fps, 2.0, 1, "warm-up")
        for rtt in args.rtt_ms:
            proxy = DelayProxy(server.port, rtt / 2000) if rtt else None
            url = proxy.url if proxy else server.url
            runs: dict[str, list[Run]] = {name: [] for _, _, name in TRANSPORTS}
            for k in range(args.rounds):
                for fn, n, name in TRANSPORTS[k % 4 :] + TRANSPORTS[: k % 4]:
                    time.sleep(PAUSE)  # the last run's frame at the model, if any, is done
                    cpu = cpu_seconds(server.proc.pid)
                    run = fn(url, frames, args.fps, args.seconds, n, name)
                    run.cpu = cpu_seconds(server.proc.pid) - cpu
                    runs[name].append(run)
            if proxy:
                proxy.close()
            for done in runs.values():
                rows.append([f"{rtt:g}", *row(done)])
                print(" | ".join(rows[-1]), flush=True)
        received = server.metric("atrous_stream_frames_received_total")
        answered = server.metric("atrous_stream_frames_answered_total")
        dropped = server.metric("atrous_stream_frames_dropped_total")
        print(
            f"server's stream metrics: {received:g} received, {answered:g} answered, "
            f"{dropped:g} dropped",
            flush=True,
        )
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="weights (default: a MobileNetV2, built)")
    parser.add_argument("--width-mult", type=float, default=1.0, help="of the built model")
    parser.add_argument("--fps", type=float, default=15.0, help="the camera's frame rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="per transport and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rtt-ms",
        type=lambda t: [float(v) for v in t.split(",")],
        default=[0.0, 40.0, 100.0],
        help="round trips to add, ms, comma-separated (default 0,40,100)",
    )
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/camera.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    frames = camera_frames()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.model or small_model(args.width_mult, Path(tmp))
        label = (
            args.model.name
            if args.model
            else f"DeepLab v3+ MobileNetV2 (width {args.width_mult:g}, 12 classes, random weights)"
        )
        rows = bench_model(weights, args, frames)
    head = [
        "added round trip ms",
        "transport",
        "camera frames",
        "sent",
        "answered",
        "answered/s",
        "dropped (server)",
        "skipped (client)",
        "latency p50 s",
        "p90 s",
        "worst s",
        "p50 of the last quarters",
        "round trip p50 s",
        "server CPU s / answer",
        "errors",
    ]
    source = "CamVid val" if any(CAMVID_VAL.glob("*.[jp][pn]g")) else "synthetic"
    lines = [
        "# The live camera's transport (`benchmarks/bench_camera.py`)",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, shared with other work (load "
        f"average {load:.2f} before the run, {os.getloadavg()[0]:.2f} after); the server's "
        f"torch threads: {args.threads}",
        f"- model: {label}",
        f"- date: {datetime.date.today().isoformat()}; camera {args.fps:g} frames/s; "
        f"{args.rounds} rounds of {args.seconds:g} s per transport; frames "
        f"{PAGE_SIZE[0]}x{PAGE_SIZE[1]} JPEG q80 ({source})",
        f"- command: `{' '.join(['python', 'benchmarks/bench_camera.py', *sys.argv[1:]])}`",
        "- latency: from the frame's capture to its reply (what the page's overlay lags the "
        "camera by); round trip: from sending to the reply",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
