"""The avatar (stream/avatar.py) and its adapters: a LiveKit Agents VideoGenerator driven with
real ``rtc.AudioFrame``s and paced through ``rtc.AVSynchronizer`` (the livekit wheel works
offline; no server), and a Pipecat processor in a real offline pipeline. The shipped model."""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
import pytest

from stream.avatar import Avatar, load_face
from stream.cli import DEMO_VIDEO, asset
from stream.config import load
from tests.media import speech

FPS = 25


@functools.lru_cache(maxsize=1)
def _model():  # noqa: ANN202
    from model import load_model

    return load_model(load(None, []))


def _avatar() -> Avatar:
    return Avatar(load(None, []), _model(), load_face(asset(DEMO_VIDEO), max_seconds=4.0), fps=FPS)


def _pcm(seconds: float, rate: int) -> np.ndarray:
    return (np.clip(speech(seconds, rate)[:, 0], -1, 1) * 32767).astype(np.int16)


async def _collect(it, seconds: float, out: list) -> None:  # noqa: ANN001
    async def run() -> None:
        async for ev in it:
            out.append((time.monotonic(), ev))

    try:
        await asyncio.wait_for(run(), timeout=seconds)
    except TimeoutError:
        pass


def test_avatar_interruption_brings_the_mouth_to_rest_within_100_ms() -> None:
    async def go() -> tuple[list, float]:
        av = _avatar()
        events: list = []
        task = asyncio.create_task(_collect(av.events(), 8.0, events))
        x = speech(4.0, 24000)[:, 0]
        av.push_audio(x, 24000)
        av.end_segment()
        # wait until the mouth moves with the speech, then interrupt
        while not any(e[1][0] == "video" and e[1][3] == "generated" for e in events):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        t_clear = time.monotonic()
        av.clear()
        await asyncio.sleep(1.0)
        task.cancel()
        av.close()
        return events, t_clear

    events, t_clear = asyncio.run(go())
    after = [(t, e) for t, e in events if t >= t_clear]
    rest = next(t for t, e in after if e[0] == "video" and e[3] == "rest")
    assert rest - t_clear <= 0.1
    # from then on no moving mouth and no more of the interrupted audio
    first_rest = [e for t, e in after if t >= rest]
    assert all(e[3] == "rest" for e in first_rest if e[0] == "video")
    assert sum(e[1].shape[0] for e in first_rest if e[0] == "audio") == 0
    # the interrupted segment's end is not reported
    assert not [e for _, e in events if e[0] == "end"]


def test_livekit_video_generator_in_order_and_paced_by_av_synchronizer() -> None:
    rtc = pytest.importorskip("livekit.rtc")
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from stream.integrations.livekit_avatar import LipSyncVideoGenerator

    rate = 24000
    pcm = _pcm(2.0, rate)

    async def go() -> tuple[list, float, float]:
        gen = LipSyncVideoGenerator(_avatar(), sample_rate=rate)
        opts = gen.options()
        assert (opts.video_fps, opts.audio_sample_rate, opts.audio_channels) == (FPS, rate, 1)
        audio_src = rtc.AudioSource(rate, 1, queue_size_ms=100)
        video_src = rtc.VideoSource(opts.video_width, opts.video_height)
        sync = rtc.AVSynchronizer(audio_source=audio_src, video_source=video_src, video_fps=FPS)
        items: list = []

        async def forward() -> None:
            async for f in gen:
                items.append((time.monotonic(), f))
                if not isinstance(f, AudioSegmentEnd):
                    await sync.push(f)

        task = asyncio.create_task(forward())
        await asyncio.sleep(0.3)
        t_push = time.monotonic()
        # 20 ms frames, as a TTS plugin sends them (faster than real time)
        for i in range(0, len(pcm), rate // 50):
            block = pcm[i : i + rate // 50]
            await gen.push_audio(rtc.AudioFrame(block.tobytes(), rate, 1, len(block)))
        await gen.push_audio(AudioSegmentEnd())
        await asyncio.sleep(4.0)
        task.cancel()
        fps = sync.actual_fps
        await sync.aclose()
        await audio_src.aclose()
        await video_src.aclose()
        await gen.aclose()
        return items, t_push, fps

    items, t_push, fps = asyncio.run(go())
    kinds = ["end" if isinstance(f, AudioSegmentEnd) else type(f).__name__ for _, f in items]
    assert kinds.count("end") == 1
    audio = [f for _, f in items if isinstance(f, rtc.AudioFrame)]
    total = sum(f.samples_per_channel for f in audio) / rate
    assert abs(total - 2.0) < 0.03  # the same audio comes out
    assert kinds.index("end") > max(i for i, k in enumerate(kinds) if k == "AudioFrame")
    # every video frame within one frame period of the audio that goes with it: count the
    # audio handed out before each video frame from the frame before the first audio
    first_audio = kinds.index("AudioFrame")
    k0 = max(i for i in range(first_audio) if kinds[i] == "VideoFrame")
    heard, n_video = 0.0, 0
    for k in range(k0, kinds.index("end")):
        f = items[k][1]
        if isinstance(f, rtc.VideoFrame):
            assert abs(heard - n_video / FPS) <= 1.0 / FPS + 1e-6, (k, heard, n_video)
            n_video += 1
        elif isinstance(f, rtc.AudioFrame):
            heard += f.samples_per_channel / rate
    assert 20 <= fps <= 30
    # the first speech audio came out after the playout delay (plus a little)
    t_first = items[first_audio][0] - t_push
    assert 0.5 < t_first < 1.5


def test_pipecat_processor_in_an_offline_pipeline() -> None:
    pytest.importorskip("pipecat")
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from stream.integrations.pipecat_processor import LipSyncProcessor

    class Recorder(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.frames: list[tuple[float, Frame]] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            self.frames.append((time.monotonic(), frame))
            await self.push_frame(frame, direction)

    rate = 16000
    pcm = _pcm(1.5, rate)

    async def go() -> Recorder:
        rec = Recorder()
        proc = LipSyncProcessor(avatar=_avatar())
        worker = PipelineWorker(Pipeline([proc, rec]), cancel_on_idle_timeout=False, enable_rtvi=False)
        blocks = [pcm[i : i + 320] for i in range(0, len(pcm), 320)]
        await worker.queue_frames(
            [TTSStartedFrame()]
            + [TTSAudioRawFrame(audio=b.tobytes(), sample_rate=rate, num_channels=1) for b in blocks]
            + [TTSStoppedFrame(), EndFrame()]
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(runner.run(), timeout=30)
        return rec

    rec = asyncio.run(go())
    names = [type(f).__name__ for _, f in rec.frames]
    images = [f for _, f in rec.frames if isinstance(f, OutputImageRawFrame)]
    audio = [f for _, f in rec.frames if isinstance(f, TTSAudioRawFrame)]
    assert images and images[0].format == "RGB" and len(images[0].image) == images[0].size[0] * images[0].size[1] * 3
    assert abs(sum(len(a.audio) // 2 for a in audio) / rate - 1.5) < 0.03  # all the audio, once
    last_audio = max(i for i, n in enumerate(names) if n == "TTSAudioRawFrame")
    assert names.index("TTSStoppedFrame") > last_audio  # the stop follows the utterance out
    assert names[-1] == "EndFrame"
    assert len(images) >= 1.5 * FPS  # video of the whole utterance
