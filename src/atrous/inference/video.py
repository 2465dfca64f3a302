"""Videos in, label maps and overlay videos out: what ``atrous predict`` does with a video.

- :data:`VIDEO_EXTENSIONS`, :func:`is_video`: which inputs are videos.
- :class:`VideoReader`: the decoded RGB frames of one video with their timestamps
  (``every``, ``start``, ``end``). Damage (a corrupt packet, a decoder error, a file that ends
  before its header says) ends the frames; ``damage`` says what it was.
- :func:`predict_frames`: the frame loop through a :class:`Segmenter` (so scales, flip, tiles,
  precision, an ONNX model and the CRF all apply), yielding labels and, when asked, the
  probabilities; a per-frame probability hook (e.g. temporal smoothing) may change them.
- :class:`VideoWriter`: one video's outputs in ``OUT/<name>/``: ``frame_000123.png`` label
  PNGs or one lossless label video, ``<name>_overlay.mp4`` with a legend, ``_probs.npy`` and
  ``frames.csv`` (frame number, pts, seconds).
- :func:`segment_video`: all of it, with decoding, the model and encoding on three threads
  joined by bounded queues, so memory stays bounded whatever the video's length.

Decoding and encoding use PyAV (the ``video`` extra: ``pip install 'atrous[video]'``), whose
wheels bundle FFmpeg.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from atrous.data.palettes import draw_legend, overlay
from atrous.fileio import atomic_write_text
from atrous.imageio import IMAGE_EXTENSIONS
from atrous.inference.io import FileResult, describe_error, labels_and_probs, write_mask
from atrous.inference.segmenter import Segmenter, label_map

__all__ = [
    "VIDEO_EXTENSIONS",
    "Frame",
    "FramePrediction",
    "ProbsHook",
    "VideoError",
    "VideoInfo",
    "VideoReader",
    "VideoResult",
    "VideoWriter",
    "import_av",
    "is_video",
    "predict_frames",
    "segment_video",
]

# File suffixes (lower case) taken for videos without opening them; folder scans look for them.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".avi",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wmv",
    ".flv",
    ".ogv",
    ".3gp",
)

INSTALL_HINT = "pip install 'atrous[video]'"
# FFmpeg demuxers that open files which are not videos: single images and text (subtitles).
_NOT_VIDEO_FORMATS = ("image2", "_pipe", "tty", "lrc", "srt", "ass", "webvtt", "txt")


class VideoError(ValueError):
    """A video that cannot be segmented at all: ``path`` and ``problem`` (one line)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def import_av(path: str | os.PathLike = "video") -> ModuleType:
    """The ``av`` module (PyAV), or a :class:`VideoError` for ``path`` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError(path, f"reading videos needs PyAV: {INSTALL_HINT}") from None
    return av


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` is segmented as a video: its suffix is in :data:`VIDEO_EXTENSIONS`, or
    (a suffix that is no image's) PyAV opens it and finds a video or audio stream in a
    container that is not an image or text format. Without PyAV only the suffix counts."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix in IMAGE_EXTENSIONS:
        return False
    try:
        av = import_av(path)
    except VideoError:
        return False
    try:
        with av.open(str(path)) as c:
            if any(k in c.format.name for k in _NOT_VIDEO_FORMATS):
                return False
            return bool(c.streams.video or c.streams.audio)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: Path
    width: int
    height: int
    rate: Fraction | None  # average frames per second
    time_base: Fraction  # of the timestamps (pts)
    frames: int | None  # frame count from the header; None where it does not say
    duration: float | None  # seconds
    start_time: float  # seconds: the timestamp the video starts at
    codec: str

    def expected_frames(
        self, every: int = 1, start: float = 0.0, end: float | None = None
    ) -> int | None:
        """About how many frames ``every``, ``start`` and ``end`` select (None: unknown)."""
        total = self.frames
        if total is None and self.duration and self.rate:
            total = round(self.duration * self.rate)
        if total is None or not self.rate:
            return None if total is None else math.ceil(total / every)
        first = min(total, math.ceil(start * self.rate))
        last = total if end is None else min(total, math.ceil(end * self.rate))
        return max(0, math.ceil((last - first) / every))


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its number among all the video's frames (from 0), its timestamp
    (``pts`` in the stream's time base, ``time`` in seconds) and the HxWx3 uint8 RGB image."""

    index: int
    pts: int
    time: float
    image: np.ndarray


