"""A lip-synced avatar for LiveKit Agents: a ``VideoGenerator`` (livekit-agents' avatar
interface) backed by one engine session. Audio in, the face's lip-synced video plus that same
audio out, in media-time order, paced in real time (``AvatarRunner``'s ``rtc.AVSynchronizer``
keeps them together on the wire).

    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioReceiver
    from stream.integrations.livekit import LipSyncVideoGenerator

    gen = LipSyncVideoGenerator.create(face="me.png")
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=gen,
                          options=gen.options())

``clear_buffer`` (the user interrupted the agent) drops the queued audio and brings the mouth
to rest from the next frame out; an ``AudioSegmentEnd`` pushed in comes out after the
segment's last audio. See ``examples/livekit_avatar/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import cv2
import numpy as np

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator
except ImportError as e:  # pragma: no cover - an optional extra
    raise ImportError("the LiveKit avatar needs livekit-agents: pip install 'sayanything-live[livekit]'") from e

from stream.avatar import Avatar
from stream.config import Config
from stream.integrations._common import Resampler, build_avatar, float_to_int16, int16_to_float
from stream.worker import LipSyncModel


class LipSyncVideoGenerator(VideoGenerator):
    def __init__(self, avatar: Avatar, sample_rate: int = 24000, width: int | None = None, height: int | None = None):
        self.avatar = avatar
        self.sample_rate = sample_rate
        h, w = avatar.face[0].shape[:2]
        self.width, self.height = width or w, height or h
        self._resample = Resampler(sample_rate, 1)

    @classmethod
    def create(
        cls,
        face: str | None = None,
        config: Config | None = None,
        model: LipSyncModel | None = None,
        fps: float = 25.0,
        sample_rate: int = 24000,
    ) -> LipSyncVideoGenerator:
        return cls(build_avatar(face, config, model, fps), sample_rate)

    def options(self) -> AvatarOptions:
        return AvatarOptions(
            video_width=self.width,
            video_height=self.height,
            video_fps=self.avatar.fps,
            audio_sample_rate=self.sample_rate,
            audio_channels=1,
        )

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.avatar.end_segment()
            return
        x = int16_to_float(frame.data, frame.num_channels)
        y = self._resample(x, frame.sample_rate)
        if y.shape[0]:
            self.avatar.push_audio(y, self.sample_rate)

    def clear_buffer(self) -> None:
        self.avatar.clear()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for ev in self.avatar.events():
            if ev[0] == "video":
                img = ev[1]
                if img.shape[1] != self.width or img.shape[0] != self.height:
                    img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
                rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
                yield rtc.VideoFrame(self.width, self.height, rtc.VideoBufferType.RGBA, rgba.tobytes())
            elif ev[0] == "audio":
                samples, rate = ev[1], ev[2]
                yield rtc.AudioFrame(float_to_int16(samples[:, :1]), rate, 1, samples.shape[0])
            else:
                yield AudioSegmentEnd()

    async def aclose(self) -> None:
        self.avatar.close()
