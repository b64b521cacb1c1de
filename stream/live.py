"""The live presenter path: camera + microphone -> engine -> virtual camera + delayed audio.

Video frames leave at their deadlines to the virtual camera; audio is handed to the output
device ahead of its deadline and scheduled there to be heard at deadline + ``audio_extra_delay_ms``,
so the virtual microphone carries the voice delayed exactly as much as the picture (otherwise
lips and voice drift apart at the receiver). A stats line reports fps, added latency, late
frames and speech state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.clock import Clock
from stream.config import Config
from stream.frames import AudioFrame, VideoFrame
from stream.playout import OutputWindow
from stream.session import LipSyncSession
from stream.sinks.speaker import SpeakerSink
from stream.sinks.virtualcam import VirtualCameraSink
from stream.sources.camera import CameraSource
from stream.sources.mic import MicSource

log = logging.getLogger(__name__)

AUDIO_LEAD_S = 0.25  # audio goes to the device this early; the device schedules it


@dataclass
class LiveStats:
    window: OutputWindow = field(default_factory=OutputWindow)
    speech: bool = False
    sent_frames: list[tuple[float, float]] = field(default_factory=list)  # (capture media s, sent clock s), capped

    def line(self, session: LipSyncSession, now: float) -> str:
        w = self.window.summary(now)
        s = session.stats
        return (
            f"{w['fps']:5.1f} fps | added latency p50 {w['added_latency_ms_p50']:4.0f} ms "
            f"p95 {w['added_latency_ms_p95']:4.0f} ms | late {s.late} | "
            f"{'SPEECH ' if self.speech else 'silence'} | generated {s.generated} rest {s.rest} "
            f"hold {s.hold} passthrough {s.passthrough}"
            + (
                ""
                if (h := self.window.health(now, session.ladder.level, session.ladder.describe()))["keeping_up"]
                else f" | {h['status']}"
            )
        )


class LiveRun:
    """Owns one live session and its devices. ``camera`` / ``mic`` may be None (no such input);
    ``vcam`` (a :class:`VirtualCameraSink` or None) and ``speaker`` (a :class:`SpeakerSink` or
    None) are the outputs, opened by the caller."""

    def __init__(
        self,
        config: Config,
        model: Any,
        clock: Clock,
        camera: CameraSource | None,
        mic: MicSource | None,
        vcam_factory: Callable[[int, int, float], VirtualCameraSink] | None,
        speaker: SpeakerSink | None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.session = LipSyncSession(config, model, clock)
        self.camera = camera
        self.mic = mic
        self.vcam_factory = vcam_factory
        self.vcam: VirtualCameraSink | None = None
        self.speaker = speaker
        self.stats = LiveStats()
        self._wake = asyncio.Event()
        self._closed = False
        self.dub: Any = None  # translate_bridge.bridge.LiveDub when a dubbing provider drives the lips
        self.extra_s = config.live.audio_extra_delay_ms / 1000

    def _push_video(self, vf: VideoFrame) -> None:
        try:
            self.session.push_video(vf)
        except Exception as exc:  # one bad frame must not end the stream
            log.warning("dropped a camera frame: %s", exc)
        self._wake.set()

    def _push_audio(self, af: AudioFrame) -> None:
        if self.dub is not None:
            return  # dubbed: the presenter's own voice is never heard
        self._engine_audio(af)

    def _engine_audio(self, af: AudioFrame) -> None:
        try:
            self.session.push_audio(af)
        except Exception as exc:
            log.warning("dropped a microphone block: %s", exc)
        self._wake.set()

    def enable_dub(self, bridge: Any) -> Any:
        """Let a dubbing provider drive the lips (``bridge``: a ``[bridge]`` config section);
        returns the :class:`translate_bridge.bridge.LiveDub` to feed."""
        from translate_bridge.bridge import LiveDub

        origin = self.camera.origin_s if self.camera is not None else (self.mic.origin_s if self.mic else 0.0)
        self.dub = LiveDub.for_session(self.session, self._engine_audio, lambda: self.clock.now() - origin, bridge)
        return self.dub

    async def run(self, seconds: float | None = None, on_stats: Callable[[str], None] | None = None) -> None:
        """Run until cancelled (or for ``seconds``); devices are closed on the way out."""
        loop = asyncio.get_running_loop()
        try:
            if self.speaker is not None:
                self.speaker.start()
            if self.mic is not None:
                self.mic.start(loop, self._push_audio)
            if self.camera is not None:
                self.camera.start(loop, self._push_video)
            end = None if seconds is None else self.clock.now() + seconds
            last_stats = 0.0
            lead = AUDIO_LEAD_S if self.speaker is not None else 0.0
            while end is None or self.clock.now() < end:
                nd = self.session.next_deadline(lead)
                if nd is None:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), 0.1 if self.dub is not None else 0.5)
                    except TimeoutError:
                        pass
                else:
                    t = min(nd, end) if end is not None else nd
                    if self.dub is not None:
                        t = min(t, self.clock.now() + 0.1)
                    await self.clock.sleep_until(t)
                if self.dub is not None:
                    self.dub.tick()
                now = self.clock.now()
                frames, audio = self.session.pull(now, audio_lead_s=lead)
                for f in frames:
                    self._send_video(f.frame.image, now)
                    self.stats.window.add(now, now - f.deadline_s + self.session.delay_s, f.kind.value, f.late)
                    if len(self.stats.sent_frames) < 100000:
                        self.stats.sent_frames.append((f.frame.time_s, now))
                    self.stats.speech = f.speech
                for a in audio:
                    if self.speaker is not None:
                        self.speaker.put(a.frame.samples, a.frame.sample_rate_hz, a.deadline_s + self.extra_s)
                if on_stats is not None and now - last_stats >= 1.0:
                    last_stats = now
                    on_stats(self.stats.line(self.session, now))
        finally:
            self.close()

    def _send_video(self, image: np.ndarray, now: float) -> None:
        if self.vcam is None and self.vcam_factory is not None:
            fps = float(self.config.live.camera_fps)
            self.vcam = self.vcam_factory(image.shape[1], image.shape[0], fps)
        if self.vcam is not None:
            self.vcam.send(image)

    def close(self) -> None:
        """Stop inputs first (no new frames), then outputs, then the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for part in (self.camera, self.mic, self.speaker):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep closing the rest
                    log.warning("closing %s: %s", type(part).__name__, exc)
        if self.vcam is not None:
            try:
                self.vcam.close()
            except Exception as exc:
                log.warning("closing the virtual camera: %s", exc)
            self.vcam = None
        self.session.close()
