"""translate_bridge: duration policy, provider protocol (Python and WebSocket), end to end."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import av
import numpy as np
import pytest

from stream.config import load
from tests.fakes import MarkerModel
from tests.media import SAMPLE_FACE, face_frames, speech
from translate_bridge.align import AlignConfig, Aligner, stretch
from translate_bridge.bridge import RATE_HZ, dub_track
from translate_bridge.protocol import (
    Assembler,
    Cancel,
    EndOfStream,
    Final,
    Limits,
    ProtocolError,
    Segment,
    encode,
    parse,
)

R = 16000


def seg(sid: str, start: float, end: float, dur: float, text: str = "", final: bool = True) -> Segment:
    t = np.arange(round(dur * R)) / R
    audio = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)[:, None]
    return Segment(sid, start, end, audio, R, text, final)


# -- duration policy --------------------------------------------------------------------
def test_a_dub_that_fits_plays_at_its_anchor_and_gaps_rest() -> None:
    al = Aligner(AlignConfig())
    a = al.place(seg("a", 1.0, 3.0, 1.5))
    b = al.place(seg("b", 5.0, 6.0, 0.8))
    assert a is not None and b is not None
    assert a.start_s == 1.0 and a.speed == 1.0 and a.lag_s == 0.0
    assert b.start_s == 5.0  # the gap 2.5-5.0 s has no audio: the mouth rests there
    track, rep = dub_track([seg("a", 1.0, 3.0, 1.5), seg("b", 5.0, 6.0, 0.8)], 7.0, Aligner(AlignConfig()), R)
    assert np.abs(track[round(2.6 * R) : round(4.9 * R)]).max() == 0.0
    assert np.abs(track[round(1.1 * R) : round(2.4 * R)]).max() > 0.2


def test_an_overrunning_dub_is_sped_up_within_bounds_with_its_pitch() -> None:
    al = Aligner(AlignConfig(max_speed=1.25, tail_s=0.0))
    p = al.place(seg("a", 0.0, 2.0, 2.4))  # 20 % too long: sped up 1.2x
    assert p is not None and p.speed == pytest.approx(1.2, abs=0.01)
    assert p.end_s == pytest.approx(2.0, abs=0.03)
    q = al.place(seg("b", 2.0, 4.0, 3.0))  # 50 % too long: only 1.25x, the rest runs over
    assert q is not None and q.speed == pytest.approx(1.25) and q.end_s > 4.0
    spec = np.abs(np.fft.rfft(p.audio[:R]))
    assert abs(int(np.argmax(spec)) - 180) <= 2  # 180 Hz stays 180 Hz
    assert stretch(np.ones(0, np.float32), R, 1.2).size == 0


def test_long_drift_is_cut_so_the_delay_stays_bounded() -> None:
    al = Aligner(AlignConfig(max_speed=1.25, tail_s=0.25, max_lag_s=1.0))
    p = al.place(seg("a", 0.0, 2.0, 6.0))  # far too long: sped up, then cut at 2.0 + 1.0
    assert p is not None and p.end_s == pytest.approx(3.0, abs=0.01) and p.cut_s > 1.5
    assert abs(p.audio[-1]) < 1e-3  # faded, no click
    q = al.place(seg("b", 2.2, 4.0, 1.0))  # the next sentence starts late by <= max_lag
    assert q is not None and q.lag_s == pytest.approx(0.8, abs=0.01)
    late = al.place(seg("c", 0.5, 1.0, 0.5))  # out of order and already past its bound: dropped
    assert late is None and al.dropped == ["c"]


def test_ten_minute_talk_with_dubs_30_percent_longer_keeps_the_delay_bounded() -> None:
    rng = np.random.default_rng(7)
    cfg = AlignConfig(max_speed=1.25, tail_s=0.25, max_lag_s=1.5)
    al = Aligner(cfg)
    t, lags, speeds, placed, src_total = 0.5, [], [], 0, 0.0
    while t < 600.0:
        d = float(rng.uniform(1.5, 6.0))  # a sentence of source speech
        p = al.place(seg(f"s{placed}", t, t + d, 1.3 * d))
        assert p is not None
        lags.append(p.lag_s)
        speeds.append(p.speed)
        placed += 1
        src_total += d
        t += d + float(rng.uniform(0.15, 1.2))  # the pause before the next sentence
    assert placed > 100
    assert max(lags) <= cfg.max_lag_s + 1e-6  # bounded
    assert np.mean(lags[-20:]) < 1.0  # and not creeping up at the end of the talk
    assert max(speeds) <= cfg.max_speed + 1e-9 and min(speeds) >= 1.0
    assert al.cut_total_s < 0.05 * 1.3 * src_total  # almost nothing had to be cut


# -- protocol ---------------------------------------------------------------------------
def test_protocol_round_trip_and_clear_errors() -> None:
    s = seg("x", 1.2, 3.4, 0.5, "hola")
    back = parse(encode(s))
    assert isinstance(back, Segment) and back.id == "x" and back.text == "hola"
    assert back.source_start_s == pytest.approx(1.2) and back.audio.shape == s.audio.shape
    assert np.abs(back.audio - s.audio).max() < 1e-4
    assert parse(encode(Cancel("x"))) == Cancel("x") and isinstance(parse('{"type": "end"}'), EndOfStream)
    good = json.loads(encode(s))
    bad = [
        ("{not json", "not JSON"),
        ('{"type": "dance"}', "unknown message type"),
        (json.dumps({**good, "audio_b64": "!!!"}), "not base64"),
        (json.dumps({k: v for k, v in good.items() if k != "source_end_ms"}), "lacks 'source_end_ms'"),
        (json.dumps({**good, "source_end_ms": 100, "source_start_ms": 200}), "empty or negative"),
        (json.dumps({**good, "sample_rate_hz": 100}), "sample_rate_hz"),
        (json.dumps({**good, "audio_b64": base64.b64encode(b"abc").decode()}), "whole 16-bit frames"),
    ]
    for text, needle in bad:
        with pytest.raises(ProtocolError, match=needle):
            parse(text)
    with pytest.raises(ProtocolError, match="byte limit"):
        parse(encode(s), Limits(max_message_bytes=1000))
    with pytest.raises(ProtocolError, match="over 0.2 s"):
        parse(encode(s), Limits(max_segment_s=0.2))


def test_assembler_parts_final_cancel() -> None:
    asm = Assembler(Limits(max_segment_s=1.0))
    assert asm.feed(seg("a", 0, 1, 0.3, "ho", final=False)) == []
    done = asm.feed(seg("a", 0, 1, 0.3, "la", final=True))
    assert len(done) == 1 and done[0].duration_s == pytest.approx(0.6) and done[0].text == "hola"
    with pytest.raises(ProtocolError, match="already ended"):
        asm.feed(seg("a", 0, 1, 0.1))
    asm.feed(seg("b", 1, 2, 0.2, final=False))
    assert asm.feed(Cancel("b")) == [] and asm.cancelled == ["b"]
    with pytest.raises(ProtocolError, match="not open"):
        asm.feed(Final("b"))
    asm.feed(seg("c", 2, 3, 0.7, final=False))
    with pytest.raises(ProtocolError, match="over 1 s"):
        asm.feed(seg("c", 2, 3, 0.7, final=False))
    asm.feed(seg("d", 3, 4, 0.2, final=False))
    assert [s.id for s in asm.feed(EndOfStream())] == ["d"]


# -- WebSocket provider on a live WebRTC session ----------------------------------------
def test_websocket_provider_drives_a_live_session() -> None:
    from tests.rtc import Client, PacedAudio, PacedVideo, Running, server_config, wait_for

    rate = 48000
    original = speech(4.0, rate)[:, 0]  # the speaker talks all the time

    async def go() -> None:
        cfg = server_config("playout.delay_ms=1200", "bridge.max_message_bytes=200000")
        async with Running(cfg, MarkerModel()) as srv:
            client = Client([PacedVideo(face_frames(25)), PacedAudio(original, rate)])
            status, body = await srv.post_offer(client)
            assert status == 200
            sid = body["session"]
            session = srv.server.sessions[sid]
            assert srv.session is not None
            async with srv.session.ws_connect(srv.url(f"/bridge/{sid}")) as ws:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # one provider at a time
                    await srv.session.ws_connect(srv.url(f"/bridge/{sid}"))
                assert refused.value.status == 409
                now = session.clock.now() - session.origin_s
                t0 = now + 0.2  # source time just ahead
                await ws.send_str("{oops")
                assert "not JSON" in (await ws.receive_json())["message"]
                big = seg("big", t0, t0 + 1, 8.0)  # over the 200 kB message limit
                await ws.send_str(encode(big))
                assert "byte limit" in (await ws.receive_json())["message"]
                await ws.send_str(encode(seg("s2", t0 + 1.0, t0 + 1.6, 0.5)))  # out of order: second first
                r2 = await ws.receive_json()
                await ws.send_str(encode(seg("s1", t0, t0 + 0.9, 0.7)))
                r1 = await ws.receive_json()
                await ws.send_str(encode(seg("s3", t0 + 1.2, t0 + 2.0, 0.6)))  # overlaps s2
                r3 = await ws.receive_json()
                assert r2["type"] == r1["type"] == r3["type"] == "ack"
                assert r3["start_ms"] >= r2["start_ms"] + 500 - 1  # waits for s2 to end: no overlap
                await ws.send_str(encode(seg("s4", t0 + 2.5, t0 + 3.0, 0.4, final=False)))
                await ws.receive_json()
                await ws.send_str(encode(Cancel("s4")))
                assert (await ws.receive_json())["type"] == "ack"
            # the provider is gone: the session keeps running, the mouth rests
            n = len(client.got.video)
            assert await wait_for(lambda: len(client.got.video) > n + 125, 15)  # the dubs have played out
            stats = session.stats()
            assert sid in srv.server.sessions and stats["dub"]["segments"] == 3 and not stats["dub"]["connected"]
            await client.close()
        # the dubs came back, and the original speech (continuous) is never heard once the
        # provider connected: after the dubs, silence
        rms = [float(np.sqrt(np.mean(x**2))) for _, _, x, _ in client.got.audio]
        assert max(rms[-40:]) < 0.01, rms[-40:]
        assert sum(r > 0.1 for r in rms) > 50  # the 180 Hz dubs (1.8 s in all)

    asyncio.run(asyncio.wait_for(go(), 60))


# -- end to end: subtitles -> eSpeak NG dub of a clip -------------------------------------
def test_srt_dub_of_a_clip_end_to_end(tmp_path) -> None:  # noqa: ANN001
    from stream.filejob import run_file
    from translate_bridge.providers.subtitles import parse_subtitles, segments

    srt = tmp_path / "es.srt"
    srt.write_text(
        "1\n00:00:00,400 --> 00:00:01,800\nHola a todos.\n\n2\n00:00:03,200 --> 00:00:04,400\nGracias.\n",
        encoding="utf-8",
    )
    cues = parse_subtitles(str(srt))
    assert [c.text for c in cues] == ["Hola a todos.", "Gracias."]
    segs = segments(cues, "es")
    track, report = dub_track(segs, 5.0, Aligner(AlignConfig()))
    assert len(report.placements) == 2 and report.max_lag_s <= 1.5
    out = str(tmp_path / "dub.mp4")
    # the marker's own grey, not the photo's mouth that model.texture = "auto" would choose for it
    cfg = load(None, ["playout.delay_ms=600", "model.texture=model"])
    res = run_file(SAMPLE_FACE, (track[:, None], RATE_HZ), out, cfg, MarkerModel(), video_mode="hold")
    # duration as documented: max(video, end of the last dub); the clip is longer here
    end = max(5.0, max(p.end_s for p in report.placements))
    assert res.duration_s == pytest.approx(end, abs=0.03)
    with av.open(out) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE_HZ)
        got = np.concatenate([f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)])
    # the output audio is the dubbed speech (AAC-coded), aligned
    n = min(got.size, track.size)
    assert float(np.corrcoef(got[:n], track[:n])[0, 1]) > 0.9
    # the mouth moves with the dub and rests in the gap between cues
    s = res.session
    assert s["generated"] > 10 and s["rest"] > 10
    gap = (report.placements[0].end_s + 0.4, report.placements[1].start_s - 0.2)
    with av.open(out) as c:
        levels = [
            (float(fr.time), float(fr.to_ndarray(format="gray")[280:330, 290:360].mean())) for fr in c.decode(video=0)
        ]
    in_gap = [v for t, v in levels if gap[0] < t < gap[1]]
    in_dub = [v for t, v in levels if report.placements[0].start_s + 0.2 < t < report.placements[0].end_s - 0.1]
    assert np.ptp(in_gap) < 8.0 and np.ptp(in_dub) > 20.0, (np.ptp(in_gap), np.ptp(in_dub))
