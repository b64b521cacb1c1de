"""A Pipecat pipeline with the lip-sync processor after the TTS. Offline here: a WAV stands in
for the TTS output and the frames are written to an MP4 (a transport's output would take them
in a real bot: ``Pipeline([transport.input(), stt, llm, tts, LipSyncProcessor(face=...),
transport.output()])`` with the transport's video output enabled).

    python examples/pipecat/pipeline.py --audio speech.wav --out avatar.mp4 [--face me.png]
"""

from __future__ import annotations

import argparse
import asyncio

import av
import numpy as np
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
from stream.sources.file import read_audio


class Collect(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[OutputImageRawFrame] = []
        self.audio: list[TTSAudioRawFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self.images.append(frame)
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio.append(frame)
        await self.push_frame(frame, direction)


async def main(audio_path: str, out: str, face: str | None) -> None:
    samples, rate = read_audio(audio_path)
    pcm = (np.clip(samples.mean(axis=1), -1, 1) * 32767).astype(np.int16)
    step = rate // 50
    frames: list[Frame] = [TTSStartedFrame()]
    frames += [TTSAudioRawFrame(pcm[i : i + step].tobytes(), rate, 1) for i in range(0, len(pcm), step)]
    frames += [TTSStoppedFrame(), EndFrame()]
    sink = Collect()
    worker = PipelineWorker(Pipeline([LipSyncProcessor(face=face), sink]), enable_rtvi=False)
    await worker.queue_frames(frames)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    w, h = sink.images[0].size
    with av.open(out, "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        for i, f in enumerate(sink.images):
            img = np.frombuffer(f.image, np.uint8).reshape(h, w, 3)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    print(f"wrote {out}: {len(sink.images)} frames, {sum(len(a.audio) for a in sink.audio) / 2 / rate:.2f} s of audio")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", required=True)
    ap.add_argument("--out", default="avatar.mp4")
    ap.add_argument("--face")
    a = ap.parse_args()
    asyncio.run(main(a.audio, a.out, a.face))
