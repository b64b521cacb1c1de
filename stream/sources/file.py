"""File sources, decoded with PyAV: video frames as RGB24 and audio as float32 PCM."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from stream.errors import InputError
from stream.frames import AudioFrame, VideoFrame

log = logging.getLogger(__name__)


def _open(path: str, what: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise InputError(f"{what} file {path} does not exist: check the path")
    try:
        return av.open(path, "r")
    except (av.error.FFmpegError, ValueError) as e:
        raise InputError(f"{what} file {path} cannot be read ({e}): pass a valid media file") from None


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    duration_s: float | None
    time_base: Fraction | None = None  # the stream's pts unit (frames keep their source times in it)


def probe_video(path: str) -> VideoInfo:
    """Size, frame rate and duration of the first video stream, or a clear InputError."""
    with _open(path, "video") as c:
        if not c.streams.video:
            raise InputError(f"video file {path} has no video stream: pass a file with video")
        st = c.streams.video[0]
        fps = st.average_rate or st.guessed_rate or Fraction(25)
        if not (1 <= fps <= 240):
            fps = Fraction(25)
        dur = None
        if st.duration is not None and st.time_base is not None:
            dur = float(st.duration * st.time_base)
        elif c.duration is not None:
            dur = c.duration / av.time_base
        w, h = st.codec_context.width, st.codec_context.height
        if not w or not h:
            raise InputError(f"video file {path} has a video stream of unknown size: re-encode it")
        fps = Fraction(fps).limit_denominator(1001)
        tb = st.time_base if st.time_base is not None and st.time_base <= 1 / fps else None
        return VideoInfo(w, h, fps, dur, tb)


def _announced_frames(c: av.container.InputContainer, st: av.VideoStream) -> int | None:
    """How many frames the header says the stream holds (frame count, else duration x rate)."""
    if st.frames:
        return int(st.frames)
    rate = st.average_rate  # frames / duration; guessed_rate is the fastest rate of a variable-rate file
    if not rate:
        return None
    if st.duration is not None and st.time_base is not None:
        dur = float(st.duration * st.time_base)
    elif c.duration is not None:
        dur = c.duration / av.time_base
    else:
        return None
    return round(dur * rate)


def decode_frames(path: str) -> Iterator[tuple[np.ndarray, int | None, Fraction | None]]:
    """(RGB24 image, pts, time_base) of every decodable frame, in presentation order. A decode
    error mid-file, or a file that ends well before the frames its header announces (truncated),
    ends the stream with a warning (a truncated file yields what it holds); an error before the
    first frame raises InputError."""
    n = 0
    with _open(path, "video") as c:
        if not c.streams.video:
            raise InputError(f"video file {path} has no video stream: pass a file with video")
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        try:
            for frame in c.decode(st):
                yield frame.to_ndarray(format="rgb24"), frame.pts, frame.time_base or st.time_base
                n += 1
        except av.error.FFmpegError as e:
            if n == 0:
                raise InputError(f"video file {path} has no decodable frame ({e}): pass a valid video") from None
            log.warning("video file %s: decoding stopped after %d frames (%s); using those", path, n, e)
        else:
            # FFmpeg reads a cut-off file as a short one, without an error: compare with the header
            expected = _announced_frames(c, st)
            if n and expected and n < 0.95 * expected - 1:
                log.warning(
                    "video file %s: only %d of the %d frames its header announces could be read "
                    "(truncated file?); using those",
                    path,
                    n,
                    expected,
                )
    if n == 0:
        raise InputError(f"video file {path} has no decodable frame: pass a valid video")


def decode_video(path: str) -> Iterator[np.ndarray]:
    """RGB24 images of every decodable frame (see :func:`decode_frames`)."""
    for img, _, _ in decode_frames(path):
        yield img


def probe_audio(path: str) -> None:
    """The file opens and holds an audio stream with a known rate, or a clear InputError."""
    with _open(path, "audio") as c:
        if not c.streams.audio:
            raise InputError(f"audio file {path} has no audio stream: pass a file with audio (WAV, MP3, M4A, ...)")
        st = c.streams.audio[0]
        if not (st.codec_context.sample_rate or st.rate):
            raise InputError(f"audio file {path} has an audio stream of unknown sample rate: re-encode it")


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """All audio of the first audio stream as (n, channels) float32 and its sample rate."""
    with _open(path, "audio") as c:
        if not c.streams.audio:
            raise InputError(f"audio file {path} has no audio stream: pass a file with audio (WAV, MP3, M4A, ...)")
        st = c.streams.audio[0]
        rate = st.codec_context.sample_rate or st.rate
        if not rate:
            raise InputError(f"audio file {path} has an audio stream of unknown sample rate: re-encode it")
        chunks: list[np.ndarray] = []
        channels = 1
        resampler = None
        try:
            for frame in c.decode(st):
                if resampler is None:
                    channels = frame.layout.nb_channels
                    resampler = av.AudioResampler(format="flt", layout=frame.layout.name, rate=rate)
                for o in resampler.resample(frame):
                    chunks.append(o.to_ndarray().reshape(-1, channels))
        except av.error.FFmpegError as e:
            if not chunks:
                raise InputError(f"audio file {path} has no decodable audio ({e}): pass a valid audio file") from None
            log.warning("audio file %s: decoding stopped early (%s); using what was decoded", path, e)
        if resampler is not None:
            for o in resampler.resample(None):
                chunks.append(o.to_ndarray().reshape(-1, channels))
    if not chunks:
        raise InputError(f"audio file {path} holds no audio samples: pass a non-empty audio file")
    return np.concatenate(chunks).astype(np.float32), int(rate)


def audio_blocks(samples: np.ndarray, rate: int, block_ms: int = 20) -> Iterator[AudioFrame]:
    """Split PCM into AudioFrames of ``block_ms`` with exact pts in 1/rate units."""
    n = max(1, rate * block_ms // 1000)
    tb = Fraction(1, rate)
    for i in range(0, samples.shape[0], n):
        yield AudioFrame(samples[i : i + n], rate, i, tb)


def video_timeline(path: str, fps: Fraction, duration_s: float, mode: str = "loop") -> Iterator[VideoFrame]:
    """Frames covering ``duration_s`` at the video's own presentation times (a variable frame
    rate stays variable): the video's frames, then (when the audio is longer) the video again
    from the start (``loop``, shifted by its length) or its last frame repeated at ``fps``
    (``hold``). Times start at 0; pts are in the stream's time base, strictly increasing."""
    total = max(1, round(duration_s * fps))  # frames at the nominal rate: the output's length
    tb: Fraction | None = None
    step = 0  # one nominal frame interval, in tb
    offset = 0  # pts added in this pass (loop)
    last_img: np.ndarray | None = None
    last_pts = -1
    first_frame = True

    def frames_of_one_pass() -> Iterator[tuple[np.ndarray, int]]:
        nonlocal tb, step
        base: int | None = None
        for i, (img, pts, ftb) in enumerate(decode_frames(path)):
            if tb is None:  # the stream's own unit when it has one finer than a frame, else 1/fps
                tb = ftb if (ftb is not None and pts is not None and ftb <= 1 / fps) else 1 / fps
                step = max(1, round(1 / (fps * tb)))
            if pts is None or ftb is None:  # no timestamp: the nominal rate
                rel = i * step
            else:
                if base is None:
                    base = pts
                rel = pts - base if ftb == tb else round(float((pts - base) * ftb / tb))
            yield img, rel

    while True:
        produced = 0
        for img, rel in frames_of_one_pass():
            assert tb is not None
            pts = max(offset + rel, last_pts + 1)
            if not first_frame and float(pts * tb * fps) + 0.5 > total:
                return
            first_frame = False
            last_img, last_pts = img, pts
            produced += 1
            yield VideoFrame(img, pts, tb)
        if mode == "hold" or produced == 0:
            break
        offset = last_pts + step
    assert last_img is not None and tb is not None
    pts = last_pts + step
    while float(pts * tb * fps) + 0.5 <= total:
        yield VideoFrame(last_img, pts, tb)
        pts += step
