"""Drivers that feed a session from time-ordered media and hand its output to a sink.

``run_paced`` is the live timing model (each input enters at its media time, each output
leaves at its deadline); with a :class:`~stream.clock.VirtualClock` it is deterministic.
``run_offline`` runs as fast as the model allows, keeping it busy while frames are decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stream.clock import Clock
from stream.frames import AudioFrame, OutputAudio, OutputFrame, VideoFrame
from stream.session import LipSyncSession

Emit = Callable[[list[OutputFrame], list[OutputAudio]], None]


def _push(session: LipSyncSession, item: VideoFrame | AudioFrame) -> None:
    if isinstance(item, VideoFrame):
        session.push_video(item)
    else:
        session.push_audio(item)


async def _drain(session: LipSyncSession, clock: Clock, until: float, emit: Emit) -> None:
    while True:
        nd = session.next_deadline()
        if nd is None or nd > until:
            return
        await clock.sleep_until(nd)
        frames, audio = session.pull(max(nd, clock.now()))
        if frames or audio:
            emit(frames, audio)


async def run_paced(
    session: LipSyncSession, clock: Clock, media: Iterable[VideoFrame | AudioFrame], emit: Emit
) -> None:
    """Push each item at ``start + media time`` on ``clock``; emit outputs at their deadlines."""
    start: float | None = None
    for item in media:
        if start is None:
            start = clock.now() - item.time_s
        t = start + item.time_s
        await _drain(session, clock, t, emit)
        await clock.sleep_until(t)
        _push(session, item)
    session.finish()
    await _drain(session, clock, float("inf"), emit)


def run_offline(
    session: LipSyncSession,
    media: Iterable[VideoFrame | AudioFrame],
    emit: Emit,
    lookahead_frames: int = 32,
) -> None:
    """Push everything as fast as it decodes; take frames once ``lookahead_frames`` are pending
    (so decoding overlaps the model), waiting for the model instead of using deadlines. When the
    model worker's queue is full, wait for it before pushing more: offline, no chunk is refused."""
    for item in media:
        if session.worker.pending >= session.worker.max_pending:
            emit(*session.pull(wait=True))
        _push(session, item)
        if session.pending_frames > lookahead_frames:
            emit(*session.pull(wait=True))
    session.finish()
    emit(*session.pull(wait=True))
