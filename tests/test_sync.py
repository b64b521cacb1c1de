"""End-to-end A/V sync of the file path: a flash in the video and a click in the audio at the
same media time must still coincide in the written file (within one audio frame)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from model.identity import IdentityModel
from stream.config import Config
from stream.filejob import run_file

FPS = 25
FLASH_S = 1.0


def _make_inputs(tmp_path, rate: int = 44100) -> tuple[str, str]:
    video = str(tmp_path / "flash.mp4")
    with av.open(video, "w") as c:
        st = c.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
        for i in range(2 * FPS):
            img = np.full((240, 320, 3), 30, np.uint8)
            if i == round(FLASH_S * FPS):
                img[:] = 230
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, FPS)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    audio = str(tmp_path / "click.wav")
    x = np.zeros((2 * rate, 2), np.float32)
    k = round(FLASH_S * rate)
    x[k : k + rate // 200] = 0.9  # a 5 ms click
    with av.open(audio, "w") as c:
        st = c.add_stream("pcm_f32le", rate=rate)
        st.layout = "stereo"
        f = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="stereo")
        f.sample_rate, f.pts = rate, 0
        for p in st.encode(f):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return video, audio


def _flash_and_click(path: str) -> tuple[float, float]:
    with av.open(path) as c:
        best = (-1.0, 0.0)
        for f in c.decode(video=0):
            m = float(f.to_ndarray(format="gray").mean())
            if m > best[0]:
                best = (m, float(f.pts * f.time_base))
        t_video = best[1]
    with av.open(path) as c:
        peak = (0.0, 0.0)
        for f in c.decode(audio=0):
            a = np.abs(f.to_ndarray()).max(axis=0)
            i = int(np.argmax(a > 0.3)) if (a > 0.3).any() else -1
            if i >= 0 and peak[0] == 0.0:
                peak = (1.0, float(f.pts * f.time_base) + i / f.sample_rate)
        t_audio = peak[1]
    return t_video, t_audio


def test_flash_and_click_stay_together(tmp_path):
    video, audio = _make_inputs(tmp_path)
    out = str(tmp_path / "out.mp4")
    res = run_file(video, audio, out, Config(), IdentityModel(), progress=False)
    assert res.session["no_face"] == res.frames  # no face: pure pass-through, timing only
    t_video, t_audio = _flash_and_click(out)
    assert abs(t_video - FLASH_S) < 1e-6
    assert abs(t_audio - t_video) <= 0.020, (t_video, t_audio)
