"""WebRTC test parts: an aiortc client that publishes paced frames (the fake camera and
microphone at the outermost boundary) and records what comes back, plus a server runner.

Everything stays on loopback: no STUN server, ICE host candidates limited to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.config import Config, load
from stream.server import Server
from stream.sources.webrtc import PeerTimeline, watch_sender_reports

LOOPBACK = ["server.ice_host_addresses=127.0.0.1"]


def server_config(*overrides: str) -> Config:
    # the marker model's own grey in the mouth (what the tests read), not the input's mouth that
    # model.texture = "auto" chooses for a model that does not draw the face
    return load(None, [*LOOPBACK, "playout.delay_ms=600", "model.texture=model", *overrides])


class _Paced(MediaStreamTrack):
    """Hands out its i-th item at t0 + i * period on the wall clock; ``stall`` stops output."""

    def __init__(self) -> None:
        super().__init__()
        self.i = 0
        self.t0: float | None = None
        self.stall = False

    async def _wait_turn(self, period_s: float) -> None:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        while self.stall:
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, self.t0 + self.i * period_s - time.monotonic()))


class PacedVideo(_Paced):
    """Frames from a list at ``fps``, looping."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: int = 25) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.sent_at: list[float] = []

    async def recv(self) -> av.VideoFrame:
        await self._wait_turn(1 / self.fps)
        img = self.frames[self.i % len(self.frames)]
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.i * (90000 // self.fps)
        frame.time_base = Fraction(1, 90000)
        self.sent_at.append(time.monotonic())
        self.i += 1
        return frame


class PacedAudio(_Paced):
    """Mono float samples at ``rate`` in 20 ms s16 blocks, looping."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, rate: int = 48000) -> None:
        super().__init__()
        self.samples = samples
        self.rate = rate
        self.block = rate // 50

    async def recv(self) -> av.AudioFrame:
        await self._wait_turn(self.block / self.rate)
        start = (self.i * self.block) % len(self.samples)
        chunk = np.take(self.samples, np.arange(start, start + self.block), mode="wrap")
        pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.i * self.block
        frame.time_base = Fraction(1, self.rate)
        self.i += 1
        return frame


@dataclass
class Received:
    """What came back. Each item: (arrival, pts, data, sender_s) where sender_s is the frame's
    time on the server's clock from its RTCP sender reports (None before the first report): what
    a receiver lines audio and video up by."""

    video: list[tuple[float, int, np.ndarray, float | None]] = field(default_factory=list)
    audio: list[tuple[float, int, np.ndarray, float | None]] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    timeline: PeerTimeline = field(default_factory=lambda: PeerTimeline(0.0))


async def _record(track: Any, out: list, kind: str, timeline: PeerTimeline) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.monotonic()
        sender = timeline.sender_time(kind, int(frame.pts), 1 / float(frame.time_base))
        if kind == "video":
            out.append((now, frame.pts, frame.to_ndarray(format="rgb24"), sender))
        else:
            arr = frame.to_ndarray().astype(np.float32) / 32768.0
            ch = len(frame.layout.channels)
            mono = arr.reshape(-1, ch).mean(axis=1) if not frame.format.is_planar else arr[0]
            out.append((now, frame.pts, mono, sender))


class Client:
    """An aiortc peer: sends the given tracks (``send``), receives what the server returns."""

    def __init__(self, tracks: list[MediaStreamTrack], recv_only: tuple[str, ...] = ()) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.got = Received()
        for t in tracks:
            self.pc.addTransceiver(t, direction="sendrecv")
        for kind in recv_only:
            self.pc.addTransceiver(kind, direction="recvonly")
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        target = self.got.video if track.kind == "video" else self.got.audio
        for tr in self.pc.getTransceivers():
            if tr.receiver.track is track:
                watch_sender_reports(tr.receiver, track.kind, self.got.timeline)
        task = _record(track, target, track.kind, self.got.timeline)
        self.got.tasks.append(asyncio.get_running_loop().create_task(task))

    async def offer_sdp(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def close(self) -> None:
        await self.pc.close()
        for t in self.got.tasks:
            t.cancel()
        await asyncio.gather(*self.got.tasks, return_exceptions=True)


class Running:
    """A :class:`Server` on an aiohttp test server (127.0.0.1, free port) and an HTTP client."""

    def __init__(self, config: Config, model: Any, token: str = "") -> None:
        self.server = Server(config, model, token)
        self.http: TestServer = TestServer(self.server.app(), host="127.0.0.1")
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Running:
        await self.http.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()
        await self.server.aclose()
        await self.http.close()
        self.server.close()

    def url(self, path: str) -> str:
        return str(self.http.make_url(path))

    async def post_offer(self, client: Client, token: str = "", **extra: Any) -> tuple[int, dict]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"sdp": await client.offer_sdp(), "type": "offer", **extra}
        async with self.session.post(self.url("/offer"), json=body, headers=headers) as r:
            data = await r.json()
            if r.status == 200:
                await client.accept(data["sdp"])
            return r.status, data

    async def whip(self, client: Client, path: str = "/whip", token: str = "") -> tuple[int, str, str]:
        """POST an SDP offer to a WHIP/WHEP endpoint; returns (status, Location, body)."""
        assert self.session is not None
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.url(path), data=await client.offer_sdp(), headers=headers) as r:
            text = await r.text()
            if r.status == 201:
                await client.accept(text)
            return r.status, r.headers.get("Location", ""), text


async def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())


async def run_clients(url: str, n: int, seconds: float, size: tuple[int, int] = (320, 240)) -> dict:
    """``n`` publishing clients against the server at ``url`` for ``seconds``; what they got back."""
    import aiohttp

    from tests.media import face_frames, resize, speech

    frames = [resize(f, *size) for f in face_frames(50)]
    audio = np.concatenate([np.zeros(int(1.5 * 48000), np.float32), speech(2.5, 48000)[:, 0]])
    clients = [Client([PacedVideo(frames), PacedAudio(audio, 48000)]) for _ in range(n)]
    ids = []
    async with aiohttp.ClientSession() as http:
        for c in clients:
            body = {"sdp": await c.offer_sdp(), "type": "offer"}
            async with http.post(url + "/offer", json=body) as r:
                data = await r.json()
                if r.status != 200:
                    return {"error": data.get("error", str(r.status))}
                await c.accept(data["sdp"])
                ids.append(data["session"])
    await asyncio.sleep(seconds)
    out = {"sessions": ids, "received_video": [len(c.got.video) for c in clients]}
    for c in clients:
        await c.close()
    return out


if __name__ == "__main__":  # python -m tests.rtc URL N SECONDS: a load of N clients in its own process
    import json
    import sys

    print(json.dumps(asyncio.run(run_clients(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))))
