"""The LiveKit avatar's added latency on this machine, with the shipped model: speech in through
``LipSyncVideoGenerator.push_audio`` (20 ms ``rtc.AudioFrame``s streamed at the rate they play,
as a streaming TTS delivers them) to the frame that carries it out; frames out of order; and
interruption (``clear_buffer``) to the first frame with the mouth at rest. (Audio sent faster
than real time waits its turn to play: that queueing is not added latency.)

    python benchmarks/avatar_latency.py [--utterances 6] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from stream.avatar import Avatar, load_face  # noqa: E402
from stream.bench import machine  # noqa: E402
from stream.cli import DEMO_VIDEO, asset  # noqa: E402
from stream.config import load  # noqa: E402
from stream.sources.file import read_audio  # noqa: E402


async def run(n: int) -> dict:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from model import load_model
    from stream.integrations.livekit_avatar import LipSyncVideoGenerator

    cfg = load(None, [])
    avatar = Avatar(cfg, load_model(cfg), load_face(asset(DEMO_VIDEO)))
    rate = 24000
    gen = LipSyncVideoGenerator(avatar, sample_rate=rate)
    x, r = read_audio(asset("sample_speech.wav"))
    pcm = gen._resample(x, r)
    pcm = (np.clip(pcm[: 3 * rate, 0], -1, 1) * 32767).astype(np.int16)  # 3 s utterances
    out: list[tuple[float, object]] = []
    kinds: list[tuple[float, str, float]] = []  # (wall, kind, media_s) from the avatar itself
    orig_events = avatar.events

    async def tapped():  # noqa: ANN202
        async for ev in orig_events():
            if ev[0] == "video":
                kinds.append((time.monotonic(), ev[3], ev[2]))
            yield ev

    avatar.events = tapped  # type: ignore[method-assign]

    async def pull() -> None:
        async for f in gen:
            out.append((time.monotonic(), f))

    task = asyncio.create_task(pull())
    interrupts: list[float] = []
    for k in range(n):
        await asyncio.sleep(1.0)
        for i in range(0, len(pcm), rate // 50):
            b = pcm[i : i + rate // 50]
            await gen.push_audio(rtc.AudioFrame(b.tobytes(), rate, 1, len(b)))
            await asyncio.sleep(0.02)
            if k % 3 == 2 and i >= 2 * rate:  # every third utterance is interrupted after 2 s
                break
        if k % 3 == 2:
            await asyncio.sleep(cfg.playout.delay_ms / 1000 - 0.2)
            interrupts.append(time.monotonic())
            gen.clear_buffer()
            await asyncio.sleep(1.0)
        else:
            await gen.push_audio(AudioSegmentEnd())
            await asyncio.sleep(cfg.playout.delay_ms / 1000 + 0.5)
    task.cancel()
    stats = avatar.stats.as_dict()
    media = [m for _, _, m in kinds]
    out_of_order = sum(1 for a, b in zip(media, media[1:], strict=False) if b <= a)
    rest_after = []
    for t in interrupts:
        nxt = [w for w, kind, _ in kinds if w >= t and kind == "rest"]
        rest_after.append((nxt[0] - t) * 1000 if nxt else float("nan"))
    await gen.aclose()
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "playout_delay_ms": cfg.playout.delay_ms,
        "utterances": n,
        **stats,
        "video_out_of_order": out_of_order,
        "interrupt_to_rest_ms": [round(v, 1) for v in rest_after],
        "generated_frames": sum(1 for _, k, _ in kinds if k == "generated"),
        "late_frames": avatar.session.stats.late,
        "passthrough_frames": avatar.session.stats.passthrough,
        "degrade_level_end": avatar.session.stats.degrade_level,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=6)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    res = asyncio.run(run(a.utterances))
    print(json.dumps(res, indent=1))
    if a.write:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "a") as f:
            f.write(
                f"\n## LiveKit avatar: added latency (issue 13)\n\n`python benchmarks/avatar_latency.py --utterances "
                f"{a.utterances}` ({res['date']}, {res['machine']}, shipped tiny model, playout.delay_ms = "
                f"{res['playout_delay_ms']}): speech in -> its frame out p50 {res['latency_ms_p50']:.0f} ms, p95 "
                f"{res['latency_ms_p95']:.0f} ms; {res['video_out']} video frames ({res['generated_frames']} with a "
                f"generated mouth, {res['late_frames']} late), {res['video_out_of_order']} out of order; interruption "
                f"to mouth at rest: {', '.join(f'{v:.0f}' for v in res['interrupt_to_rest_ms'])} ms.\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
