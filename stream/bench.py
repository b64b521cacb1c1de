"""Latency / throughput / per-stage cost of the engine on a clip, as JSON and a PNG timeline."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from stream.clock import MonotonicClock
from stream.config import Config
from stream.drive import run_offline, run_paced
from stream.filejob import _merge
from stream.frames import OutputAudio, OutputFrame
from stream.session import LipSyncSession
from stream.sinks.file import FileSink
from stream.sources.file import audio_blocks, probe_video, read_audio, video_timeline
from stream.worker import LipSyncModel


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _summary_ms(xs: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(xs, 50), 2), "p95": round(_pct(xs, 95), 2), "max": round(_pct(xs, 100), 2)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


class _Timed:
    """Wraps an iterator and accumulates the time spent producing items (decode cost)."""

    def __init__(self, it: Iterator[Any]) -> None:
        self.it = it
        self.seconds = 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self) -> Any:
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t


def run_bench(
    video: str,
    audio: str,
    config: Config,
    model: LipSyncModel,
    seconds: float | None = None,
    realtime: bool = True,
    encode_path: str | None = None,
) -> dict[str, Any]:
    info = probe_video(video)
    samples, rate = read_audio(audio)
    if seconds is not None:
        samples = samples[: round(seconds * rate)]
    duration = samples.shape[0] / rate
    report: dict[str, Any] = {
        "machine": machine(),
        "model": model.name,
        "runtime": getattr(model, "runtime", "-"),
        "video": os.path.basename(video),
        "size": f"{info.width}x{info.height}",
        "fps_in": float(info.fps),
        "duration_s": round(duration, 3),
        "delay_ms": config.playout.delay_ms,
        "chunk_frames": config.chunk.chunk_frames,
        "overlap_frames": config.chunk.overlap_frames,
    }

    # 1) throughput: as fast as possible, with decode and encode timed
    clock = MonotonicClock()
    session = LipSyncSession(config, model, clock)
    vt = _Timed(video_timeline(video, info.fps, duration))
    media = _merge(vt, audio_blocks(samples, rate))
    sink = FileSink(encode_path, info.width, info.height, info.fps, config.output) if encode_path else None
    enc = [0.0]
    first: list[float | None] = [None]
    t0 = time.perf_counter()

    def emit(frames: list[OutputFrame], audio_out: list[OutputAudio]) -> None:
        if first[0] is None and frames:
            first[0] = time.perf_counter() - t0
        if sink is not None:
            t = time.perf_counter()
            for a in audio_out:
                sink.write_audio(a.frame)
            for f in frames:
                sink.write_video(f.frame)
            enc[0] += time.perf_counter() - t

    run_offline(session, media, emit)
    if sink is not None:
        t = time.perf_counter()
        sink.close()
        enc[0] += time.perf_counter() - t
    wall = time.perf_counter() - t0
    st = session.stats
    n = max(1, st.frames_out)
    model_ms = list(session.worker.model_ms)
    session.close()
    stage = {k: round(v / n, 3) for k, v in st.stage_ms.items()}
    stage["decode"] = round(vt.seconds * 1000 / n, 3)
    stage["model"] = round(sum(model_ms) / n, 3)
    if sink is not None:
        stage["encode"] = round(enc[0] * 1000 / n, 3)
    report["throughput"] = {
        "frames": st.frames_out,
        "wall_s": round(wall, 3),
        "fps": round(st.frames_out / wall, 2),
        "first_frame_s": round(first[0] or float("nan"), 4),
        "stage_ms_per_frame": stage,
        "face_crop_paste_ms_per_frame": round(stage["face"] + stage["crop"] + stage["paste"], 3),
        "model_ms_per_chunk_p50": round(_pct(model_ms, 50), 2),
        "model_calls": len(model_ms),
        "kinds": {k: getattr(st, k) for k in ("generated", "rest", "hold", "passthrough")},
    }

    # 2) live timing: paced at the media rate with the fixed-delay playout
    if realtime:
        clock = MonotonicClock()
        session = LipSyncSession(config, model, clock)
        media = _merge(video_timeline(video, info.fps, duration), audio_blocks(samples, rate))
        rows: list[tuple[float, float, bool, str]] = []

        def emit_rt(frames: list[OutputFrame], audio_out: list[OutputAudio]) -> None:
            for f in frames:
                capture = f.deadline_s - session.delay_s
                rows.append((capture, f.emitted_at_s - capture, f.late, f.kind.value))

        asyncio.run(run_paced(session, clock, media, emit_rt))
        st = session.stats
        added = [r[1] * 1000 for r in rows]
        ready = [x * 1000 for x in st.ready_latency_s]
        session.close()
        report["live"] = {
            "frames": len(rows),
            "added_latency_ms": {
                "p50": round(_pct(added, 50), 2),
                "p95": round(_pct(added, 95), 2),
                "max": round(max(added), 2),
            },
            "mouth_ready_ms": {
                "p50": round(_pct(ready, 50), 2),
                "p95": round(_pct(ready, 95), 2),
                "max": round(max(ready, default=float("nan")), 2),
            },
            "late_frames": st.late,
            "degrade_level_end": st.degrade_level,
            "first_frame_s": round(rows[0][1], 4) if rows else None,
        }
        report["_timeline"] = rows
    return report


def write_report(report: dict[str, Any], json_path: str, png_path: str | None) -> None:
    rows = report.pop("_timeline", [])
    with open(json_path, "w") as fh:
        json.dump(report, fh, indent=2)
    if png_path and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [r[0] for r in rows]
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(t, [r[1] * 1000 for r in rows], lw=1, label="added latency (emit - capture)")
        late = [(r[0], r[1] * 1000) for r in rows if r[2]]
        if late:
            ax.scatter([x for x, _ in late], [y for _, y in late], color="red", s=8, label="late (fallback)")
        ax.axhline(report["delay_ms"], color="grey", ls="--", lw=0.8, label="delay budget D")
        ax.set_xlabel("capture time (s)")
        ax.set_ylabel("ms")
        ax.set_title(f"sayanything-live bench: {report['model']} on {report['video']}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
