"""Small videos made in the tests with PyAV, from the real street photo of
``fixtures/densecrf/camvid.npz`` (a CamVid frame), panned a few pixels per frame: no video
file is committed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "densecrf" / "camvid.npz"


def street_frames(n: int, size: tuple[int, int] = (48, 64), step: int = 3) -> list[np.ndarray]:
    """``n`` HxWx3 uint8 frames of ``size``: a window panning ``step`` pixels a frame across
    the CamVid photo, resized down (a camera moving along the street)."""
    photo = np.load(FIXTURE)["image"]  # 120 x 160
    h, w = photo.shape[:2]
    win_h, win_w = h - 24, w - 3 * n
    frames = []
    for i in range(n):
        crop = photo[12 : 12 + win_h, step * i : step * i + win_w]
        frames.append(np.asarray(Image.fromarray(crop).resize(size[::-1], Image.BILINEAR)))
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 12,
    codec: str = "mpeg4",
    intra: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` at ``rate`` frames/s (``intra``: every frame a key frame, so the
    file's bytes spread evenly over the frames)."""
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        if intra:
            s.codec_context.gop_size = 1
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_empty_video(path: Path) -> Path:
    """An AVI whose one video stream holds no frames."""
    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=12)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    c.close()
    return path


def write_audio(path: Path, seconds: float = 0.5) -> Path:
    """An audio-only file (AAC, silence)."""
    rate = 16000
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate) // 1024):
            fr = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            fr.sample_rate, fr.pts, fr.time_base = rate, i * 1024, Fraction(1, rate)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode(path: Path) -> list[tuple[int, float, np.ndarray]]:
    """``(pts, seconds, RGB frame)`` of every frame, decoded here independently of atrous."""
    with av.open(str(path)) as c:
        return [
            (f.pts, float(f.time), f.to_ndarray(format="rgb24"))
            for f in c.decode(c.streams.video[0])
        ]


def truncate(path: Path, fraction: float, to: Path) -> Path:
    """The first ``fraction`` of ``path``'s bytes, as ``to`` (a download cut short)."""
    data = path.read_bytes()
    to.write_bytes(data[: int(len(data) * fraction)])
    return to
