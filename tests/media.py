"""Small synthetic media files for file-I/O tests, made with PyAV only (no ffmpeg subprocess).

Video helpers take RGB24 frames (HxWx3 uint8) and encode them with a chosen codec, pixel
format and container; audio helpers write (n, channels) float32 PCM at a chosen rate. The face
material comes from the bundled ``sample_face.mp4`` (a real face MediaPipe detects), the speech
from the bundled ``sample_speech.wav``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stream", "assets")
SAMPLE_FACE = os.path.join(ASSETS, "sample_face.mp4")
SAMPLE_SPEECH = os.path.join(ASSETS, "sample_speech.wav")
FPS = 25

# Where the face sits in sample_face.mp4 (640x480): MediaPipe's box is about (221, 75, 445, 300).
FACE_REGION = (180, 20, 490, 370)  # x0, y0, x1, y1: the face with some margin


# -- source material ---------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _face_frames(n: int) -> tuple[np.ndarray, ...]:
    out: list[np.ndarray] = []
    with av.open(SAMPLE_FACE) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="rgb24")
            img.flags.writeable = False
            out.append(img)
            if len(out) == n:
                break
    assert len(out) == n, f"sample_face.mp4 has only {len(out)} frames"
    return tuple(out)


def face_frames(n: int) -> list[np.ndarray]:
    """The first ``n`` frames of the bundled portrait clip, RGB24 640x480."""
    return [f.copy() for f in _face_frames(n)]


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB24 image with PyAV's swscale."""
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return vf.reformat(width=width, height=height).to_ndarray(format="rgb24")


@functools.lru_cache(maxsize=2)
def _speech(rate: int) -> np.ndarray:
    with av.open(SAMPLE_SPEECH) as c:
        st = c.streams.audio[0]
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = []
        for f in c.decode(st):
            parts += [o.to_ndarray().reshape(-1) for o in rs.resample(f)]
        parts += [o.to_ndarray().reshape(-1) for o in rs.resample(None)]
    x = np.concatenate(parts).astype(np.float32)
    x.flags.writeable = False
    return x


def speech(seconds: float, rate: int = 16000, channels: int = 1, offset_s: float = 0.0) -> np.ndarray:
    """``seconds`` of the bundled speech from ``offset_s``, at ``rate``, as (n, channels) float32."""
    x = _speech(rate)
    a = round(offset_s * rate)
    n = round(seconds * rate)
    seg = x[a : a + n]
    assert seg.shape[0] == n, "asked for more speech than the bundled file holds"
    return np.repeat(seg[:, None], channels, axis=1).copy()


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def silence(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    return np.zeros((round(seconds * rate), channels), np.float32)


# -- writers -------------------------------------------------------------------------------
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def write_audio(
    path: str,
    samples: np.ndarray,
    rate: int,
    codec: str = "pcm_s16le",
    sample_fmt: str | None = None,
) -> str:
    """Write (n, channels) float32 ``samples`` as an audio-only file (container from the name).

    ``codec`` pcm_s16le (WAV default), pcm_f32le (float WAV: NaN/inf survive), aac, flac,
    libopus, libmp3lame ... ``sample_fmt`` defaults to what the codec prefers.
    """
    x = np.asarray(samples, np.float32)
    if x.ndim == 1:
        x = x[:, None]
    ch = x.shape[1]
    with av.open(path, "w") as c:
        st = c.add_stream(codec, rate=rate)
        st.layout = _LAYOUTS[ch]
        fmt = sample_fmt or st.codec_context.codec.audio_formats[0].name
        st.format = fmt
        frame_size = st.codec_context.frame_size or 1024
        rs = av.AudioResampler(format=fmt, layout=_LAYOUTS[ch], rate=rate)
        pts = 0
        for i in range(0, x.shape[0], frame_size):
            block = np.ascontiguousarray(x[i : i + frame_size])
            af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=_LAYOUTS[ch])
            af.sample_rate = rate
            af.pts = pts
            af.time_base = Fraction(1, rate)
            pts += block.shape[0]
            if fmt == "flt":
                outs = [af]  # no conversion: keeps NaN/inf bit-exact
            else:
                outs = rs.resample(af)
            for o in outs:
                for p in st.encode(o):
                    c.mux(p)
        if fmt != "flt":
            for o in rs.resample(None):
                for p in st.encode(o):
                    c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


