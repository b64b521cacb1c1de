"""What a dubbing provider delivers, as Python objects and as WebSocket messages.

A provider turns the speaker's speech (source) into dubbed speech (target) segment by segment.
Each segment says which span of *source* time it translates; the bridge places its audio
there (``align.py``) so the lips of the video follow the dub.

Events:

- :class:`Segment`: dubbed PCM audio (any rate, mono or multi-channel) for the source span
  ``[source_start_s, source_end_s)``, optional text, ``final``: no more audio follows for this
  id. A segment may arrive in several parts with the same id (``final`` on the last); parts
  are appended in order.
- :class:`Final`: closes a segment whose parts did not say ``final``.
- :class:`Cancel`: withdraws a segment (the provider revised it); what has not played yet is
  dropped and the mouth rests.
- :class:`EndOfStream`: the provider is done.

WebSocket schema (JSON text messages; audio as base64 of 16-bit little-endian PCM,
interleaved when ``channels`` > 1)::

    {"type": "segment", "id": "s1", "source_start_ms": 1200, "source_end_ms": 3400,
     "sample_rate_hz": 24000, "channels": 1, "audio_b64": "...", "text": "Hola", "final": true}
    {"type": "final", "id": "s1"}
    {"type": "cancel", "id": "s1"}
    {"type": "end"}

The server answers ``{"type": "ack", "id": ...}`` for each accepted segment part and
``{"type": "error", "message": ...}`` for a message it refuses; a refused message changes
nothing and the connection stays open.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.errors import InputError


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_segment_s: float = 30.0  # one segment's audio, all parts together
    max_rate_hz: int = 192000
    max_channels: int = 8


@dataclass
class Segment:
    id: str
    source_start_s: float
    source_end_s: float
    audio: np.ndarray  # (n, channels) float32 in [-1, 1]
    sample_rate_hz: int
    text: str = ""
    final: bool = True

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate_hz


@dataclass(frozen=True)
class Final:
    id: str


@dataclass(frozen=True)
class Cancel:
    id: str


@dataclass(frozen=True)
class EndOfStream:
    pass


Event = Segment | Final | Cancel | EndOfStream


class ProtocolError(InputError):
    """A provider message that cannot be used (the message names what is wrong)."""


def _need(msg: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in msg:
        raise ProtocolError(f"message {msg.get('type')!r} lacks {key!r}")
    v = msg[key]
    if isinstance(v, bool) or not isinstance(v, kind):
        raise ProtocolError(f"message {msg.get('type')!r}: {key!r} has the wrong type ({type(v).__name__})")
    return v


def parse(text: str | bytes, limits: Limits = Limits()) -> Event:
    """One WebSocket message -> an event, or a ProtocolError saying what is wrong."""
    if len(text) > limits.max_message_bytes:
        raise ProtocolError(f"message of {len(text)} bytes is over the {limits.max_message_bytes} byte limit")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(msg, dict) or "type" not in msg:
        raise ProtocolError("message must be a JSON object with a 'type'")
    kind = msg["type"]
    if kind == "end":
        return EndOfStream()
    if kind in ("final", "cancel"):
        sid = _need(msg, "id", str)
        return Final(sid) if kind == "final" else Cancel(sid)
    if kind != "segment":
        raise ProtocolError(f"unknown message type {kind!r}: use segment, final, cancel or end")
    sid = _need(msg, "id", str)
    start_ms = _need(msg, "source_start_ms", (int, float))
    end_ms = _need(msg, "source_end_ms", (int, float))
    rate = _need(msg, "sample_rate_hz", int)
    channels = msg.get("channels", 1)
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= limits.max_channels:
        raise ProtocolError(f"segment {sid}: channels must be 1 to {limits.max_channels}")
    if not 8000 <= rate <= limits.max_rate_hz:
        raise ProtocolError(f"segment {sid}: sample_rate_hz {rate} is outside 8000 to {limits.max_rate_hz}")
    if start_ms < 0 or end_ms <= start_ms:
        raise ProtocolError(f"segment {sid}: source span {start_ms}-{end_ms} ms is empty or negative")
    try:
        raw = base64.b64decode(_need(msg, "audio_b64", str), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"segment {sid}: audio_b64 is not base64 ({exc})") from None
    if len(raw) % (2 * channels):
        raise ProtocolError(f"segment {sid}: audio is not whole 16-bit frames of {channels} channel(s)")
    pcm = np.frombuffer(raw, "<i2").reshape(-1, channels).astype(np.float32) / 32768.0
    if pcm.shape[0] / rate > limits.max_segment_s:
        raise ProtocolError(f"segment {sid}: {pcm.shape[0] / rate:.1f} s of audio is over {limits.max_segment_s:g} s")
    text = msg.get("text", "")
    final = msg.get("final", True)
    if not isinstance(text, str) or not isinstance(final, bool):
        raise ProtocolError(f"segment {sid}: 'text' must be text and 'final' true or false")
    return Segment(sid, start_ms / 1000, end_ms / 1000, pcm, rate, text, final)


def encode(event: Event) -> str:
    """An event as a WebSocket message (what a provider sends)."""
    if isinstance(event, EndOfStream):
        return json.dumps({"type": "end"})
    if isinstance(event, (Final, Cancel)):
        return json.dumps({"type": "final" if isinstance(event, Final) else "cancel", "id": event.id})
    pcm = (np.clip(event.audio, -1, 1) * 32767).astype("<i2")
    return json.dumps(
        {
            "type": "segment",
            "id": event.id,
            "source_start_ms": round(event.source_start_s * 1000, 3),
            "source_end_ms": round(event.source_end_s * 1000, 3),
            "sample_rate_hz": event.sample_rate_hz,
            "channels": int(event.audio.shape[1]),
            "audio_b64": base64.b64encode(pcm.tobytes()).decode(),
            "text": event.text,
            "final": event.final,
        }
    )


@dataclass
class Assembler:
    """Joins segment parts by id; enforces the per-segment limit; handles final / cancel.

    ``feed(event)`` returns the segments that became complete (final), in the order they
    completed. Parts after a segment completed or was cancelled are errors.
    """

    limits: Limits = field(default_factory=Limits)
    _open: dict[str, Segment] = field(default_factory=dict)
    _closed: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)

    def feed(self, event: Event) -> list[Segment]:
        if isinstance(event, EndOfStream):
            done = [s for s in self._open.values()]  # the provider ended: what it sent is final
            self._open.clear()
            return done
        if isinstance(event, Cancel):
            if event.id in self._open:
                del self._open[event.id]
            self._closed.add(event.id)
            self.cancelled.append(event.id)
            return []
        if isinstance(event, Final):
            if event.id not in self._open:
                raise ProtocolError(f"final for segment {event.id}, which is not open")
            self._closed.add(event.id)
            return [self._open.pop(event.id)]
        if event.id in self._closed:
            raise ProtocolError(f"segment {event.id} already ended (final or cancel): use a new id")
        prev = self._open.get(event.id)
        if prev is not None:
            if prev.sample_rate_hz != event.sample_rate_hz or prev.audio.shape[1] != event.audio.shape[1]:
                raise ProtocolError(f"segment {event.id}: a part changed rate or channels")
            prev.audio = np.concatenate([prev.audio, event.audio])
            prev.text += event.text
            prev.final = event.final
            seg = prev
        else:
            seg = event
        if seg.duration_s > self.limits.max_segment_s:
            self._open.pop(seg.id, None)
            self._closed.add(seg.id)
            raise ProtocolError(
                f"segment {seg.id}: {seg.duration_s:.1f} s of audio is over {self.limits.max_segment_s:g} s"
            )
        if seg.final:
            self._open.pop(seg.id, None)
            self._closed.add(seg.id)
            return [seg]
        self._open[seg.id] = seg
        return []
