"""WebRTC server: ``sayanything-live serve`` (aiohttp signalling + aiortc media).

Routes (every one but the page needs ``Authorization: Bearer TOKEN`` when a token is set):

- ``GET /``: a page that sends the camera and microphone and shows the lip-synced video next to
  the original, with live stats.
- ``POST /offer``: JSON ``{"sdp", "type": "offer", "audio_from"?: SESSION}`` -> JSON answer with
  ``"session"``. The returned video and the (delayed) audio come back on the same connection.
- ``POST /whip``: WHIP ingest (SDP offer in, ``201`` + ``Location: /whip/ID`` + SDP answer);
  ``DELETE /whip/ID`` ends it. ``?audio_from=SESSION`` takes the driving audio from another
  session (a dubbing bridge publishing audio only, for instance).
- ``POST /whep/ID`` (or ``/whep`` for the newest session): WHEP egress of a session's output;
  ``DELETE /whep/ID/VIEWER`` ends that player.
- ``GET /sessions``, ``GET /sessions/ID`` (stats), ``DELETE /sessions/ID``.
- ``GET /bridge/ID`` (WebSocket): a dubbing provider drives session ID's lips with dubbed
  speech (translate_bridge/protocol.py); from the first connection on, the session's own
  microphone is never heard again.

Each engine session is one :class:`LipSyncSession`; all share one loaded model and one model
worker (convention: inference off the event loop, one worker per process and device).
Sessions end on DELETE, on ICE/DTLS failure or close, when the peer does not connect within
``connect_timeout_s``, or when no media arrives for ``media_timeout_s``; ending cancels and
awaits every task of the session and stops its tracks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections import deque
from importlib import resources
from typing import Any

from aiohttp import web

from stream.clock import MonotonicClock
from stream.config import Config
from stream.errors import ConfigError
from stream.frames import AudioFrame, VideoFrame
from stream.playout import OutputWindow
from stream.session import LipSyncSession
from stream.sinks.webrtc import OutputAudioTrack, OutputVideoTrack
from stream.sources.webrtc import PeerTimeline, pump, watch_sender_reports
from stream.worker import LipSyncModel, ModelWorker, settle_heap

log = logging.getLogger(__name__)


class SignallingError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to expose the server beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"server.host = {host!r} is reachable from other machines: set server.token "
            "(or $SAYANYTHING_TOKEN) to a secret, or bind 127.0.0.1"
        )


def restrict_ice_host_addresses(addresses: list[str]) -> None:
    """Offer only ``addresses`` as ICE host candidates (``server.ice_host_addresses``).

    aioice lists every non-loopback interface itself and has no option for this, so its address
    lookup is replaced process-wide, explicitly and only when the setting is given.
    """
    import aioice.ice

    chosen = list(addresses)

    def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = _host_addresses


def _ice_configuration(urls: str) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer

    servers = [RTCIceServer(urls=u.strip()) for u in urls.split(",") if u.strip()]
    return RTCConfiguration(iceServers=servers)  # an empty list: aiortc contacts no STUN server


def _parse_offer(sdp: str) -> Any:
    from aiortc import RTCSessionDescription

    if not sdp.strip().startswith("v=0") or "\nm=" not in sdp:
        raise SignallingError(400, "malformed SDP offer: it must start with 'v=0' and have at least one m= line")
    from aiortc.sdp import SessionDescription

    try:  # aiortc's parser raises whatever its code hits on hostile input (StopIteration, IndexError, ...)
        SessionDescription.parse(sdp)
    except Exception as exc:
        raise SignallingError(400, f"malformed SDP offer: {type(exc).__name__} {exc}".rstrip()) from exc
    return RTCSessionDescription(sdp=sdp, type="offer")


async def _negotiate(pc: Any, offer: Any, before_answer: Any = None) -> str:
    try:
        await pc.setRemoteDescription(offer)
    except AttributeError as exc:  # aiortc on a media section without DTLS fingerprint or ICE credentials
        raise SignallingError(
            400, "malformed SDP offer: every m= section needs a=fingerprint, a=ice-ufrag and a=ice-pwd"
        ) from exc
    except Exception as exc:  # on a fresh connection, anything aiortc raises here comes from the offer
        raise SignallingError(400, f"malformed SDP offer: {type(exc).__name__} {exc}".rstrip()) from exc
    if before_answer is not None:
        before_answer()
    try:
        answer = await pc.createAnswer()
    except Exception as exc:  # e.g. a direction or codec set aiortc cannot answer
        raise SignallingError(400, f"SDP offer cannot be answered: {type(exc).__name__} {exc}".rstrip()) from exc
    await pc.setLocalDescription(answer)  # gathers candidates (no trickle)
    return str(pc.localDescription.sdp)


class PeerSession:
    """One peer connection and the engine session that lip-syncs its video."""

    def __init__(self, server: Server, kind: str, audio_from: PeerSession | None = None) -> None:
        from aiortc import RTCPeerConnection

        self.server = server
        self.kind = kind  # "offer" (browser page) or "whip"
        self.id = secrets.token_urlsafe(9)
        self.clock = server.clock
        self.origin_s = self.clock.now()
        self.created_s = self.origin_s
        cfg = server.config
        self.engine = LipSyncSession(cfg, server.model, self.clock, worker=server.worker)
        self.pc = RTCPeerConnection(_ice_configuration(cfg.server.ice_servers))
        self.video_out = OutputVideoTrack(self.origin_s)
        self.audio_out = OutputAudioTrack()
        self.remote: dict[str, Any] = {}  # kind -> relay source of the peer's incoming track
        self.audio_from = audio_from
        self.tasks: set[asyncio.Task] = set()
        self.last_media_s = self.origin_s
        self.timeline = PeerTimeline(self.origin_s)
        self.window = OutputWindow()
        self._health_at = self.clock.now()  # first report after 10 s of output
        self._was_behind = False
        self.speech = False
        self.dub: Any = None  # translate_bridge.bridge.LiveDub once a provider connected
        self.bridge_connected = False
        self.end_reason = ""
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # -- media in ---------------------------------------------------------------------
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.id}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: task %s failed: %r", self.id, task.get_name(), task.exception())

    def _push(self, item: VideoFrame | AudioFrame) -> None:
        if self.dub is not None and isinstance(item, AudioFrame):
            return  # dubbed: the original speech is never heard
        self._engine_push(item)

    def _engine_push(self, item: VideoFrame | AudioFrame) -> None:
        try:
            if isinstance(item, VideoFrame):
                self.engine.push_video(item)
            else:
                self.engine.push_audio(item)
        except Exception as exc:  # one bad frame must not end the stream
            log.warning("session %s: dropped an input frame: %s", self.id, exc)
        self._wake.set()

    def _seen_media(self) -> None:
        self.last_media_s = self.clock.now()

    def _on_track(self, track: Any) -> None:
        source = self.server.relay.subscribe(track)
        self.remote[track.kind] = track
        for tr in self.pc.getTransceivers():
            if tr.receiver.track is track:
                try:
                    watch_sender_reports(tr.receiver, track.kind, self.timeline)
                except Exception as exc:  # without reports the track is stamped at arrival
                    log.warning("session %s: cannot read %s sender reports: %s", self.id, track.kind, exc)
        tl = self.timeline
        if track.kind == "video":
            self._spawn(pump(source, "video", self.clock, self.origin_s, self._push, self._seen_media, tl), "video-in")
            self.pc.addTrack(self.server.relay.subscribe(self.video_out))
        elif track.kind == "audio":
            own = self.audio_from is None
            self._spawn(
                pump(source, "audio", self.clock, self.origin_s, self._push if own else None, self._seen_media, tl),
                "audio-in",
            )
            self.pc.addTrack(self.server.relay.subscribe(self.audio_out))

    def start(self) -> None:
        """Start playout and the watchdog (after negotiation) and any borrowed audio."""
        if self.audio_from is not None:
            src = self.audio_from.remote.get("audio")
            if src is None:
                raise SignallingError(
                    400, f"audio_from session {self.audio_from.id} has no audio track: publish audio there first"
                )
            self._spawn(
                pump(self.server.relay.subscribe(src), "audio", self.clock, self.origin_s, self._push),
                "audio-from",
            )
        self._spawn(self._playout(), "playout")
        self._spawn(self._watchdog(), "watchdog")

    def start_dub(self) -> Any:
        """Switch the session's driving audio to a dubbing provider (once; reconnects reuse it)."""
        if self.dub is None:
            from translate_bridge.bridge import LiveDub

            self.dub = LiveDub.for_session(
                self.engine, self._engine_push, lambda: self.clock.now() - self.origin_s, self.server.config.bridge
            )
            self._spawn(self._dub_ticker(), "dub-ticker")
        return self.dub

    async def _dub_ticker(self) -> None:
        while True:
            self.dub.tick()
            await asyncio.sleep(0.1)

    # -- media out --------------------------------------------------------------------
    async def _playout(self) -> None:
        d = self.engine.delay_s
        while True:
            nd = self.engine.next_deadline()
            if nd is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = nd - self.clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
            now = self.clock.now()
            frames, audio = self.engine.pull(now)
            for f in frames:
                self.video_out.put(f)
                self.window.add(now, now - f.deadline_s + d, f.kind.value, f.late)
                self.speech = f.speech
            if frames:
                self._report_health(now)
            for a in audio:
                self.audio_out.put(a)

    def _report_health(self, now: float) -> None:
        """Say in the log, every 10 s while it lasts, that the model is not keeping up (and once
        when it is again): the stream stays alive on the degrade ladder, which would otherwise
        hide that the mouths are missing."""
        if now - self._health_at < 10.0:
            return
        self._health_at = now
        h = self.window.health(now, self.engine.ladder.level, self.engine.ladder.describe())
        if not h["keeping_up"]:
            log.warning("session %s: %s", self.id, h["status"])
            self._was_behind = True
        elif self._was_behind:
            log.warning("session %s: the model keeps up again (degrade level 0, no late frame in 10 s)", self.id)
            self._was_behind = False

    async def _watchdog(self) -> None:
        cfg = self.server.config.server
        while True:
            await asyncio.sleep(0.25)
            now = self.clock.now()
            if self.pc.connectionState != "connected" and now - self.created_s > cfg.connect_timeout_s:
                if self.pc.connectionState in ("new", "connecting"):
                    self._spawn_close(f"did not connect within {cfg.connect_timeout_s:g} s")
                    return
            if self.pc.connectionState == "connected" and now - self.last_media_s > cfg.media_timeout_s:
                self._spawn_close(f"no media for {cfg.media_timeout_s:g} s")
                return

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn_close(f"connection {self.pc.connectionState}")
        elif self.pc.connectionState == "connected":
            self.last_media_s = self.clock.now()

    def _spawn_close(self, reason: str) -> None:
        if not self._closing:
            asyncio.get_running_loop().create_task(self.aclose(reason))

    # -- end --------------------------------------------------------------------------
    async def aclose(self, reason: str = "closed") -> None:
        """Cancel and await every task, close the connection and the engine session."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.end_reason = reason
        log.info("session %s (%s) ends: %s", self.id, self.kind, reason)
        self.server.sessions.pop(self.id, None)
        self.server.ended.append((self.id, reason))
        me = asyncio.current_task()
        tasks = [t for t in self.tasks if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.video_out.stop()
        self.audio_out.stop()
        for track in self.remote.values():
            track.stop()
        await self.pc.close()
        for viewer in [v for v in self.server.viewers.values() if v.source is self]:
            await viewer.aclose("its session ended")
        self.engine.close()
        self._closed.set()

    def stats(self) -> dict[str, Any]:
        s = self.engine.stats
        out: dict[str, Any] = {
            "session": self.id,
            "kind": self.kind,
            "state": self.pc.connectionState,
            "age_s": round(self.clock.now() - self.created_s, 1),
            "model": self.server.model.name,
            "delay_ms": self.server.config.playout.delay_ms,
            "speech": self.speech,
            "frames_in": s.frames_in,
            "frames_out": s.frames_out,
            "late": s.late,
            "generated": s.generated,
            "rest": s.rest,
            "hold": s.hold,
            "passthrough": s.passthrough,
            "no_face": s.no_face,
            "degrade_level": s.degrade_level,
            "dropped_out": self.video_out.dropped + self.audio_out.dropped,
            "audio_from": self.audio_from.id if self.audio_from is not None else None,
            "dub": None
            if self.dub is None
            else {
                "connected": self.bridge_connected,
                "segments": self.dub.segments,
                "lag_ms": round(1000 * self.dub.aligner.lag_s),
                "max_lag_ms": round(1000 * self.dub.aligner.max_lag_seen_s),
                "late_ms": round(1000 * self.dub.late_s),
                "dropped": len(self.dub.aligner.dropped),
            },
        }
        now = self.clock.now()
        out.update(self.window.summary(now))
        out["degrade_rung"] = self.engine.ladder.describe()
        out.update(self.window.health(now, self.engine.ladder.level, out["degrade_rung"]))
        return out


class Viewer:
    """A WHEP player of a session's output."""

    def __init__(self, server: Server, source: PeerSession) -> None:
        from aiortc import RTCPeerConnection

        self.server = server
        self.source = source
        self.id = secrets.token_urlsafe(9)
        self.pc = RTCPeerConnection(_ice_configuration(server.config.server.ice_servers))
        self._closing = False
        self.pc.on("connectionstatechange", self._on_state)

    def add_tracks(self) -> None:
        self.pc.addTrack(self.server.relay.subscribe(self.source.video_out))
        self.pc.addTrack(self.server.relay.subscribe(self.source.audio_out))

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and not self._closing:
            asyncio.get_running_loop().create_task(self.aclose(f"connection {self.pc.connectionState}"))

    async def aclose(self, reason: str = "closed") -> None:
        if self._closing:
            return
        self._closing = True
        log.info("viewer %s of %s ends: %s", self.id, self.source.id, reason)
        self.server.viewers.pop(self.id, None)
        await self.pc.close()