def write_video(
    path: str,
    frames: Sequence[np.ndarray],
    fps: int = FPS,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    audio: tuple[np.ndarray, int] | None = None,
) -> str:
    """Encode RGB24 ``frames`` (or 2-D gray ones) to ``path``; optionally mux ``audio`` as AAC.

    ``container_options`` go to the muxer, e.g. ``{"movflags": "faststart"}`` for an mp4 with
    its index (moov) at the front.
    """
    assert frames, "no frames"
    h, w = frames[0].shape[:2]
    with av.open(path, "w", options=container_options or {}) as c:
        st = c.add_stream(codec, rate=fps)
        st.width, st.height = w, h
        st.pix_fmt = pix_fmt
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast")
        st.options = opts
        ast = None
        if audio is not None:
            samples, rate = audio
            ast = c.add_stream("aac", rate=rate)
            ast.layout = _LAYOUTS[samples.shape[1]]
        for i, img in enumerate(frames):
            fmt = "gray" if img.ndim == 2 else "rgb24"
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt).reformat(format=pix_fmt)
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
        if ast is not None:
            assert audio is not None
            samples, rate = audio
            ch = samples.shape[1]
            rs = av.AudioResampler(format="fltp", layout=_LAYOUTS[ch], rate=rate)
            for i in range(0, samples.shape[0], 1024):
                block = np.ascontiguousarray(samples[i : i + 1024], np.float32)
                af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=_LAYOUTS[ch])
                af.sample_rate = rate
                af.pts = i
                af.time_base = Fraction(1, rate)
                for o in rs.resample(af):
                    for p in ast.encode(o):
                        c.mux(p)
            for o in rs.resample(None):
                for p in ast.encode(o):
                    c.mux(p)
            for p in ast.encode(None):
                c.mux(p)
    return path


# -- clips -----------------------------------------------------------------------------------
def face_clip(
    path: str,
    seconds: float = 1.0,
    size: tuple[int, int] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: int = FPS,
    **kwargs: object,
) -> str:
    """The bundled face, ``seconds`` long, optionally resized to ``size`` = (width, height)."""
    frames = face_frames(round(seconds * fps))
    if size is not None and size != (frames[0].shape[1], frames[0].shape[0]):
        frames = [resize(f, *size) for f in frames]
    if pix_fmt == "gray":
        frames = [gray(f) for f in frames]
    return write_video(path, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, **kwargs)  # type: ignore[arg-type]


def gray(img: np.ndarray) -> np.ndarray:
    """RGB24 -> 2-D luma (BT.601 weights)."""
    y = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


MARK_BITS = 8
MARK = 16  # side of each bit's patch; the patches sit in a row at the top-left corner


