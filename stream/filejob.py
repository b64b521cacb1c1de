"""Offline dubbing of a video file by an audio file, on the same streaming engine as live use."""

from __future__ import annotations

import asyncio
import heapq
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.clock import MonotonicClock
from stream.config import Config
from stream.drive import run_offline, run_paced
from stream.errors import InputError
from stream.frames import AudioFrame, OutputAudio, OutputFrame, VideoFrame
from stream.session import LipSyncSession
from stream.sinks.file import FileSink, check_output_path
from stream.sources.file import VideoInfo, audio_blocks, probe_audio, probe_video, read_audio, video_timeline
from stream.worker import LipSyncModel

log = logging.getLogger(__name__)


@dataclass
class FileJobResult:
    output: str
    frames: int
    duration_s: float
    wall_s: float
    session: dict[str, Any]
    added_latency_s: list[float] = field(default_factory=list)
    realtime: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def _merge(video: Iterator[VideoFrame], audio: Iterator[AudioFrame]) -> Iterator[VideoFrame | AudioFrame]:
    # audio before video at equal times, so a frame's audio is in the ring when it arrives
    return heapq.merge(audio, video, key=lambda x: x.time_s)


def check_job(video_path: str, audio_path: str | tuple[np.ndarray, int], output_path: str) -> VideoInfo:
    """Everything about a file job's inputs and output that can be checked without the model
    (the CLI calls this before loading it): the video probes, the audio file opens and holds an
    audio stream, and the output is writable and is not one of the inputs."""
    inputs = (video_path,) + ((audio_path,) if isinstance(audio_path, str) else ())
    check_output_path(output_path, inputs)
    info = probe_video(video_path)
    if isinstance(audio_path, str):
        probe_audio(audio_path)
    return info


def run_file(
    video_path: str,
    audio_path: str | tuple[np.ndarray, int],
    output_path: str,
    config: Config,
    model: LipSyncModel,
    *,
    realtime: bool = False,
    video_mode: str = "loop",
    progress: bool | None = None,
) -> FileJobResult:
    """Lip-sync ``video_path`` to ``audio_path`` and write ``output_path``.

    The output lasts as long as the audio: a shorter video is looped (or its last frame held,
    ``video_mode="hold"``), a longer one is trimmed. ``realtime`` paces input at its media
    rate and applies the live deadlines; otherwise it runs as fast as the model allows.
    """
    if video_mode not in ("loop", "hold"):
        raise InputError(f"video mode {video_mode!r} is unknown: use 'loop' or 'hold'")
    info = check_job(video_path, audio_path, output_path)
    # a path, or audio already in memory: ((n, channels) float32, rate)
    samples, rate = read_audio(audio_path) if isinstance(audio_path, str) else audio_path
    duration = samples.shape[0] / rate
    if duration * info.fps < 1:
        where = f"audio file {audio_path}" if isinstance(audio_path, str) else "the audio"
        raise InputError(
            f"{where} lasts {duration * 1000:.0f} ms, shorter than one video frame ({1000 / float(info.fps):.0f} ms): "
            f"pass longer audio"
        )
    n_frames = max(1, round(duration * info.fps))
    sink = FileSink(output_path, info.width, info.height, info.fps, config.output, info.time_base)
    clock = MonotonicClock()
    session = LipSyncSession(config, model, clock)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=n_frames, unit="frame", desc="lip-sync", file=sys.stderr)
    latencies: list[float] = []

    def emit(frames: list[OutputFrame], audio: list[OutputAudio]) -> None:
        for a in audio:
            sink.write_audio(a.frame)
        for f in frames:
            sink.write_video(f.frame)
            latencies.append(f.emitted_at_s - (f.deadline_s - session.delay_s))
        if bar is not None and frames:
            bar.update(len(frames))

    media = _merge(video_timeline(video_path, info.fps, duration, video_mode), audio_blocks(samples, rate))
    t0 = time.perf_counter()
    try:
        if realtime:
            asyncio.run(run_paced(session, clock, media, emit))
        else:
            run_offline(session, media, emit)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
        session.close()
    wall = time.perf_counter() - t0
    return FileJobResult(
        output_path, session.stats.frames_out, duration, wall, session.stats.as_dict(), latencies, realtime
    )
