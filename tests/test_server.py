"""WebRTC server: aiortc client <-> server in-process over loopback (real ICE, DTLS, SRTP, VP8 and
Opus), signalling security and robustness, WHIP/WHEP, session clean-up."""

from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np
import pytest

from stream.errors import ConfigError
from tests.fakes import MarkerModel
from tests.media import FACE_REGION, face_frames, speech
from tests.rtc import Client, PacedAudio, PacedVideo, Running, server_config, wait_for

RATE = 48000


def talk(seconds_silence: float = 1.5, seconds_speech: float = 2.5) -> np.ndarray:
    """Silence then speech, looped by the track."""
    sp = speech(seconds_speech, RATE)[:, 0]
    return np.concatenate([np.zeros(int(seconds_silence * RATE), np.float32), sp]).astype(np.float32)


def clicked_talk() -> np.ndarray:
    """4 s: silence, a click at 1.6 s, silence, speech (the sync mark for :func:`flashed_frames`)."""
    rng = np.random.default_rng(0)
    click = (0.6 * rng.uniform(-1, 1, int(0.02 * RATE))).astype(np.float32)
    parts = [np.zeros(int(1.6 * RATE), np.float32), click, np.zeros(int(0.18 * RATE), np.float32)]
    parts.append(speech(2.2, RATE)[:, 0])
    return np.concatenate(parts).astype(np.float32)


