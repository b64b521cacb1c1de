"""Recording a clip from the live camera and microphone (``enrol --camera --mic``), with
printed prompts to talk, to an MP4 that ``prepare`` / ``enrol`` read like any other clip.
Frames and audio keep the times they were captured at (one clock for both)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

from stream.audio import SAMPLE_RATE_HZ, AudioInput, AudioRing
from stream.clock import MonotonicClock
from stream.config import Config
from stream.errors import InputError
from stream.frames import AudioFrame, VideoFrame
from stream.sources.camera import CameraSource
from stream.sources.mic import MicSource

PROMPTS = (
    "Look at the camera and tell us what you did this morning, in your normal voice.",
    "Now read this aloud: the quick brown fox jumps over the lazy dog, twice.",
    "Count slowly from one to twenty.",
    "Pause for two seconds, with your mouth closed.",
    "Describe the room you are in: what is on the walls, what is on the desk.",
    "Say the days of the week, then the months of the year.",
    "Tell us about a trip you remember, as if to a colleague.",
)


async def _record(cfg: Config, seconds: float, say: Callable[[str], None]) -> tuple[list[VideoFrame], list[AudioFrame]]:
    clock = MonotonicClock()
    origin = clock.now()
    loop = asyncio.get_running_loop()
    frames: list[VideoFrame] = []
    audio: list[AudioFrame] = []
    cam = CameraSource(cfg.live, clock, origin)
    mic = MicSource(cfg.live, clock, origin)
    cam.start(loop, frames.append)
    try:
        mic.start(loop, audio.append)
        try:
            # devices can take a moment to deliver their first frame / block: start when both do
            wait_end = loop.time() + 10.0
            while not (frames and audio) and loop.time() < wait_end:
                await asyncio.sleep(0.05)
            frames.clear()
            audio.clear()
            say(f"recording {seconds:.0f} s: face the camera, in steady light")
            step = max(1.0, seconds / len(PROMPTS))
            t, k = 0.0, 0
            while t < seconds:
                say(f"[{t:4.0f} s] {PROMPTS[k % len(PROMPTS)]}")
                await asyncio.sleep(min(step, seconds - t))
                t += step
                k += 1
        finally:
            mic.stop()
    finally:
        cam.stop()
    return frames, audio


def record_clip(cfg: Config, seconds: float, path: str, say: Callable[[str], None] = print) -> str:
    """Record ``seconds`` from ``live.camera_device`` and ``live.mic_device`` into ``path``
    (written under a temporary name, renamed when complete)."""
    frames, audio = asyncio.run(_record(cfg, seconds, say))
    if len(frames) < 2:
        raise InputError(
            f"recording: the camera {cfg.live.camera_device or '(default)'} delivered {len(frames)} frames: check "
            "live.camera_device (sayanything-live devices)"
        )
    if not audio:
        raise InputError(
            f"recording: the microphone {cfg.live.mic_device or '(default)'} delivered no audio: check "
            "live.mic_device (sayanything-live devices)"
        )
    ring = AudioRing(int(seconds * 1000) + 4000)
    inp = AudioInput(ring)
    t0 = audio[0].time_s
    for a in audio:
        inp.push(AudioFrame(a.samples, a.sample_rate_hz, a.pts - audio[0].pts, a.time_base))
    inp.close()
    pcm = ring.read(0, ring.end_index)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.part.mp4")
    try:
        _write(tmp, frames, pcm, t0)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write(path: str, frames: list[VideoFrame], pcm: np.ndarray, audio_t0: float) -> None:
    h, w = frames[0].image.shape[:2]
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=30)
        st.width, st.height = w - w % 2, h - h % 2
        st.pix_fmt = "yuv420p"
        st.options = {"preset": "veryfast", "crf": "18"}
        st.time_base = st.codec_context.time_base = Fraction(1, 1000)
        ast = c.add_stream("aac", rate=SAMPLE_RATE_HZ)
        ast.layout = "mono"
        t_base = min(frames[0].time_s, audio_t0)
        last = -1
        for f in frames:
            pts = round((f.time_s - t_base) * 1000)
            if pts <= last:
                continue
            last = pts
            img = np.ascontiguousarray(f.image[: st.height, : st.width])
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
        start = round((audio_t0 - t_base) * SAMPLE_RATE_HZ)
        for i in range(0, pcm.shape[0], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, i : i + 1024], np.float32), format="flt",
                                            layout="mono")  # fmt: skip
            af.sample_rate = SAMPLE_RATE_HZ
            af.pts = start + i
            for p in ast.encode(af):
                c.mux(p)
        for p in ast.encode(None):
            c.mux(p)