def mark(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Paint frame i's number in binary into ``MARK_BITS`` flat black / white ``MARK`` x ``MARK``
    patches along the top-left edge, far from the face, so the order of frames survives lossy
    encoding (and an encoder's skipped blocks)."""
    assert len(frames) < 2**MARK_BITS
    out = []
    for i, f in enumerate(frames):
        g = f.copy()
        for bit in range(MARK_BITS):
            g[:MARK, bit * MARK : (bit + 1) * MARK] = 235 if (i >> bit) & 1 else 16
        out.append(g)
    return out


def read_mark(img: np.ndarray) -> int:
    """The frame number :func:`mark` painted into ``img`` (read from each patch's centre)."""
    q = MARK // 4
    n = 0
    for bit in range(MARK_BITS):
        v = float(img[q : MARK - q, bit * MARK + q : (bit + 1) * MARK - q].mean())
        n |= int(v > 125) << bit
    return n


def marked_face_clip(path: str, seconds: float = 1.0, **kwargs: object) -> str:
    """:func:`face_clip` whose frames carry their number (see :func:`mark`)."""
    frames = mark(face_frames(round(seconds * FPS)))
    return write_video(path, frames, **kwargs)  # type: ignore[arg-type]


def background_frames(
    n: int, width: int = 320, height: int = 240, kind: str = "plain", seed: int = 0
) -> list[np.ndarray]:
    """Frames without a face: a plain grey-blue colour, a smooth ``"gradient"``, or uniform
    ``"noise"``."""
    if kind == "plain":
        img = np.empty((height, width, 3), np.uint8)
        img[:] = (90, 120, 150)
        return [img.copy() for _ in range(n)]
    if kind == "gradient":  # smooth, slowly moving: compresses well, so re-encoding is near-lossless
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        out = []
        for i in range(n):
            r = 60 + 120 * x / width
            g = 60 + 120 * y / height + 2 * i
            b = 200 - 100 * (x + y) / (width + height)
            out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
        return out
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def background_clip(
    path: str, seconds: float = 1.0, width: int = 320, height: int = 240, kind: str = "plain", **kwargs: object
) -> str:
    frames = background_frames(round(seconds * FPS), width, height, kind)
    return write_video(path, frames, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Placement:
    """Where one copy of the face went on the canvas: its paste box and its scale."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 on the canvas
    scale: float

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.box
        return x0 <= x < x1 and y0 <= y < y1


THREE_FACES_SIZE = (800, 400)
THREE_FACES_SCALES = (0.7, 0.5, 0.9)  # left, middle, right: the largest face is on the right


def three_faces_layout(
    width: int = THREE_FACES_SIZE[0], height: int = THREE_FACES_SIZE[1], scales: Sequence[float] = THREE_FACES_SCALES
) -> list[Placement]:
    x0, y0, x1, y1 = FACE_REGION
    sizes = []
    for s in scales:
        k = s * height / (y1 - y0)
        sizes.append((round((x1 - x0) * k) // 2 * 2, round((y1 - y0) * k) // 2 * 2))
    gap = (width - sum(w for w, _ in sizes)) // (len(sizes) + 1)
    assert gap >= 0, "faces do not fit side by side"
    out = []
    x = gap
    for (w, h), s in zip(sizes, scales, strict=True):
        y = (height - h) // 2
        out.append(Placement((x, y, x + w, y + h), s))
        x += w + gap
    return out


def three_faces_frames(n: int, layout: Sequence[Placement] | None = None) -> list[np.ndarray]:
    """Three copies of the bundled face side by side at different scales, on a grey canvas."""
    layout = list(layout or three_faces_layout())
    x0, y0, x1, y1 = FACE_REGION
    out = []
    for src in face_frames(n):
        canvas = np.full((THREE_FACES_SIZE[1], THREE_FACES_SIZE[0], 3), 128, np.uint8)
        face = np.ascontiguousarray(src[y0:y1, x0:x1])
        for p in layout:
            bx0, by0, bx1, by1 = p.box
            canvas[by0:by1, bx0:bx1] = resize(face, bx1 - bx0, by1 - by0)
        out.append(canvas)
    return out


def three_faces_clip(path: str, seconds: float = 1.0, **kwargs: object) -> tuple[str, list[Placement]]:
    layout = three_faces_layout()
    write_video(path, three_faces_frames(round(seconds * FPS), layout), **kwargs)  # type: ignore[arg-type]
    return path, layout


# -- damaged files -----------------------------------------------------------------------------
def truncated_copy(src: str, dst: str, fraction: float) -> str:
    """The first ``fraction`` of ``src``'s bytes."""
    with open(src, "rb") as fh:
        data = fh.read()
    with open(dst, "wb") as fh:
        fh.write(data[: int(len(data) * fraction)])
    return dst


def random_bytes(path: str, n: int = 64 * 1024, seed: int = 0) -> str:
    with open(path, "wb") as fh:
        fh.write(np.random.default_rng(seed).bytes(n))
    return path


# -- inspection ------------------------------------------------------------------------------
@dataclass
class Probe:
    """What a written file holds, decoded with PyAV."""

    video_streams: int
    audio_streams: int
    width: int | None
    height: int | None
    fps: Fraction | None
    frames: list[np.ndarray]
    video_end_s: float | None  # last frame's pts + one frame
    audio_samples: int
    audio_rate: int | None
    audio_channels: int | None

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def audio_s(self) -> float:
        return self.audio_samples / self.audio_rate if self.audio_rate else 0.0


def probe(path: str, keep_frames: bool = True, decode_audio: bool = True, damaged_ok: bool = False) -> Probe:
    """Decode ``path``'s first video and audio streams. ``damaged_ok``: a video decode error
    ends the frames instead of raising (for truncated files)."""
    with av.open(path) as c:
        vs, as_ = c.streams.video, c.streams.audio
        width = height = None
        fps = None
        frames: list[np.ndarray] = []
        end = None
        if vs:
            st = vs[0]
            width, height, fps = st.codec_context.width, st.codec_context.height, st.average_rate
            last_pts = None
            try:
                for f in c.decode(st):
                    if keep_frames:
                        frames.append(f.to_ndarray(format="rgb24"))
                    else:
                        frames.append(np.empty(0, np.uint8))
                    if f.pts is not None:
                        t = float(f.pts * f.time_base)
                        last_pts = t if last_pts is None else max(last_pts, t)
            except av.error.FFmpegError:
                if not damaged_ok:
                    raise
            if last_pts is not None and fps:
                end = last_pts + 1 / float(fps)
        n_video, n_audio_streams = len(vs), len(as_)
    n_audio = 0
    rate = channels = None
    if n_audio_streams and decode_audio:
        with av.open(path) as c:
            ast = c.streams.audio[0]
            rate, channels = ast.codec_context.sample_rate, ast.codec_context.channels
            for f in c.decode(ast):
                n_audio += f.samples
    return Probe(n_video, n_audio_streams, width, height, fps, frames, end, n_audio, rate, channels)