def flashed_frames(n: int = 100, flash_at: int = 40) -> list[np.ndarray]:
    frames = face_frames(n)
    frames[flash_at] = np.clip(frames[flash_at].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    return frames


def run(coro: object, timeout_s: float = 60.0) -> object:
    async def main() -> object:
        return await asyncio.wait_for(coro, timeout_s)  # type: ignore[arg-type]

    return asyncio.run(main())


def mouth_box(img: np.ndarray) -> np.ndarray:
    """The lower middle of the face region (where the mouth is) in any frame size."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = FACE_REGION
    sx, sy = w / 640, h / 480
    return img[
        int((y0 + 0.62 * (y1 - y0)) * sy) : int(y1 * sy),
        int((x0 + 0.3 * (x1 - x0)) * sx) : int((x1 - 0.3 * (x1 - x0)) * sx),
    ]


def top_box(img: np.ndarray) -> np.ndarray:
    """The top of the frame, far from the mouth."""
    h, w = img.shape[:2]
    return img[: h // 8]


def test_round_trip_video_and_audio_mouth_only_in_sync() -> None:
    async def go() -> None:
        frames = flashed_frames()
        audio = clicked_talk()
        async with Running(server_config(), MarkerModel()) as srv:
            client = Client([PacedVideo(frames), PacedAudio(audio, RATE)])
            status, body = await srv.post_offer(client)
            assert status == 200 and body["type"] == "answer" and body["session"] in srv.server.sessions
            assert await wait_for(lambda: len(client.got.video) >= 250 and len(client.got.audio) >= 500, 30)
            stats = srv.server.sessions[body["session"]].stats()
            await client.close()
        v, a = client.got.video, client.got.audio
        # pts strictly increasing on both returned tracks
        assert all(q[1] > p[1] for p, q in zip(v, v[1:], strict=False))
        assert all(q[1] > p[1] for p, q in zip(a, a[1:], strict=False))
        # the model's effect is in the mouth region only: compare each returned frame with the
        # input frame it came from (found by the top region, which passes through)
        src = [f.astype(np.float32) for f in frames]
        mouth_changed, top_diff = [], []
        for _, _, img, _ in v[25:]:
            img_f = img.astype(np.float32)
            if img.shape != frames[0].shape:
                continue
            k = int(np.argmin([np.abs(top_box(img_f) - top_box(s)).mean() for s in src]))
            top_diff.append(float(np.abs(top_box(img_f) - top_box(src[k])).mean()))
            mouth_changed.append(float(np.abs(mouth_box(img_f) - mouth_box(src[k])).mean()))
        assert len(mouth_changed) > 50
        # VP8 twice at a live bitrate: not bit-exact, but the top of the frame is unchanged and the
        # mouth carries the marker's grey (at rest in silence, following the energy in speech)
        # (measured: top 4.3 grey levels alone on 2 idle cores, up to 6.4 late in a full-suite run,
        # where the sender's VP8 bitrate adapts down; the mouth 64)
        assert np.median(top_diff) < 8.0
        assert np.median(mouth_changed) > 5 * np.median(top_diff)
        assert stats["generated"] > 0 and stats["frames_out"] > 0
        # A/V: the flash (video) and the click (audio) left the client together; they come back
        # within one frame (40 ms) of each other on the server's clock, as its RTCP sender
        # reports map the returned RTP timestamps (what a receiver synchronises playout by)
        flash_t = [t for _, _, img, t in v if t is not None and img.mean() > frames[0].mean() + 45]
        assert flash_t, "no flash frame came back after the first sender report"
        a_t = np.array([t for _, _, _, t in a if t is not None])
        a_rms = np.array([float(np.sqrt(np.mean(x**2))) for _, _, x, t in a if t is not None])
        onsets = a_t[1:][(a_rms[1:] > 0.1) & (a_rms[:-1] < 0.01)]
        offsets = [float(min(onsets - f, key=abs)) for f in flash_t]
        assert offsets and abs(float(np.median(offsets))) < 0.040, offsets

    run(go(), 60)


def test_signalling_rejects_bad_requests_and_keeps_serving() -> None:
    async def go() -> None:
        async with Running(server_config("server.max_body_bytes=4096"), MarkerModel()) as srv:
            s = srv.session
            assert s is not None
            async with s.post(srv.url("/offer"), data="not json") as r:
                assert r.status == 400 and "JSON" in (await r.json())["error"]
            async with s.post(srv.url("/offer"), json={"sdp": "hello", "type": "offer"}) as r:
                assert r.status == 400 and "malformed SDP" in (await r.json())["error"]
            bad = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=garbage\r\n"
            async with s.post(srv.url("/offer"), json={"sdp": bad, "type": "offer"}) as r:
                assert r.status == 400 and "malformed SDP" in (await r.json())["error"]
            async with s.post(
                srv.url("/whip"), data="v=0\n" + "a" * 10000, headers={"Content-Type": "application/sdp"}
            ) as r:
                assert r.status == 400 and "4096 byte limit" in (await r.json())["error"]
            async with s.post(srv.url("/whip"), data="x", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 400 and "application/sdp" in (await r.json())["error"]
            async with s.delete(srv.url("/whip/nope")) as r:
                assert r.status == 404
            assert not srv.server.sessions
            # still serving
            client = Client([PacedVideo(face_frames(10)), PacedAudio(talk(), RATE)])
            status, _ = await srv.post_offer(client)
            assert status == 200
            await client.close()

    run(go())


def test_token_required_when_set() -> None:
    async def go() -> None:
        async with Running(server_config(), MarkerModel(), token="s3cret") as srv:
            s = srv.session
            assert s is not None
            async with s.get(srv.url("/sessions")) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            async with s.get(srv.url("/sessions"), headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401 and "bearer token" in (await r.json())["error"]
            async with s.post(srv.url("/whip"), data="v=0", headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 401
            async with s.get(srv.url("/")) as r:  # the page itself is public; it sends the token
                assert r.status == 200 and "RTCPeerConnection" in await r.text()
            client = Client([PacedVideo(face_frames(10)), PacedAudio(talk(), RATE)])
            status, _ = await srv.post_offer(client, token="s3cret")
            assert status == 200
            async with s.get(srv.url("/sessions"), headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200 and len((await r.json())["sessions"]) == 1
            await client.close()

    run(go())


def test_binding_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="server.token"):
        Running(server_config("server.host=0.0.0.0"), MarkerModel())
    Running(server_config("server.host=0.0.0.0"), MarkerModel(), token="t").server.close()


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_session_limit_and_cleanup_of_vanished_and_deleted_peers() -> None:
    async def go() -> None:
        cfg = server_config("server.max_sessions=2", "server.media_timeout_s=1.5")
        async with Running(cfg, MarkerModel()) as srv:
            tasks_before = len(asyncio.all_tasks())
            a = Client([PacedVideo(face_frames(10)), PacedAudio(talk(), RATE)])
            b_video = PacedVideo(face_frames(10))
            b = Client([b_video, PacedAudio(talk(), RATE)])
            c = Client([PacedVideo(face_frames(10))])
            assert (await srv.post_offer(a))[0] == 200
            st_b, body_b = await srv.post_offer(b)
            assert st_b == 200
            st_c, body_c = await srv.post_offer(c)
            assert st_c == 503 and "limit of 2 sessions" in body_c["error"]
            assert await wait_for(lambda: len(b.got.video) > 10, 20)
            # b vanishes: its media stops without any goodbye
            b_video.stall = True
            b.pc.getTransceivers()[1].sender.track.stall = True  # its audio too
            assert await wait_for(lambda: body_b["session"] not in srv.server.sessions, 10)
            # a ends by DELETE
            sid = next(iter(srv.server.sessions))
            async with srv.session.delete(srv.url(f"/sessions/{sid}")) as r:  # type: ignore[union-attr]
                assert r.status == 204
            assert not srv.server.sessions
            for cl in (a, b, c):
                await cl.close()
            await asyncio.sleep(0.5)
            # no task of the sessions is left (the test's own and aiohttp's are)
            assert len(asyncio.all_tasks()) <= tasks_before + 1, [t.get_name() for t in asyncio.all_tasks()]

    run(go(), 60)


def test_whip_publish_whep_play_and_delete() -> None:
    async def go() -> None:
        async with Running(server_config(), MarkerModel()) as srv:
            pub = Client([PacedVideo(face_frames(25)), PacedAudio(talk(), RATE)])
            pub.pc.getTransceivers()[0].direction = "sendonly"
            pub.pc.getTransceivers()[1].direction = "sendonly"
            status, location, _ = await srv.whip(pub)
            assert status == 201 and location.startswith("/whip/")
            sid = location.rsplit("/", 1)[1]
            player = Client([], recv_only=("video", "audio"))
            status, where, _ = await srv.whip(player, f"/whep/{sid}")
            assert status == 201 and where.startswith(f"/whep/{sid}/")
            assert await wait_for(lambda: len(player.got.video) > 20 and len(player.got.audio) > 20, 20)
            assert len(srv.server.viewers) == 1
            async with srv.session.patch(srv.url(location)) as r:  # type: ignore[union-attr]
                assert r.status == 405
            async with srv.session.delete(srv.url(location)) as r:  # type: ignore[union-attr]
                assert r.status == 200
            assert not srv.server.sessions and not srv.server.viewers  # the player ended with it
            await pub.close()
            await player.close()

    run(go(), 60)


def test_driving_audio_from_another_session() -> None:
    async def go() -> None:
        async with Running(server_config(), MarkerModel()) as srv:
            dub = Client([PacedAudio(speech(4.0, RATE)[:, 0], RATE)])  # a dubbing bridge: audio only
            status, body = await srv.post_offer(dub)
            assert status == 200
            cam = Client([PacedVideo(face_frames(25)), PacedAudio(np.zeros(RATE, np.float32), RATE)])
            status, body2 = await srv.post_offer(cam, audio_from=body["session"])
            assert status == 200
            status, err = await srv.post_offer(Client([PacedVideo(face_frames(5))]), audio_from="nope")
            assert status == 404 and "audio_from" in err["error"]
            assert await wait_for(lambda: len(cam.got.audio) > 100, 20)
            s = srv.server.sessions[body2["session"]]
            # the returned audio is the dub (speech), not the camera's silent microphone
            rms = max(float(np.sqrt(np.mean(x**2))) for _, _, x, _ in cam.got.audio)
            assert rms > 0.05
            assert s.engine.stats.generated > 0
            await dub.close()
            await cam.close()

    run(go(), 60)


def test_tracks_and_threads_are_released() -> None:
    before = _threads()

    async def go() -> None:
        async with Running(server_config(), MarkerModel()) as srv:
            client = Client([PacedVideo(face_frames(10)), PacedAudio(talk(), RATE)])
            assert (await srv.post_offer(client))[0] == 200
            assert await wait_for(lambda: len(client.got.video) > 5, 20)
            await client.close()
            assert await wait_for(lambda: not srv.server.sessions, 10)

    run(go())
    gc.collect()
    left = {n for n in _threads() - before if not n.startswith(("asyncio_", "ThreadPoolExecutor"))}
    assert not left, left


async def _measure(n_sessions: int, seconds: float) -> list[dict]:
    """Serve ``n_sessions`` clients running in a second process (as they would on other machines)
    for ``seconds``; per-session output rate, sampled every second."""
    import subprocess
    import sys

    cfg = server_config(f"server.max_sessions={n_sessions}")
    async with Running(cfg, MarkerModel()) as srv:
        url = srv.url("/").rstrip("/")
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.rtc", url, str(n_sessions), str(seconds + 4.0), stdout=subprocess.PIPE
            )
        ]
        try:
            assert await wait_for(lambda: len(srv.server.sessions) == n_sessions, 20), list(srv.server.ended)
            await asyncio.sleep(3.0)  # connect and fill the playout delay
            ids = list(srv.server.sessions)
            loop = asyncio.get_running_loop()
            start = {i: srv.server.sessions[i].engine.stats.frames_out for i in ids}
            series: dict[str, list[int]] = {i: [] for i in ids}
            t0 = loop.time()
            while loop.time() - t0 < seconds:
                await asyncio.sleep(1.0)
                assert all(i in srv.server.sessions for i in ids), list(srv.server.ended)
                for i in ids:
                    series[i].append(srv.server.sessions[i].engine.stats.frames_out)
            elapsed = loop.time() - t0
            out = []
            for i in ids:
                s = srv.server.sessions[i].engine.stats
                per_s = np.diff([start[i], *series[i]])
                out.append(
                    {
                        "fps": (s.frames_out - start[i]) / elapsed,
                        "min_fps_1s": float(per_s.min()),
                        "degrade_level": s.degrade_level,
                        "late": s.late,
                    }
                )
            for proc in procs:
                await proc.communicate()
                assert proc.returncode == 0
        finally:
            for proc in procs:
                if proc.returncode is None:  # a failed assertion must not leave the clients running
                    proc.kill()
                    await proc.wait()
    return out


@pytest.mark.slow
def test_five_sessions_for_a_minute_keep_their_rate_or_degrade() -> None:
    """5 concurrent sessions for 60 s on this machine: each keeps its frame rate within 20 % of a
    single session's, or the degrade ladder stepped in; none stalls (a frame every second).

    Marked slow and left out of the default run (``python -m pytest -m slow`` runs it): here the
    server and all five clients share 2 cores, and when they saturate them the clients' or the
    server's ICE consent checks (0.5 s, RFC 7675) can time out and end a session; in its current form it passed
    3 of 4 runs on an idle machine (the failure was in CI). BENCHMARKS.md has the measured figures."""

    async def go() -> tuple[list[dict], list[dict]]:
        one = await _measure(1, 8.0)
        five = await _measure(5, 60.0)
        return one, five

    one, five = run(go(), 150)  # type: ignore[misc]
    base = one[0]["fps"]
    assert base > 20, one
    for s in five:
        assert s["min_fps_1s"] > 0, s  # never stalled
        assert s["fps"] >= 0.8 * base or s["degrade_level"] > 0, (s, base)


def test_a_model_that_cannot_keep_up_is_reported_and_the_ladder_climbs_back_when_load_drops(caplog) -> None:  # noqa: ANN001
    """The degrade ladder keeps the stream alive when the model is too slow; the stats and the
    log say plainly that the model is not keeping up, and when it is fast again every rung is
    climbed back."""
    import logging
    import time

    class SlowMarker(MarkerModel):
        delay_s = 0.6  # one 8-frame chunk (320 ms of video) takes 600 ms: cannot keep up

        def generate(self, chunk, reference, steps):  # noqa: ANN001, ANN201
            time.sleep(self.delay_s)
            return super().generate(chunk, reference, steps)

    model = SlowMarker()

    async def go() -> None:
        cfg = server_config("playout.recover_after_frames=10")
        async with Running(cfg, model) as srv:
            client = Client([PacedVideo(face_frames(100)), PacedAudio(speech(4.0, RATE)[:, 0], RATE)])
            status, body = await srv.post_offer(client)
            assert status == 200
            sess = srv.server.sessions[body["session"]]
            assert await wait_for(lambda: sess.stats()["degrade_level"] > 0, 20)
            s = sess.stats()
            assert s["keeping_up"] is False and "model NOT keeping up" in s["status"], s
            assert s["status"].endswith(f"degrade level {s['degrade_level']} ({s['degrade_rung']})")
            assert await wait_for(lambda: any("model NOT keeping up" in r.getMessage() for r in caplog.records), 15)
            model.delay_s = 0.0  # the load drops
            assert await wait_for(lambda: sess.stats()["degrade_level"] == 0, 30), sess.stats()
            assert await wait_for(lambda: sess.stats()["keeping_up"], 15), sess.stats()
            gen0 = sess.stats()["generated"]
            assert await wait_for(lambda: sess.stats()["generated"] > gen0 + 25, 10)
            await client.close()

    with caplog.at_level(logging.WARNING, logger="stream.server"):
        run(go(), 120)


def test_serve_cli_refuses_an_open_bind_without_a_token(capsys, monkeypatch) -> None:  # noqa: ANN001
    from stream.cli import main

    monkeypatch.delenv("SAYANYTHING_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.token" in err[0] and "127.0.0.1" in err[0]


def test_serve_cli_on_a_port_in_use_is_one_line_before_the_model_loads(capsys, monkeypatch) -> None:  # noqa: ANN001
    import socket

    from stream import cli

    def refuse(cfg: object) -> None:
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(cli, "_model", refuse)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"port {port} on 127.0.0.1 is already in use" in err[0] and "--port" in err[0], err


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_sessions_opened_and_rejected_release_their_threads_and_memory() -> None:
    """Every session, accepted then deleted or rejected in signalling (400), releases its face
    detector and its threads: 50 of them leave the thread count and RSS within a small bound."""

    async def go() -> tuple[int, int, float, float]:
        async with Running(server_config("server.max_sessions=2"), MarkerModel()) as srv:
            assert srv.session is not None

            async def one(i: int) -> None:
                client = Client([PacedVideo(face_frames(5))])
                sdp = await client.offer_sdp()
                if i % 2:  # an offer that parses but cannot be negotiated (no ICE credentials)
                    sdp = "\r\n".join(ln for ln in sdp.split("\r\n") if not ln.startswith("a=ice-"))
                async with srv.session.post(srv.url("/offer"), json={"sdp": sdp, "type": "offer"}) as r:
                    body = await r.json()
                    assert r.status == (400 if i % 2 else 200), body
                if not i % 2:
                    async with srv.session.delete(srv.url(f"/sessions/{body['session']}")) as r:
                        assert r.status in (200, 204)
                await client.close()

            for i in range(6):  # warm-up: first-use allocations
                await one(i)
            gc.collect()
            threads0, rss0 = threading.active_count(), _rss_mb()
            for i in range(50):
                await one(i)
            assert await wait_for(lambda: not srv.server.sessions, 10)
            await asyncio.sleep(0.5)
            gc.collect()
            return threads0, threading.active_count(), rss0, _rss_mb()

    t0, t1, r0, r1 = run(go(), 120)  # type: ignore[misc]
    assert t1 <= t0 + 2, (t0, t1)
    assert r1 - r0 < 60, (r0, r1)


async def _raw_post(
    port: int, path: str, head: dict[str, str], parts: list[bytes], gap_s: float = 0.02
) -> tuple[int, dict]:
    """POST over a raw socket, writing the body in separate TCP writes ``gap_s`` apart."""
    import json as _json

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    for p in parts:
        await asyncio.sleep(gap_s)
        writer.write(p)
        await writer.drain()
    raw = await reader.read()
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    header_end = raw.index(b"\r\n\r\n") + 4
    body = raw[header_end:]
    if b"chunked" in raw[:header_end].lower():
        out, rest = b"", body
        while rest:
            size_line, rest = rest.split(b"\r\n", 1)
            n = int(size_line, 16)
            if not n:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return status, _json.loads(body) if body.strip() else {}


def _chunked(data: bytes, n: int) -> list[bytes]:
    step = max(1, len(data) // n)
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]


def test_a_body_in_several_tcp_writes_or_chunks_is_read_whole_and_the_limit_holds_for_chunked() -> None:
    import json as _json

    async def go() -> None:
        async with Running(server_config("server.max_sessions=4"), MarkerModel()) as srv:
            port = srv.http.port
            assert port is not None
            for mode in ("content-length", "chunked"):
                client = Client([PacedVideo(face_frames(5))])
                body = _json.dumps({"sdp": await client.offer_sdp(), "type": "offer"}).encode()
                head = {"Content-Type": "application/json"}
                if mode == "chunked":
                    head["Transfer-Encoding"] = "chunked"
                    parts = _chunked(body, 2)
                else:
                    head["Content-Length"] = str(len(body))
                    parts = [body[: len(body) // 2], body[len(body) // 2 :]]
                status, reply = await _raw_post(port, "/offer", head, parts)
                assert status == 200, (mode, reply)
                await client.accept(reply["sdp"])
                await client.close()
                async with srv.session.delete(srv.url(f"/sessions/{reply['session']}")) as r:  # type: ignore[union-attr]
                    assert r.status == 204
            # a 10 MB chunked body (no Content-Length) gets the size-limit message, not a JSON error
            big = b'{"sdp": "' + b"a" * 10_000_000 + b'", "type": "offer"}'
            head = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            status, reply = await _raw_post(port, "/offer", head, _chunked(big, 40), gap_s=0.0)
            assert status == 400 and "byte limit (server.max_body_bytes)" in reply["error"], reply

    run(go(), 90)


def test_fuzzed_signalling_gets_4xx_and_the_server_keeps_answering() -> None:
    """Random and mutated SDP, JSON and headers against every signalling route (bounded count):
    every answer is a 4xx with a JSON error (never a 5xx or a dropped connection) and ``GET /``
    still answers afterwards."""
    import json as _json
    import random

    rng = random.Random(1234)

    async def go() -> None:
        async with Running(server_config("server.max_sessions=2", "server.max_body_bytes=65536"), MarkerModel()) as srv:
            s = srv.session
            assert s is not None
            good = await Client([PacedVideo(face_frames(5))]).offer_sdp()
            lines = good.split("\r\n")

            def mutated_sdp() -> str:
                ls = list(lines)
                for _ in range(rng.randint(1, 6)):
                    if not ls:
                        break
                    op = rng.randrange(5)
                    i = rng.randrange(len(ls))
                    if op == 0:
                        del ls[i]
                    elif op == 1:
                        ls[i] = ls[i][: rng.randrange(len(ls[i]) + 1)]
                    elif op == 2:
                        ls.insert(
                            i,
                            rng.choice(
                                [
                                    "m=video 9 X 96",
                                    "a=rtpmap:96 ",
                                    "c=IN IP9 ::",
                                    "a=ice-ufrag:",
                                    "b=AS:-1",
                                    "m=",
                                    "a=fingerprint:sha-256 zz",
                                ]
                            ),
                        )
                    elif op == 3:
                        ls[i] = "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 40)))
                    else:
                        ls = ls[:i]
                return "\r\n".join(ls)

            def random_json() -> bytes:
                choices = [
                    lambda: {"sdp": mutated_sdp(), "type": rng.choice(["offer", "answer", "", None, 7])},
                    lambda: {"sdp": rng.choice([None, 1, [], {}, ""]), "type": "offer"},
                    lambda: [mutated_sdp()],
                    lambda: {"sdp": mutated_sdp(), "type": "offer", "audio_from": rng.choice(["nope", 3, None, ""])},
                    lambda: rng.choice([None, 1.5, "x", True]),
                ]
                text = _json.dumps(rng.choice(choices)())
                if rng.random() < 0.3:  # mutate the JSON text itself
                    i = rng.randrange(len(text))
                    text = text[:i] + rng.choice(['"', "{", "]", "\\", "\x00", ""]) + text[i + 1 :]
                return text.encode("utf-8", "surrogatepass")

            def random_bytes() -> bytes:
                return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))

            routes = [
                ("POST", "/offer", "application/json", random_json),
                ("POST", "/offer", "application/json", random_bytes),
                ("POST", "/whip", "application/sdp", lambda: mutated_sdp().encode()),
                ("POST", "/whip", "application/sdp", random_bytes),
                ("POST", "/whep/nope", "application/sdp", lambda: mutated_sdp().encode()),
                ("GET", "/bridge/nope", None, lambda: b""),
                ("PUT", "/offer", "application/json", random_json),
                ("POST", "/no/such/route", "application/json", random_json),
                ("PATCH", "/whip/nope", "application/trickle-ice-sdpfrag", random_bytes),
                ("GET", "/sessions/nope", None, lambda: b""),
                ("DELETE", "/sessions/nope", None, lambda: b""),
                ("DELETE", "/whip/nope", None, lambda: b""),
            ]
            bad_headers = [
                {},
                {
                    "Content-Type": rng.choice(
                        [
                            "",
                            "text/plain",
                            "application/sdp; charset=latin-1",
                            'x/y;;="',
                            "application/json; boundary=\u00e9",
                        ]
                    )
                },
                {"Authorization": "Bearer " + "x" * 50},
            ]
            statuses: dict[int, int] = {}
            for _ in range(150):
                method, path, ctype, make = rng.choice(routes)
                headers = dict(rng.choice(bad_headers))
                if ctype and "Content-Type" not in headers and rng.random() < 0.8:
                    headers["Content-Type"] = ctype
                async with s.request(method, srv.url(path), data=make(), headers=headers) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    assert 400 <= r.status < 500 or r.status in (200, 201), (method, path, r.status, await r.text())
                    if r.status >= 400:
                        body = await r.json(content_type=None)
                        assert isinstance(body.get("error"), str) and body["error"], body
                    else:  # a mutation that left the offer valid: close it again
                        if r.status == 200:
                            sid = (await r.json(content_type=None))["session"]
                        else:
                            sid = r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
                        async with s.delete(srv.url(f"/sessions/{sid}")) as d:
                            assert d.status == 204
            assert sum(v for k, v in statuses.items() if k >= 400) >= 100, statuses
            async with s.get(srv.url("/")) as r:
                assert r.status == 200 and "<html" in (await r.text()).lower()
            assert await wait_for(lambda: not srv.server.sessions, 10)

    run(go(), 240)
