"""A lip-sync frame processor for Pipecat: put it after the TTS service. It takes the
``TTSAudioRawFrame``s, and emits ``OutputImageRawFrame``s of the face lip-synced to them at the
video rate (an idle face in silence) with the same audio, delayed by the same amount, as
``TTSAudioRawFrame``s in media-time order, each image before the audio of its frame.

    from stream.integrations.pipecat_processor import LipSyncProcessor

    pipeline = Pipeline([..., tts, LipSyncProcessor(face="me.png"), transport.output()])

``InterruptionFrame`` drops the audio not yet played and brings the mouth to rest from the next
frame out; ``TTSStoppedFrame`` is held back and passed on after the utterance's last audio.
``EndFrame`` waits (up to ``drain_timeout_s``) for what is queued to play out, then ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as e:  # pragma: no cover - an optional extra
    raise ImportError("the Pipecat processor needs pipecat-ai: pip install 'sayanything-live[pipecat]'") from e

from stream.avatar import Avatar
from stream.config import Config
from stream.integrations._common import build_avatar, float_to_int16, int16_to_float
from stream.worker import LipSyncModel


class LipSyncProcessor(FrameProcessor):
    def __init__(
        self,
        face: str | None = None,
        config: Config | None = None,
        model: LipSyncModel | None = None,
        fps: float = 25.0,
        avatar: Avatar | None = None,
        drain_timeout_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._avatar_args = (face, config, model, fps)
        self.avatar: Avatar | None = avatar
        self.drain_timeout_s = drain_timeout_s
        self._pump: asyncio.Task | None = None
        self._held_stops: list[TTSStoppedFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            if self.avatar is None:
                self.avatar = build_avatar(*self._avatar_args)
            await self.push_frame(frame, direction)
            self._pump = self.create_task(self._run())
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            assert self.avatar is not None
            self.avatar.push_audio(int16_to_float(frame.audio, frame.num_channels), frame.sample_rate)
        elif isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            assert self.avatar is not None
            self.avatar.end_segment()
            self._held_stops.append(frame)
        elif isinstance(frame, InterruptionFrame):
            if self.avatar is not None:
                self.avatar.clear()
            for stop in self._held_stops:
                await self.push_frame(stop)
            self._held_stops.clear()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._drain()
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _drain(self) -> None:
        av = self.avatar
        if av is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + self.drain_timeout_s
        while (av.pending_audio() or self._held_stops) and loop.time() < end:
            await asyncio.sleep(0.02)

    async def _stop(self) -> None:
        if self._pump is not None:
            await self.cancel_task(self._pump)
            self._pump = None
        if self.avatar is not None:
            self.avatar.close()

    async def _run(self) -> None:
        assert self.avatar is not None
        async for ev in self.avatar.events():
            if ev[0] == "video":
                img = ev[1]
                await self.push_frame(OutputImageRawFrame(image=img.tobytes(), size=(img.shape[1], img.shape[0]),
                                                          format="RGB"))  # fmt: skip
            elif ev[0] == "audio":
                samples, rate = ev[1], ev[2]
                await self.push_frame(TTSAudioRawFrame(audio=float_to_int16(samples[:, :1]), sample_rate=rate,
                                                       num_channels=1))  # fmt: skip
            elif self._held_stops:
                await self.push_frame(self._held_stops.pop(0))