class VideoReader:
    """The frames of one video, decoded with PyAV. Raises :class:`VideoError` if the file does
    not open, or holds no video stream (an audio-only file says so).

    Iterating yields the :class:`Frame` s whose time from the video's start is in ``[start,
    end)``, then every ``every``-th one from the first of them. Frames are numbered by
    decoding from the start, so numbers and times are exact whatever ``start`` is. Damage
    stops the frames, and :attr:`damage` says what it was: a corrupt packet or frame, a
    decoder error, or fewer frames (or seconds) than the header lists (a truncated file)."""

    def __init__(
        self, path: str | os.PathLike, every: int = 1, start: float = 0.0, end: float | None = None
    ) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be a positive int, got {every}")
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        self.path = Path(path)
        self.every, self.start, self.end = int(every), float(start), end
        self.damage: str | None = None
        self.decoded = 0  # frames decoded so far, selected or not
        av = self._av = import_av(path)
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as e:
            raise VideoError(path, f"cannot open the video ({_reason(e)})") from None
        c = self._container
        if not c.streams.video:
            kind = "audio only" if c.streams.audio else "no stream PyAV can decode as video"
            c.close()
            raise VideoError(path, f"holds no video stream ({kind})")
        self._stream = s = c.streams.video[0]
        s.thread_type = "AUTO"  # frame- and slice-threaded decoding
        tb = s.time_base or Fraction(1, 1_000_000)
        duration = _stream_duration(s, tb)
        self._own_duration = duration is not None
        if duration is None and c.duration:
            duration = c.duration / 1_000_000  # the container's, in microseconds
        self.info = VideoInfo(
            path=self.path,
            width=s.codec_context.width,
            height=s.codec_context.height,
            rate=s.average_rate or s.guessed_rate or None,
            time_base=tb,
            frames=s.frames or None,
            duration=duration,
            start_time=float(s.start_time * tb) if s.start_time is not None else 0.0,
            codec=s.codec_context.name,
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[Frame]:
        av, info = self._av, self.info
        first: int | None = None  # number of the first selected frame
        last_time: float | None = None
        try:
            for packet in self._container.demux(self._stream):
                if packet.is_corrupt:
                    self.damage = f"corrupt data at frame {self.decoded}"
                    return
                for fr in packet.decode():
                    if fr.is_corrupt:
                        self.damage = f"corrupt frame {self.decoded}"
                        return
                    index = self.decoded
                    self.decoded += 1
                    pts = fr.pts if fr.pts is not None else self._guess_pts(index)
                    time = float(pts * info.time_base)
                    last_time = since = time - info.start_time
                    if since < self.start:
                        continue
                    if self.end is not None and since >= self.end:
                        return  # the end asked for, not damage
                    first = index if first is None else first
                    if (index - first) % self.every == 0:
                        yield Frame(index, pts, time, fr.to_ndarray(format="rgb24"))
        except av.FFmpegError as e:
            self.damage = f"cannot decode frame {self.decoded} ({_reason(e)})"
            return
        self.damage = self._shortfall(last_time)

    def _guess_pts(self, index: int) -> int:
        """A timestamp for a frame without one: its number at the average rate."""
        rate = self.info.rate or 25
        return round(
            self.info.start_time / self.info.time_base + index / rate / self.info.time_base
        )

    def _shortfall(self, last_time: float | None) -> str | None:
        """What a video that ended early lacks, by its header's frame count, else its
        duration (the stream's own to within 1.5 frames; the container's, which may be an
        audio track's, to within 1 s)."""
        info, n = self.info, self.decoded
        if info.frames and n < info.frames:
            return f"truncated or damaged: only {n} of the {info.frames} frames its header lists decode"
        if info.frames or not info.duration or not info.rate:
            return None
        step = 1 / float(info.rate)
        lasts = (-step if last_time is None else last_time) + step
        slack = 1.5 * step if self._own_duration else max(1.0, 1.5 * step)
        if lasts < info.duration - slack:
            return (
                f"truncated or damaged: only {lasts:.2f} s of the {info.duration:.2f} s its header "
                "lists decode"
            )
        return None


def _stream_duration(stream: Any, time_base: Fraction) -> float | None:
    """A video stream's own duration in seconds: its header's, else Matroska's ``DURATION``
    tag (``HH:MM:SS.nnnnnnnnn``); None where neither says."""
    if stream.duration:
        return float(stream.duration * time_base)
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    try:
        h, m, sec = str(tag).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _reason(e: BaseException) -> str:
    """FFmpeg's message for ``e`` without the file name PyAV appends."""
    text = getattr(e, "strerror", None) or str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


# --------------------------------------------------------------------------- the frame loop
@dataclass
class FramePrediction:
    """One frame's result: its label map and, when asked for, its probabilities (C, H, W)."""

    frame: Frame
    labels: np.ndarray
    probs: np.ndarray | None = None


# (frame, probabilities C x H x W) -> probabilities; called once per frame, in order, so a
# temporal filter may keep state between calls.
ProbsHook = Callable[[Frame, np.ndarray], np.ndarray]


def predict_frames(
    segmenter: Segmenter,
    frames: Iterable[Frame],
    probs: bool = False,
    hook: ProbsHook | None = None,
) -> Iterator[FramePrediction]:
    """One :class:`FramePrediction` per frame, in order, batched by the segmenter. The labels
    equal ``segmenter.predict(frame.image)``; ``probs`` (or a ``hook``) also gives the
    probabilities, and the ``hook``'s probabilities decide the labels."""
    pending: deque[Frame] = deque()

    def images() -> Iterator[np.ndarray]:
        for frame in frames:
            pending.append(frame)
            yield frame.image

    for got in labels_and_probs(segmenter, images(), probs or hook is not None):
        assert not isinstance(got, Exception)  # errors="raise"
        labels, p = got
        frame = pending.popleft()
        if hook is not None and p is not None:
            p = np.asarray(hook(frame, p), dtype=np.float32)
            labels = label_map(torch.from_numpy(p).argmax(0), p.shape[0])
        yield FramePrediction(frame, labels, p)


# --------------------------------------------------------------------------- writing
class VideoWriter:
    """The outputs of one video in ``folder``: per frame ``frame_000123.png`` (palette PNGs,
    as the image path writes) or, with ``label_video``, ``<name>_labels.mkv`` (FFV1, lossless
    gray8 class ids; 16-bit above 256 classes); ``<name>_overlay.mp4`` (H.264 where the PyAV
    build has it, else MPEG-4 part 2) with a legend of the classes in each frame, keeping the
    source timestamps; with ``probs`` ``frame_000123_probs.npy`` (float16); and on
    :meth:`close` ``frames.csv`` (frame number, pts, seconds) of the frames written."""

    def __init__(
        self,
        folder: str | os.PathLike,
        info: VideoInfo,
        palette: np.ndarray,
        class_names: Sequence[str] | None = None,
        *,
        name: str | None = None,
        overlay_alpha: float = 0.5,
        probs: bool = False,
        label_video: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.info = info
        self.palette = np.asarray(palette, np.uint8)
        self.class_names = list(class_names) if class_names else []
        self.name = name or self.folder.name
        self.alpha = overlay_alpha
        self.probs = probs
        self.label_video = label_video
        self.rows: list[tuple[int, int, float]] = []
        self.outputs: list[Path] = []
        self._av = import_av(info.path)
        self._overlay: Any = None  # (container, stream), opened on the first frame
        self._labels: Any = None
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None

    @property
    def overlay_path(self) -> Path:
        return self.folder / f"{self.name}_overlay.mp4"

    @property
    def labels_path(self) -> Path:
        return self.folder / f"{self.name}_labels.mkv"

    def write(self, pred: FramePrediction) -> None:
        """Write one frame's outputs (frames come in order)."""
        frame, labels = pred.frame, pred.labels
        h, w = labels.shape
        if self._size is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._size = (h, w)
        elif self._size != (h, w):
            raise ValueError(
                f"frame {frame.index} is {w}x{h}, the video started at "
                f"{self._size[1]}x{self._size[0]}: size changes are not supported"
            )
        # Encoders need increasing timestamps; a file that repeats one gets the next tick.
        pts = (
            frame.pts
            if self._last_pts is None or frame.pts > self._last_pts
            else self._last_pts + 1
        )
        self._last_pts = pts
        stem = self.folder / f"frame_{frame.index:06d}"
        if self.label_video:
            self._encode_labels(labels, pts)
        else:
            write_mask(labels, self.palette, stem.with_name(stem.name + ".png"))
        if self.probs and pred.probs is not None:
            np.save(stem.with_name(stem.name + "_probs.npy"), pred.probs.astype(np.float16))
        self._encode_overlay(frame.image, labels, pts)
        self.rows.append((frame.index, frame.pts, frame.time))

    def _legend(self, labels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=1))
        names = self.class_names
        return [
            (names[k] if k < len(names) else f"class {k}", self.palette[k % len(self.palette)])
            for k in present
        ]

    def _stream(self, path: Path, codec: str, pix_fmt: str, options: dict[str, str]) -> Any:
        av, info = self._av, self.info
        h, w = self._size or (info.height, info.width)
        container = av.open(str(path), "w")
        stream = container.add_stream(codec, rate=info.rate or 25, options=options)
        # yuv420p needs even sides: the overlay gets a black row/column where they are odd.
        even = pix_fmt == "yuv420p"
        stream.width, stream.height = (w + w % 2, h + h % 2) if even else (w, h)
        stream.pix_fmt = pix_fmt
        stream.time_base = info.time_base
        return container, stream

    def _mux(self, pair: Any, frame: Any) -> None:
        container, stream = pair
        for packet in stream.encode(frame):
            container.mux(packet)

    def _encode_overlay(self, image: np.ndarray, labels: np.ndarray, pts: int) -> None:
        av = self._av
        if self._overlay is None:
            h264 = "libx264" in av.codecs_available
            codec, options = (
                ("libx264", {"preset": "veryfast", "crf": "18"})
                if h264
                else ("mpeg4", {"qmin": "2", "qmax": "4"})
            )
            self._overlay = self._stream(self.overlay_path, codec, "yuv420p", options)
        drawn = draw_legend(overlay(image, labels, self.palette, self.alpha), self._legend(labels))
        stream = self._overlay[1]
        h, w = drawn.shape[:2]
        if (stream.height, stream.width) != (h, w):
            drawn = np.pad(drawn, ((0, stream.height - h), (0, stream.width - w), (0, 0)))
        vf = av.VideoFrame.from_ndarray(drawn, format="rgb24")
        vf.pts, vf.time_base = pts, self.info.time_base
        self._mux(self._overlay, vf)

    def _encode_labels(self, labels: np.ndarray, pts: int) -> None:
        av = self._av
        wide = labels.dtype != np.uint8
        if self._labels is None:
            self._labels = self._stream(
                self.labels_path, "ffv1", "gray16le" if wide else "gray", {}
            )
        data = np.ascontiguousarray(labels.astype(np.uint16) if wide else labels)
        vf = av.VideoFrame.from_ndarray(data, format="gray16le" if wide else "gray")
        vf.pts, vf.time_base = pts, self.info.time_base
        self._mux(self._labels, vf)

    def close(self) -> list[Path]:
        """Flush and close the videos, write ``frames.csv``; returns the outputs (the folder,
        the videos and the index; the per-frame files are in the folder)."""
        for pair, path in ((self._overlay, self.overlay_path), (self._labels, self.labels_path)):
            if pair is None:
                continue
            try:
                self._mux(pair, None)  # flush the encoder
            finally:
                pair[0].close()
            self.outputs.append(path)
        self._overlay = self._labels = None
        if self.rows:
            lines = ["frame,pts,time"] + [f"{i},{p},{t:.6f}" for i, p, t in self.rows]
            self.outputs.append(
                atomic_write_text(self.folder / "frames.csv", "\n".join(lines) + "\n")
            )
            self.outputs.insert(0, self.folder)
        return self.outputs


# --------------------------------------------------------------------------- threads
_END = object()
# Niceness added to the decode and encode threads (and the codec threads they start).
WORKER_NICENESS = 10


def yield_to_the_model() -> None:
    """Lower the calling thread's scheduling priority by :data:`WORKER_NICENESS` (Linux, where
    a thread has its own nice value and the threads it starts inherit it; elsewhere nothing),
    so that decoding and encoding run on the time the model's threads leave and never
    preempt them: on a busy CPU the overlap costs the model nothing."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):  # e.g. a sandbox that forbids it: run as it is
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + WORKER_NICENESS))


class _Prefetch:
    """Runs ``iterable`` on a thread, ``maxsize`` items ahead of the consumer; its errors are
    raised in the consumer. :meth:`close` stops it early."""

    def __init__(self, iterable: Iterable[Any], maxsize: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(iterable,), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterable: Iterable[Any]) -> None:
        yield_to_the_model()
        try:
            for item in iterable:
                if not self._put(item):
                    return
        except BaseException as e:
            self._error = e
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not _END:
            yield item
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Sink:
    """Calls ``fn`` on each item :meth:`put` on a thread, ``maxsize`` items behind; the first
    error stops it and is raised by the next :meth:`put` or by :meth:`close`."""

    def __init__(self, fn: Callable[[Any], None], maxsize: int) -> None:
        self._fn = fn
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        yield_to_the_model()
        while (item := self._queue.get()) is not _END:
            if self.error is None:
                try:
                    self._fn(item)
                except BaseException as e:
                    self.error = e

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(_END)
        self._thread.join()
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- one video
@dataclass
class VideoResult(FileResult):
    """What became of one video: :class:`~atrous.inference.io.FileResult`, and the number of
    frames segmented (kept even when ``problem`` says the video was damaged after them)."""

    frames: int = 0
    info: VideoInfo | None = field(default=None, repr=False)


def segment_video(
    segmenter: Segmenter,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    palette: np.ndarray,
    *,
    name: str | None = None,
    class_names: Sequence[str] | None = None,
    overlay_alpha: float = 0.5,
    probs: bool = False,
    label_video: bool = False,
    every: int = 1,
    start: float = 0.0,
    end: float | None = None,
    probs_hook: ProbsHook | None = None,
    progress: Callable[..., Any] | None = None,
) -> VideoResult:
    """Segment the video at ``path`` into ``out_dir/<name>/`` (``name``: the file's stem) with
    a :class:`VideoWriter`, decoding, segmenting and encoding at once (bounded queues of a few
    batches). Never raises for the video's own problems: a file that does not open, holds no
    video or no frames, damage (the frames before it are kept and written), a model failure
    or an unwritable output is the result's ``problem``, one line. ``progress``: a tqdm-like
    class, called with ``total`` (None where the container does not say), ``desc`` and
    ``unit``. ``probs_hook``: see :func:`predict_frames`."""
    path = Path(path)
    result = VideoResult(path, name or path.stem)
    try:
        reader = VideoReader(path, every, start, end)
    except VideoError as e:
        result.problem = e.problem
        return result
    folder = Path(out_dir) / result.name
    depth = 2 * segmenter.batch_size + 2
    bar = None
    with reader:
        result.info = info = reader.info
        writer = VideoWriter(
            folder,
            info,
            palette,
            class_names,
            name=Path(result.name).name,
            overlay_alpha=overlay_alpha,
            probs=probs,
            label_video=label_video,
        )
        if progress is not None:
            bar = progress(
                total=info.expected_frames(every, start, end), desc=path.name, unit="frame"
            )
        frames = _Prefetch(reader, depth)
        sink = _Sink(writer.write, depth)
        failed: str | None = None
        done = 0
        try:
            for pred in predict_frames(segmenter, frames, probs, probs_hook):
                sink.put(pred)
                done += 1
                if bar is not None:
                    bar.update(1)
        except Exception as e:
            failed = _failure(e, sink.error, done, folder)
        finally:  # Ctrl-C too: what was segmented is written and the videos are finished
            frames.close()
            try:
                sink.close()
            except Exception as e:
                failed = failed or _failure(e, e, done, folder)
            try:
                result.outputs = writer.close()
            except Exception as e:
                failed = failed or f"cannot finish the outputs in {folder} ({describe_error(e)})"
            if bar is not None:
                bar.close()
    result.frames = len(writer.rows)
    result.problem = failed or _damage(reader, result.frames, folder, start, end)
    return result


def _failure(e: Exception, write_error: BaseException | None, done: int, folder: Path) -> str:
    """The problem of a video whose loop stopped on ``e``: the writer's error if it had one."""
    if write_error is not None:
        if isinstance(write_error, OSError):
            return f"cannot write outputs to {folder} ({write_error})"
        return f"cannot write outputs to {folder} ({describe_error(write_error)})"
    return f"segmentation failed after {done} frames: {describe_error(e)}"


def _damage(
    reader: VideoReader, written: int, folder: Path, start: float, end: float | None
) -> str | None:
    """The problem of a video that was read to its end (or its damage), if any."""
    if reader.damage is not None:
        kept = f"the {written} frames before it are in {folder}" if written else "no frame kept"
        return f"{reader.damage}; {kept}"
    if reader.decoded == 0:
        return "the video holds no frames"
    if written == 0:
        window = f"from {start:g} s" + ("" if end is None else f" to {end:g} s")
        return f"no frame {window} (the video has {reader.decoded} frames)"
    return None
