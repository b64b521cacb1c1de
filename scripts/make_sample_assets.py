"""Regenerates the bundled sample media in stream/assets/ (run once by a maintainer).

- sample_face.mp4: 640x480, 25 fps, 9 s. Built from scikit-image's ``astronaut`` picture
  (NASA portrait of Eileen Collins, public domain) with slow synthetic head motion
  (translation, scale, roll). Needs scikit-image, which the runtime does not.
- character.mp4: 320x320, 25 fps, 6 s: a procedurally rendered character (model/train/render.py)
  with a closed mouth, head motion and blinks: the demo's default video.
- sample_speech.wav: 16 kHz mono speech from espeak-ng: 0.5 s silence, a sentence,
  1.5 s silence, a second sentence, 0.5 s silence.

    python scripts/make_sample_assets.py [speech] [face] [character]
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from fractions import Fraction

import av
import cv2
import numpy as np

HERE = os.path.join(os.path.dirname(__file__), "..", "stream", "assets")
SENTENCES = [
    "Hello, this is a short demonstration of live lip sync.",
    "After a pause, the mouth moves again when speech comes back.",
]


def write_h264(path: str, frames: Iterator[np.ndarray], width: int, height: int, fps: int, crf: int) -> None:
    """Encode RGB frames as an H.264 MP4 with PyAV."""
    out = av.open(path, "w")
    st = out.add_stream("libx264", rate=fps)
    st.width, st.height, st.pix_fmt = width, height, "yuv420p"
    st.options = {"crf": str(crf), "preset": "slow"}
    for i, img in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts, vf.time_base = i, Fraction(1, fps)
        for p in st.encode(vf):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
    out.close()


def make_clip(path: str, seconds: float = 9.0, fps: int = 25) -> None:
    from skimage import data

    src = data.astronaut()  # 512x512 RGB; face centred near (220, 115)

    def frames() -> Iterator[np.ndarray]:
        for i in range(round(seconds * fps)):
            t = i / fps
            angle = 2.0 * math.sin(2 * math.pi * t / 4.0)
            scale = 2.2 * (1 + 0.03 * math.sin(2 * math.pi * t / 5.0))
            cx = 220 + 6 * math.sin(2 * math.pi * t / 3.0)
            cy = 150 + 4 * math.sin(2 * math.pi * t / 3.7)
            m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
            m[:, 2] += (320 - cx, 240 - cy)
            yield cv2.warpAffine(src, m, (640, 480), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    write_h264(path, frames(), 640, 480, fps, crf=26)


def make_speech(path: str, rate: int = 16000) -> None:
    parts = [np.zeros(rate // 2, np.int16)]
    for k, text in enumerate(SENTENCES):
        with tempfile.TemporaryDirectory() as d:
            raw = os.path.join(d, "s.wav")
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, text], check=True)
            with av.open(raw) as c:
                rs = av.AudioResampler(format="s16", layout="mono", rate=rate)
                for f in c.decode(audio=0):
                    for o in rs.resample(f):
                        parts.append(o.to_ndarray().reshape(-1))
        parts.append(np.zeros(rate * 3 // 2 if k == 0 else rate // 2, np.int16))
    pcm = np.concatenate(parts)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_character(path: str, seconds: float = 6.0, fps: int = 25, size: int = 320) -> None:
    """The demo character: a procedurally rendered person (model/train/render.py) with a closed
    mouth, slow head motion and blinks; the lip-sync model gives it speech."""
    from model.train.render import HeadPose, MouthShape, random_style, render_frame

    style = random_style(np.random.default_rng(4242))

    def frames() -> Iterator[np.ndarray]:
        for i in range(round(seconds * fps)):
            t = i / fps
            pose = HeadPose(
                6 * math.sin(t * 1.3), 4 * math.sin(t * 0.9 + 1), 1 + 0.03 * math.sin(t * 0.7), 3 * math.sin(t * 0.5)
            )
            blink = max(0.0, 1 - min(abs(t - 1.7), abs(t - 4.4)) / 0.08)
            yield render_frame(style, pose, MouthShape(0.0, 0.5, 0.0), blink, size)[0]

    write_h264(path, frames(), size, size, fps, crf=24)


if __name__ == "__main__":
    import sys

    os.makedirs(HERE, exist_ok=True)
    which = sys.argv[1:] or ["speech", "face", "character"]
    if "speech" in which:
        make_speech(os.path.join(HERE, "sample_speech.wav"))
    if "face" in which:
        make_clip(os.path.join(HERE, "sample_face.mp4"))
    if "character" in which:
        make_character(os.path.join(HERE, "character.mp4"))
