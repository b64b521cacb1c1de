"""The provider side of a WebSocket (aiohttp): messages of ``protocol.py`` into a :class:`LiveDub`.
Used by the WebRTC server (``/bridge/SESSION``) and by ``run --bridge-port`` (``/bridge``)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType, web

from translate_bridge.bridge import LiveDub
from translate_bridge.protocol import Cancel, EndOfStream, ProtocolError, Segment, parse

log = logging.getLogger(__name__)


async def serve_provider(ws: web.WebSocketResponse, dub: LiveDub) -> None:
    """Read provider messages until the provider ends or disconnects. A refused message gets an
    ``error`` reply and changes nothing; the stream keeps running either way."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            try:
                event = parse(msg.data, dub.assembler.limits)
                placed = dub.on_event(event)
            except ProtocolError as exc:
                await ws.send_json({"type": "error", "message": str(exc)})
                continue
            if isinstance(event, Segment):
                reply: dict[str, Any] = {"type": "ack", "id": event.id}
                for p in placed:
                    reply.update(start_ms=round(1000 * p.start_s), speed=round(p.speed, 3))
                    reply.update(lag_ms=round(1000 * p.lag_s), cut_ms=round(1000 * p.cut_s))
                await ws.send_json(reply)
            elif isinstance(event, Cancel):
                await ws.send_json({"type": "ack", "id": event.id})
            elif isinstance(event, EndOfStream):
                await ws.send_json({"type": "ack", "end": True})
                return
        elif msg.type == WSMsgType.BINARY:
            await ws.send_json({"type": "error", "message": "send JSON text messages (audio as audio_b64)"})
        elif msg.type == WSMsgType.ERROR:
            log.info("dubbing provider connection error: %s", ws.exception())