class Server:
    """Sessions, limits and the aiohttp application. ``model`` is loaded once by the caller."""

    def __init__(self, config: Config, model: LipSyncModel, token: str = "") -> None:
        from aiortc.contrib.media import MediaRelay

        self.config = config
        self.model = model
        self.token = token or config.server.token
        check_bind(config.server.host, self.token)
        if config.server.ice_host_addresses.strip():
            restrict_ice_host_addresses([a.strip() for a in config.server.ice_host_addresses.split(",") if a.strip()])
        self.clock = MonotonicClock()
        self.worker = ModelWorker(model, self.clock, max_pending=2 * config.server.max_sessions)
        self.relay = MediaRelay()
        self.sessions: dict[str, PeerSession] = {}
        self.viewers: dict[str, Viewer] = {}
        self.ended: deque[tuple[str, str]] = deque(maxlen=100)  # (session, why it ended), newest last
        self.started_s = time.time()

    # -- HTTP -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.server.max_body_bytes, middlewares=[self._errors, self._auth, self._size]
        )
        app.router.add_get("/", self._page)
        app.router.add_post("/offer", self._offer)
        app.router.add_post("/whip", self._whip)
        app.router.add_delete("/whip/{id}", self._whip_delete)
        app.router.add_patch("/whip/{id}", self._no_trickle)
        app.router.add_post("/whep", self._whep)
        app.router.add_post("/whep/{id}", self._whep)
        app.router.add_delete("/whep/{id}/{viewer}", self._whep_delete)
        app.router.add_patch("/whep/{id}/{viewer}", self._no_trickle)
        app.router.add_get("/bridge/{id}", self._bridge)
        app.router.add_get("/sessions", self._list)
        app.router.add_get("/sessions/{id}", self._stats)
        app.router.add_delete("/sessions/{id}", self._delete)
        app.on_shutdown.append(self._shutdown)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except SignallingError as exc:
            log.info("%s %s -> %d: %s", request.method, request.path, exc.status, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return web.json_response({"error": str(exc)}, status=exc.status, headers=headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # the router's own 404/405/413: the same JSON error shape as every other refusal
            what = {404: "no such route", 405: "method not allowed here"}.get(exc.status, exc.reason)
            allowed = exc.headers.get("Allow")
            hint = f" (allowed: {allowed})" if allowed else ""
            log.info("%s %s -> %d", request.method, request.path, exc.status)
            return web.json_response(
                {"error": f"{what}: {request.method} {request.path}{hint}"},
                status=exc.status,
                headers={"Allow": allowed} if allowed else None,
            )
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": f"internal error: {exc!r} (see the server log)"}, status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and request.path != "/":
            given = request.headers.get("Authorization", "")
            if not given.startswith("Bearer ") or not hmac.compare_digest(
                given[len("Bearer ") :].encode(), self.token.encode()
            ):
                raise SignallingError(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'")
        return await handler(request)

    @web.middleware
    async def _size(self, request: web.Request, handler: Any) -> web.StreamResponse:
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise SignallingError(
                400,
                f"request body is {request.content_length} bytes, over the {limit} byte limit (server.max_body_bytes)",
            )
        return await handler(request)

    async def _read_text(self, request: web.Request) -> str:
        limit = self.config.server.max_body_bytes
        # The body may arrive in any number of TCP writes (or chunks, with no Content-Length):
        # read until the end of the body, stopping as soon as it passes the limit.
        parts: list[bytes] = []
        size = 0
        try:
            while size <= limit:
                part = await request.content.read(limit + 1 - size)
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except Exception as exc:  # a client that disconnects mid-body
            raise SignallingError(400, f"could not read the request body: {exc}") from exc
        body = b"".join(parts)
        if len(body) > limit:
            raise SignallingError(400, f"request body is over the {limit} byte limit (server.max_body_bytes)")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignallingError(400, "request body is not UTF-8 text: send the SDP offer as text") from exc

    def _check_capacity(self) -> None:
        n = self.config.server.max_sessions
        if len(self.sessions) >= n:
            raise SignallingError(
                503, f"the server is at its limit of {n} sessions (server.max_sessions): try again later"
            )

    def _session(self, sid: str, what: str = "session") -> PeerSession:
        s = self.sessions.get(sid)
        if s is None:
            raise SignallingError(404, f"no {what} {sid!r}: it ended or never existed (GET /sessions lists them)")
        return s

    async def _page(self, request: web.Request) -> web.StreamResponse:
        html = (resources.files("stream") / "assets" / "page.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html")

    async def _start_session(self, sdp: str, kind: str, audio_from: str | None) -> PeerSession:
        self._check_capacity()
        offer = _parse_offer(sdp)
        src = self._session(audio_from, "audio_from session") if audio_from else None
        session = PeerSession(self, kind, src)
        self.sessions[session.id] = session
        try:
            await _negotiate(session.pc, offer)
            session.start()
        except BaseException:
            await session.aclose("signalling failed")
            raise
        return session

    async def _offer(self, request: web.Request) -> web.StreamResponse:
        text = await self._read_text(request)
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignallingError(400, f"POST /offer takes JSON {{'sdp', 'type'}}: {exc}") from exc
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            raise SignallingError(400, "POST /offer takes JSON with 'sdp' (text) and 'type': 'offer'")
        audio_from = body.get("audio_from")
        if audio_from is not None and not isinstance(audio_from, str):
            raise SignallingError(400, "'audio_from' must be a session id (text)")
        session = await self._start_session(body["sdp"], "offer", audio_from)
        desc = session.pc.localDescription
        return web.json_response({"sdp": desc.sdp, "type": desc.type, "session": session.id})

    async def _whip(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/sdp":
            raise SignallingError(400, f"WHIP takes Content-Type application/sdp, got {request.content_type!r}")
        sdp = await self._read_text(request)
        session = await self._start_session(sdp, "whip", request.query.get("audio_from"))
        return web.Response(
            status=201,
            text=session.pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whip/{session.id}", "X-Session": session.id},
        )

    async def _whip_delete(self, request: web.Request) -> web.StreamResponse:
        s = self._session(request.match_info["id"])
        await s.aclose("DELETE")
        return web.Response(status=200)

    async def _no_trickle(self, request: web.Request) -> web.StreamResponse:
        raise SignallingError(405, "trickle ICE is not supported: the answer already carries every candidate")

    async def _whep(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/sdp":
            raise SignallingError(400, f"WHEP takes Content-Type application/sdp, got {request.content_type!r}")
        sid = request.match_info.get("id")
        if sid is None:
            if not self.sessions:
                raise SignallingError(404, "no session to play: publish one first (POST /whip or /offer)")
            source = max(self.sessions.values(), key=lambda s: s.created_s)
        else:
            source = self._session(sid)
        if len(self.viewers) >= self.config.server.max_viewers:
            raise SignallingError(
                503, f"the server is at its limit of {self.config.server.max_viewers} viewers (server.max_viewers)"
            )
        offer = _parse_offer(await self._read_text(request))
        viewer = Viewer(self, source)
        self.viewers[viewer.id] = viewer
        try:
            await _negotiate(viewer.pc, offer, viewer.add_tracks)
        except BaseException:
            await viewer.aclose("signalling failed")
            raise
        return web.Response(
            status=201,
            text=viewer.pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whep/{source.id}/{viewer.id}"},
        )

    async def _whep_delete(self, request: web.Request) -> web.StreamResponse:
        viewer = self.viewers.get(request.match_info["viewer"])
        if viewer is None or viewer.source.id != request.match_info["id"]:
            raise SignallingError(404, "no such viewer: it ended or never existed")
        await viewer.aclose("DELETE")
        return web.Response(status=200)

    async def _bridge(self, request: web.Request) -> web.StreamResponse:
        """A dubbing provider's WebSocket (see translate_bridge/protocol.py for the messages)."""
        from translate_bridge.ws import serve_provider

        session = self._session(request.match_info["id"])
        if session.bridge_connected:
            raise SignallingError(409, f"session {session.id} already has a dubbing provider connected")
        ws = web.WebSocketResponse(max_msg_size=2 * self.config.bridge.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        dub = session.start_dub()
        session.bridge_connected = True
        try:
            await serve_provider(ws, dub)
        finally:
            session.bridge_connected = False
            log.info("session %s: dubbing provider disconnected; the mouth rests until it returns", session.id)
        return ws

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "sessions": [s.stats() for s in self.sessions.values()],
                "viewers": len(self.viewers),
                "max_sessions": self.config.server.max_sessions,
            }
        )

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._session(request.match_info["id"]).stats())

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        await self._session(request.match_info["id"]).aclose("DELETE")
        return web.Response(status=204)

    async def aclose(self) -> None:
        for v in list(self.viewers.values()):
            await v.aclose("server shutdown")
        for s in list(self.sessions.values()):
            await s.aclose("server shutdown")

    async def _shutdown(self, _app: web.Application) -> None:
        await self.aclose()

    def close(self) -> None:
        """Stop the shared model worker (after :meth:`aclose`)."""
        with contextlib.suppress(Exception):
            self.worker.close()


def check_port(host: str, port: int) -> None:
    """Refuse, before the model loads, an address that cannot be bound (in use, not ours)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"server.host {host!r} cannot be resolved ({exc.strerror}): use an address such as 127.0.0.1"
        ) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use (another serve?): stop that process or pass "
                    f"--port with a free port"
                ) from None
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pick another --host/--port "
                f"(ports under 1024 need privileges)"
            ) from None


async def serve(config: Config, model: LipSyncModel, token: str = "") -> None:  # pragma: no cover - CLI loop
    """Run until cancelled (Ctrl-C)."""
    server = Server(config, model, token)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        await site.start()
    except OSError as exc:  # taken between check_port and now
        await runner.cleanup()
        server.close()
        raise ConfigError(
            f"cannot listen on {config.server.host}:{config.server.port} ({exc.strerror}): pass a free --port"
        ) from None
    log.info("serving on http://%s:%d/", config.server.host, config.server.port)
    settle_heap()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        server.close()
