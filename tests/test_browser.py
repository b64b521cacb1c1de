"""A real browser against the server: Playwright drives the system Chromium (fake camera = a
y4m clip of the bundled face, fake microphone = a WAV of silence then speech) on the served page.

Marked ``browser``. Without Chromium or Playwright it is skipped, unless
``SAYANYTHING_REQUIRE_BROWSER=1`` (set by .ci/run, which installs both) makes that a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import wave
from fractions import Fraction

import av
import numpy as np
import pytest

from stream.config import FaceConfig
from stream.face import FaceCropper, FaceTracker
from tests.fakes import MarkerModel
from tests.media import face_frames, speech
from tests.rtc import Running, server_config

pytestmark = pytest.mark.browser

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
        if p and os.path.exists(p)
    ),
    None,
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
SILENCE_S, SPEECH_S = 2.5, 3.0


def _need_browser() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install '.[test]')"
    else:
        missing = "" if CHROMIUM else "Chromium (apt-get install chromium)"
    if missing:
        if os.environ.get("SAYANYTHING_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test needs {missing}")
        pytest.skip(f"needs {missing}")


def write_y4m(path: str, frames: list[np.ndarray], fps: int = 25) -> None:
    with av.open(path, "w", format="yuv4mpegpipe") as c:
        st = c.add_stream("rawvideo", rate=fps)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        st.time_base = Fraction(1, fps)
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            vf.pts = i
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def write_wav(path: str, rate: int = 48000) -> None:
    x = np.concatenate([np.zeros(int(SILENCE_S * rate), np.float32), speech(SPEECH_S, rate)[:, 0]])
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def mask_box(img: np.ndarray) -> tuple[float, float, float, float]:
    """The inner part of the engine's mouth mask on ``img``, as fractions of width/height."""
    cfg = FaceConfig()
    face = FaceTracker(cfg).update(img)
    assert face is not None
    cropper = FaceCropper(cfg, 64)
    pasted = cropper.paste(np.zeros_like(img), np.full((64, 64, 3), 255, np.uint8), cropper.mouth_mask(face), face)
    ys, xs = np.nonzero(pasted[..., 0] > 250)
    h, w = img.shape[:2]
    cx, cy, hw, hh = xs.mean(), ys.mean(), (xs.max() - xs.min()) / 4, (ys.max() - ys.min()) / 4
    return (cx - hw) / w, (cy - hh) / h, (cx + hw) / w, (cy + hh) / h


SAMPLE_JS = """
async ([box, n, every_ms]) => {
  const grab = (id) => {
    const v = document.getElementById(id);
    if (!v.videoWidth) return null;
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const x0 = Math.round(box[0] * c.width), y0 = Math.round(box[1] * c.height);
    const x1 = Math.round(box[2] * c.width), y1 = Math.round(box[3] * c.height);
    const d = g.getImageData(x0, y0, Math.max(1, x1 - x0), Math.max(1, y1 - y0)).data;
    let s = 0;
    for (let i = 0; i < d.length; i += 4) s += (d[i] + d[i + 1] + d[i + 2]) / 3;
    return s / (d.length / 4);
  };
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push([performance.now(), grab("remote"), grab("local")]);
    await new Promise((r) => setTimeout(r, every_ms));
  }
  return out;
}
"""


def test_chromium_page_round_trip(tmp_path) -> None:  # noqa: ANN001
    _need_browser()
    from playwright.async_api import async_playwright

    frames = face_frames(100)
    clip, wav = str(tmp_path / "face.y4m"), str(tmp_path / "speech.wav")
    write_y4m(clip, frames)
    write_wav(wav)
    box = mask_box(frames[0])

    async def go() -> dict:
        async with Running(server_config(), MarkerModel()) as srv, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[*FLAGS, f"--use-file-for-fake-video-capture={clip}", f"--use-file-for-fake-audio-capture={wav}"],
            )
            try:
                page = await browser.new_page()
                await page.goto(srv.url("/"))
                await page.evaluate("window.lipsync.start()")
                await page.wait_for_function("window.lipsync.state !== 'starting'", timeout=20000)
                assert await page.evaluate("window.lipsync.state") == "connected", await page.evaluate(
                    "window.lipsync.error"
                )
                await page.wait_for_function(
                    "window.lipsync.inbound().then(b => b.framesDecoded > 0)", timeout=20000, polling=250
                )
                samples = await page.evaluate(SAMPLE_JS, [list(box), 100, 100])  # 10 s at 10 Hz
                inbound = await page.evaluate("window.lipsync.inbound()")
                await page.wait_for_function("window.lipsync.stats !== null", timeout=5000)
                stats = await page.evaluate("window.lipsync.stats")
                await page.evaluate("window.lipsync.stop()")
                await asyncio.sleep(0.5)
                left = len(srv.server.sessions)
            finally:
                await browser.close()
        return {"samples": samples, "inbound": inbound, "stats": stats, "left": left}

    res = asyncio.run(asyncio.wait_for(go(), 90))
    inbound, stats = res["inbound"], res["stats"]
    assert inbound["framesDecoded"] > 50 and inbound["audioPackets"] > 50, inbound
    assert stats["frames_out"] > 50 and stats["fps"] > 10 and stats["model"] == "marker", stats
    assert res["left"] == 0  # Stop ended the session on the server
    got = [(r, loc) for _, r, loc in res["samples"] if r is not None and loc is not None]
    remote = np.array([r for r, _ in got])
    local = np.array([loc for _, loc in got])
    assert len(remote) > 60
    # the marker paints the mouth: grey 40 at rest (silence), brighter with speech energy
    rest = np.abs(remote - MarkerModel.level(np.zeros(1))) < 12
    speaking = remote > 90
    assert rest.sum() > 10 and speaking.sum() > 10, remote.round()
    # in speech the mouth differs from the camera's and moves; in silence it is still
    assert np.abs(remote[speaking] - local[speaking]).mean() > 20
    steps = np.abs(np.diff(remote))
    still = steps[rest[1:] & rest[:-1]]
    moving = steps[speaking[1:] & speaking[:-1]]
    assert still.mean() < 3.0 and moving.mean() > 2 * still.mean(), (still.mean(), moving.mean())
