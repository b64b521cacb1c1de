"""Soak: one WebRTC session against the server for 10 minutes (``--minutes N``), with the
configured model (default: the shipped tiny model), over loopback on this machine.

    python benchmarks/soak.py [--minutes 10] [--set model.name=tiny] [--write BENCHMARKS.md]

The server runs in this process; one aiortc client (its own process, on the same cores)
publishes a 320x240 face clip at 25 fps with silence and speech, looping every 4 s, with a
flash in the video and a click in the audio at the same media time in each loop.

Every 10 s: the server's RSS, output fps, late / pass-through / generated frames so far, and
the degrade level. At the end:
- the longest gap between two frames the server emitted (a stall), and between two frames
  the client received;
- A/V offset of each flash/click pair as the client sees them on the server's clock (RTCP
  sender reports map RTP timestamps, as a receiver lines up playout), and the drift: the
  median offset of the last minute minus that of the first;
- RSS growth after the first minute;
- the client is then killed without closing (SIGKILL): the time until the server reaps the
  session (``server.media_timeout_s``).
Writes ``benchmarks/results/soak.json`` and ``soak.png``. Targets (issue 14): no stall
> 200 ms, drift <= 20 ms, RSS growth < 50 MB after the first minute.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")
RATE = 48000
LOOP_FRAMES = 100  # 4 s at 25 fps
FLASH_AT = 40  # frame 40 = 1.6 s, where the click is


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the client (its own process) ------------------------------------------------------------
def _media() -> tuple[list[np.ndarray], np.ndarray]:
    from tests.media import face_frames, resize, speech

    frames = [resize(f, 320, 240) for f in face_frames(LOOP_FRAMES)]
    frames[FLASH_AT] = np.clip(frames[FLASH_AT].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    click = (0.6 * rng.uniform(-1, 1, int(0.02 * RATE))).astype(np.float32)
    audio = np.concatenate(
        [np.zeros(int(1.6 * RATE), np.float32), click, np.zeros(int(0.38 * RATE), np.float32), speech(2.0, RATE)[:, 0]]
    )
    return frames, audio[: 4 * RATE].astype(np.float32)


async def _client(url: str, seconds: float, out_path: str) -> None:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from stream.sources.webrtc import PeerTimeline, watch_sender_reports
    from tests.rtc import PacedAudio, PacedVideo

    frames, audio = _media()
    base = float(np.mean(frames[0]))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(PacedVideo(frames), direction="sendrecv")
    pc.addTransceiver(PacedAudio(audio, RATE), direction="sendrecv")
    timeline = PeerTimeline(0.0)
    video: list[tuple[float, float | None, bool]] = []  # (arrival, sender s, flash)
    audio_rx: list[tuple[float | None, float]] = []  # (sender s, rms)
    tasks = []

    async def record(track: Any) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            sender = timeline.sender_time(track.kind, int(f.pts), 1 / float(f.time_base))
            if track.kind == "video":
                img = f.to_ndarray(format="gray")
                video.append((time.monotonic(), sender, float(img.mean()) > base + 45))
            else:
                x = f.to_ndarray().astype(np.float32) / 32768.0
                audio_rx.append((sender, float(np.sqrt(np.mean(x**2)))))

    @pc.on("track")
    def on_track(track: Any) -> None:
        for tr in pc.getTransceivers():
            if tr.receiver.track is track:
                watch_sender_reports(tr.receiver, track.kind, timeline)
        tasks.append(asyncio.get_running_loop().create_task(record(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            data = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
    await asyncio.sleep(seconds)
    arrivals = np.array([a for a, _, _ in video])
    gaps = np.diff(arrivals) if len(arrivals) > 1 else np.zeros(1)
    flash_t = [s for _, s, fl in video if fl and s is not None]
    a_t = np.array([s for s, _ in audio_rx if s is not None])
    a_rms = np.array([r for s, r in audio_rx if s is not None])
    onsets = a_t[1:][(a_rms[1:] > 0.1) & (a_rms[:-1] < 0.01)] if len(a_t) > 1 else np.zeros(0)
    offsets = [(float(f), float(min(onsets - f, key=abs))) for f in flash_t] if len(onsets) else []
    result = {
        "received_frames": len(video),
        "max_receive_gap_ms": round(float(gaps.max()) * 1000, 1),
        "receive_gaps_over_200ms": int((gaps > 0.2).sum()),
        "offsets": offsets,  # (flash time on the server's clock, click - flash in s)
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, out_path)
    await asyncio.sleep(3600)  # killed without closing: the server must reap the session


# -- the server side -------------------------------------------------------------------------
async def soak(minutes: float, overrides: list[str], settle: bool = True) -> dict[str, Any]:
    from model import load_model
    from stream.config import load
    from stream.worker import settle_heap
    from tests.rtc import Running

    cfg = load(None, ["server.ice_host_addresses=127.0.0.1", "server.max_sessions=1", *overrides])
    model = load_model(cfg)
    seconds = minutes * 60
    samples: list[dict[str, Any]] = []
    emitted: list[float] = []
    due: list[float] = []  # each emitted frame's deadline (media time + D on the session clock)
    gc_pauses: list[tuple[float, int, float]] = []  # (loop time, generation, ms)
    gc_t0 = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_pauses.append((time.monotonic(), info["generation"], (time.perf_counter() - gc_t0[0]) * 1000))

    lags: list[tuple[float, float]] = []  # (loop time, how late a 10 ms sleep woke, ms)

    async def lag_probe() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append((t, (time.monotonic() - t - 0.01) * 1000))

    with tempfile.TemporaryDirectory() as d:
        client_out = os.path.join(d, "client.json")
        async with Running(cfg, model) as srv:
            url = srv.url("/").rstrip("/")
            if settle:
                settle_heap()  # as `serve` does once it listens, before any session
            gc.callbacks.append(on_gc)
            env = dict(os.environ, PYTHONPATH=ROOT)
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--client", url, str(seconds), client_out], env=env
            )
            loop = asyncio.get_running_loop()
            end = loop.time() + 30
            while not srv.server.sessions and loop.time() < end:
                await asyncio.sleep(0.1)
            if not srv.server.sessions:
                proc.kill()
                raise SystemExit("soak: the client never connected")
            sid, sess = next(iter(srv.server.sessions.items()))
            t0 = loop.time()
            probe = asyncio.get_running_loop().create_task(lag_probe())
            clock_off = time.monotonic() - sess.clock.now()  # session clock = monotonic - this
            t0_clock = sess.clock.now()
            last_emit = 0.0
            while loop.time() - t0 < seconds and sid in srv.server.sessions:
                await asyncio.sleep(10.0)
                new = [(t, t - added) for t, added, *_ in list(sess.window.frames) if t > last_emit]
                if new:
                    emitted.extend(t for t, _ in new)
                    due.extend(x for _, x in new)  # up to the constant D
                    last_emit = new[-1][0]
                s = sess.stats()
                samples.append(
                    {
                        "t_s": round(loop.time() - t0, 1),
                        "rss_mb": round(_rss_mb(), 1),
                        "fps": s["fps"],
                        "frames_out": s["frames_out"],
                        "late": s["late"],
                        "passthrough": s["passthrough"],
                        "generated": s["generated"],
                        "degrade_level": s["degrade_level"],
                        "keeping_up": s["keeping_up"],
                        "p95_ms": s["added_latency_ms_p95"],
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
            alive = sid in srv.server.sessions
            probe.cancel()
            end = loop.time() + 60
            while not os.path.exists(client_out) and loop.time() < end:
                await asyncio.sleep(0.2)
            with open(client_out) as fh:
                client = json.load(fh)
            # kill the peer without closing: how long until the server reaps the session
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            t_kill = loop.time()
            while sid in srv.server.sessions and loop.time() - t_kill < 60:
                await asyncio.sleep(0.05)
            reap_s = loop.time() - t_kill
    gc.callbacks.remove(on_gc)
    gaps = np.diff(np.array(emitted)) if len(emitted) > 1 else np.zeros(1)
    worst = np.argsort(gaps)[::-1][:5] if len(emitted) > 1 else []
    due_gaps = np.diff(np.array(due)) if len(due) > 1 else np.zeros(1)
    # what the server itself added: the emitted gap beyond the gap between the two frames'
    # deadlines, which the sender's own pacing and the network set (a frame interval when regular)
    stalls = gaps - due_gaps + 0.04
    lag_ms = np.array([x for _, x in lags]) if lags else np.zeros(1)
    lags = [(t - clock_off, x) for t, x in lags]
    gc_pauses = [(t - clock_off, g, x) for t, g, x in gc_pauses]
    offs = np.array(client["offsets"]) if client["offsets"] else np.zeros((0, 2))
    first = offs[offs[:, 0] <= offs[0, 0] + 60, 1] if len(offs) else np.zeros(0)
    last = offs[offs[:, 0] >= offs[-1, 0] - 60, 1] if len(offs) else np.zeros(0)
    rss = [x["rss_mb"] for x in samples]
    after_1min = [x["rss_mb"] for x in samples if x["t_s"] >= 60]
    return {
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "model": model.name,
        "minutes": minutes,
        "delay_ms": cfg.playout.delay_ms,
        "session_alive_at_end": alive,
        "samples": samples,
        "max_emit_gap_ms": round(float(gaps.max()) * 1000, 1),
        "emit_gaps_over_200ms": int((gaps > 0.2).sum()),
        "max_server_stall_ms": round(float(stalls.max()) * 1000, 1),
        "server_stalls_over_200ms": int((stalls > 0.2).sum()),
        "emit_gap_p999_ms": round(float(np.quantile(gaps, 0.999)) * 1000, 1),
        # where the worst stalls were: seconds into the session, and the event loop's lag and
        # the longest garbage collection within 0.5 s before each
        "worst_emit_gaps": [
            {
                "t_s": round(emitted[i + 1] - t0_clock, 1),
                "gap_ms": round(float(gaps[i]) * 1000, 1),
                "deadline_gap_ms": round(float(due_gaps[i]) * 1000, 1),
                "loop_lag_ms": round(max([x for t, x in lags if emitted[i] - 0.1 <= t <= emitted[i + 1]] or [0]), 1),
                "gc_ms": round(max([x for t, _, x in gc_pauses if emitted[i] - 0.5 <= t <= emitted[i + 1]] or [0]), 1),
            }
            for i in worst
        ],
        "loop_lag_ms": {
            "p50": round(float(np.median(lag_ms)), 1),
            "p99": round(float(np.quantile(lag_ms, 0.99)), 1),
            "max": round(float(lag_ms.max()), 1),
        },
        "gc_max_ms": {str(g): round(max([x for _, gg, x in gc_pauses if gg == g] or [0]), 1) for g in (0, 1, 2)},
        "client": {k: v for k, v in client.items() if k != "offsets"},
        "av_pairs": int(len(offs)),
        "av_offset_first_min_ms": round(float(np.median(first)) * 1000, 1) if len(first) else None,
        "av_offset_last_min_ms": round(float(np.median(last)) * 1000, 1) if len(last) else None,
        "av_drift_ms": round(float(np.median(last) - np.median(first)) * 1000, 1) if len(first) else None,
        "av_offsets_ms": [round(o * 1000, 1) for o in offs[:, 1]] if len(offs) else [],
        "rss_first_mb": rss[0] if rss else None,
        "rss_growth_after_1min_mb": round(max(after_1min) - after_1min[0], 1) if len(after_1min) > 1 else None,
        "reap_after_kill_s": round(reap_s, 2),
        "media_timeout_s": cfg.server.media_timeout_s,
    }


def plot(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["samples"]
    t = [x["t_s"] / 60 for x in s]
    fig, ax = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    ax[0].plot(t, [x["rss_mb"] for x in s])
    ax[0].set_ylabel("server RSS MB")
    ax[1].plot(t, [x["fps"] for x in s])
    ax[1].set_ylabel("output fps (2 s)")
    for key in ("generated", "passthrough", "late"):
        ax[2].plot(t, [x[key] for x in s], label=key)
    ax[2].set_ylabel("frames so far")
    ax[2].legend()
    ax[3].step(t, [x["degrade_level"] for x in s], where="post")
    ax[3].set_ylabel("degrade level")
    ax[3].set_xlabel("minutes")
    fig.suptitle(f"soak: {r['model']}, {r['minutes']:g} min, {r['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(_client(sys.argv[2], float(sys.argv[3]), sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", default=os.path.join(RESULTS, "soak.json"))
    ap.add_argument("--plot", default=os.path.join(RESULTS, "soak.png"))
    ap.add_argument("--no-settle", action="store_true", help="skip gc.freeze after start-up (to compare)")
    args = ap.parse_args()
    r = asyncio.run(soak(args.minutes, args.set, settle=not args.no_settle))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(r, fh, indent=1)
    plot(r, args.plot)
    last = r["samples"][-1] if r["samples"] else {}
    print(
        f"soak {r['minutes']:g} min, model {r['model']}, {r['machine']}: "
        f"{last.get('frames_out', 0)} frames out ({last.get('generated', 0)} generated, "
        f"{last.get('passthrough', 0)} passed through, {last.get('late', 0)} late), final degrade level "
        f"{last.get('degrade_level')}; longest emitted gap {r['max_emit_gap_ms']} ms "
        f"({r['emit_gaps_over_200ms']} over 200 ms; longest the server added {r['max_server_stall_ms']} ms, "
        f"{r['server_stalls_over_200ms']} over 200 ms), client receive gap {r['client']['max_receive_gap_ms']} ms; "
        f"A/V offset {r['av_offset_first_min_ms']} -> {r['av_offset_last_min_ms']} ms (drift {r['av_drift_ms']} ms, "
        f"{r['av_pairs']} pairs); RSS {r['rss_first_mb']} MB, growth after 1 min {r['rss_growth_after_1min_mb']} MB; "
        f"killed peer reaped after {r['reap_after_kill_s']} s (media_timeout_s {r['media_timeout_s']:g})"
    )
    print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
