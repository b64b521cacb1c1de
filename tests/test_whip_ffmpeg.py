"""WHIP interop with a non-Python client: the static ffmpeg of the imageio-ffmpeg wheel (FFmpeg
9 with the WHIP muxer) publishes a talking-face file into the server; the session lip-syncs it
with the shipped model, and an aiortc WHEP player watches the output."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess

import pytest

from stream.config import load
from tests.media import SAMPLE_SPEECH, face_frames, speech, write_video
from tests.rtc import Client, Running, wait_for


def _ffmpeg() -> str:
    iio = pytest.importorskip("imageio_ffmpeg")
    exe = iio.get_ffmpeg_exe()
    muxers = subprocess.run([exe, "-hide_banner", "-muxers"], capture_output=True, text=True).stdout
    if " whip " not in muxers:
        pytest.fail(f"{exe} has no WHIP muxer: use imageio-ffmpeg>=0.8.1 (FFmpeg 8 or newer)")
    return exe


@functools.lru_cache(maxsize=1)
def _model():  # noqa: ANN202
    from model import load_model

    return load_model(load(None, []))


def test_ffmpeg_publishes_over_whip_and_the_output_is_lip_synced(tmp_path) -> None:  # noqa: ANN001
    exe = _ffmpeg()
    assert os.path.isfile(SAMPLE_SPEECH)
    src = write_video(str(tmp_path / "talk.mp4"), face_frames(150), audio=(speech(6.0, 48000), 48000))
    # a longer playout delay: ffmpeg, the server and the model share the test machine's cores
    cfg = load(None, ["server.max_sessions=2", "playout.delay_ms=1500"])

    async def go() -> None:
        async with Running(cfg, _model()) as srv:
            cmd = [exe, "-hide_banner", "-loglevel", "error", "-re", "-i", src,
                   "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-bf", "0", "-g", "25",
                   "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-ar", "48000", "-ac", "2",
                   "-f", "whip", srv.url("/whip")]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
            try:
                assert await wait_for(lambda: bool(srv.server.sessions), 15), "ffmpeg's WHIP offer never arrived"
                sid, session = next(iter(srv.server.sessions.items()))
                assert session.kind == "whip"
                player = Client([], recv_only=("video", "audio"))
                status, where, _ = await srv.whip(player, f"/whep/{sid}")
                assert status == 201, where
                assert await wait_for(lambda: session.engine.stats.generated > 10 and len(player.got.video) > 50, 30)
                assert len(player.got.audio) > 50
                stats = session.engine.stats
                assert stats.frames_in > 50 and stats.no_face < stats.frames_in // 4
                await player.close()
            finally:
                if proc.returncode is None:
                    proc.terminate()
                err = (await proc.communicate())[1].decode(errors="replace")
            assert "error" not in err.lower() or "Connection" in err, err[-1500:]

    asyncio.run(asyncio.wait_for(go(), 90))
