"""WebRTC server under load: N aiortc clients (in their own process, 320x240 face clip at 25 fps
with silence and speech) against one `serve` server running the configured model, over loopback.

    python benchmarks/webrtc_sessions.py [--sessions 1 5] [--seconds 30] [--set model.name=tiny]

Per session: output frames/s (server side), the slowest 1 s, added latency p50/p95 (capture to
emission, server side), late frames, degrade level. Prints a markdown row per N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import load_model  # noqa: E402
from stream.config import load  # noqa: E402
from tests.rtc import Running  # noqa: E402


async def measure(n: int, seconds: float, overrides: list[str]) -> dict:
    cfg = load(None, ["server.ice_host_addresses=127.0.0.1", f"server.max_sessions={n}", *overrides])
    model = load_model(cfg)
    async with Running(cfg, model) as srv:
        url = srv.url("/").rstrip("/")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.rtc", url, str(n), str(seconds + 6.0), stdout=subprocess.PIPE
        )
        loop = asyncio.get_running_loop()
        t_end = loop.time() + 20
        while len(srv.server.sessions) < n and loop.time() < t_end:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        ids = list(srv.server.sessions)
        start = {i: srv.server.sessions[i].engine.stats.frames_out for i in ids}
        per_s: dict[str, list[int]] = {i: [] for i in ids}
        lat: dict[str, list[float]] = {i: [] for i in ids}
        last = dict(start)
        t0 = loop.time()
        while loop.time() - t0 < seconds:
            await asyncio.sleep(1.0)
            for i in ids:
                s = srv.server.sessions.get(i)
                if s is None:
                    continue
                per_s[i].append(s.engine.stats.frames_out - last[i])
                last[i] = s.engine.stats.frames_out
                lat[i].extend(a for _, a in list(s.window.frames)[-per_s[i][-1] :] if per_s[i][-1] > 0)
        elapsed = loop.time() - t0
        rows = []
        for i in ids:
            s = srv.server.sessions.get(i)
            st = s.engine.stats if s is not None else None
            la = np.array(lat[i] or [np.nan]) * 1000
            rows.append(
                {
                    "fps": (last[i] - start[i]) / elapsed,
                    "min_1s": min(per_s[i]) if per_s[i] else 0,
                    "p50": float(np.nanpercentile(la, 50)),
                    "p95": float(np.nanpercentile(la, 95)),
                    "late": st.late if st else -1,
                    "degrade": st.degrade_level if st else -1,
                    "alive": s is not None,
                }
            )
        await proc.communicate()
        return {"model": model.name, "rows": rows, "delay_ms": cfg.playout.delay_ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    print(
        "| sessions | model | fps per session (mean, min) | slowest 1 s | added latency p50 / p95 ms | late "
        "| degrade | machine |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sessions:
        r = asyncio.run(measure(n, args.seconds, args.set))
        rows = r["rows"]
        fps = [x["fps"] for x in rows]
        print(
            f"| {n} | {r['model']} | {np.mean(fps):.1f}, {min(fps):.1f} | {min(x['min_1s'] for x in rows)} | "
            f"{np.mean([x['p50'] for x in rows]):.0f} / {max(x['p95'] for x in rows):.0f} | "
            f"{sum(x['late'] for x in rows)} | {max(x['degrade'] for x in rows)} | {machine} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
