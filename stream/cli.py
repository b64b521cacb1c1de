"""The ``sayanything-live`` command line. Only this module reads config files."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from importlib import resources
from typing import Any

from stream.config import Config, load
from stream.errors import SayAnythingError

log = logging.getLogger("sayanything-live")


DEMO_VIDEO = "character.mp4"  # a rendered character: what the shipped tiny model was trained on


def asset(name: str) -> str:
    return str(resources.files("stream") / "assets" / name)


def _config(args: argparse.Namespace) -> Config:
    sets = list(args.set or [])
    for opt in ("host", "port"):  # serve's shortcuts for server.host / server.port
        value = getattr(args, opt, None)
        if value is not None:
            sets.append(f"server.{opt}={value}")
    return load(args.config, sets)


def _model(cfg: Config):  # noqa: ANN202 - returns a LipSyncModel
    from model import load_model

    return load_model(cfg)


def _summary(res) -> str:  # noqa: ANN001
    s = res.session
    lines = [
        f"wrote {res.output}: {res.frames} frames, {res.duration_s:.2f} s (follows the audio)",
        f"speed: {res.fps:.1f} frames/s on this machine ({res.wall_s:.2f} s wall)",
        (
            f"frames: {s['generated']} from the model, {s['rest']} mouth at rest (silence), {s['hold']} held, "
            f"{s['passthrough']} passed through ({s['no_face']} without a face); {s['late']} late"
        ),
        (
            f"speech: {s['chunks_planned'] - s['chunks_silent']} of {s['chunks_planned']} chunks had speech "
            f"and went to the model ({s['model_errors']} model errors)"
        ),
    ]
    if s["texture"]:
        lines.append(
            f"texture: {s['texture']} (the model's mouth at rest, its colour cast taken off, is delta-E "
            f"{s['rest_delta_e']:.1f} from the face; set model.texture to choose)"
        )
    n = max(1, s["frames_out"])
    st = s["stage_ms"]
    lines.append(
        f"engine overhead per frame: face {st['face'] / n:.2f} ms, crop+mask {st['crop'] / n:.2f} ms, "
        f"paste {st['paste'] / n:.2f} ms"
    )
    if res.realtime and res.added_latency_s:
        import numpy as np

        lat = np.array(res.added_latency_s) * 1000
        lines.append(f"added latency: p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms")
    if s["nonfinite_audio_samples"]:
        lines.append(f"audio: {s['nonfinite_audio_samples']} NaN/inf samples were replaced by silence")
    return "\n".join(lines)


def cmd_file(args: argparse.Namespace) -> int:
    from stream.filejob import run_file

    cfg = _config(args)
    if args.dub:
        return _dub_file(args, cfg)
    if not args.audio:
        raise SayAnythingError("file needs VIDEO AUDIO, or VIDEO --dub SUBS.srt --voice LANG: give one")
    from stream.filejob import check_job

    check_job(args.video, args.audio, args.output)  # bad inputs or output: say so before the model loads
    model = _model(cfg)
    res = run_file(args.video, args.audio, args.output, cfg, model, realtime=args.realtime, video_mode=args.video_mode)
    print(_summary(res))
    return 0


def _dub_file(args: argparse.Namespace, cfg: Config) -> int:
    """Dub a recorded video from timed subtitles spoken with eSpeak NG (translate_bridge)."""
    from stream.filejob import run_file
    from stream.sources.file import probe_video
    from translate_bridge.align import Aligner
    from translate_bridge.bridge import RATE_HZ, dub_track, policy
    from translate_bridge.providers.subtitles import parse_subtitles, segments

    if args.audio:
        raise SayAnythingError("--dub replaces the audio: give VIDEO --dub SUBS.srt, without AUDIO")
    from stream.sinks.file import check_output_path

    check_output_path(args.output, (args.video, args.dub))
    info = probe_video(args.video)
    cues = parse_subtitles(args.dub)
    align, _ = policy(cfg.bridge)
    duration = info.duration_s if info.duration_s is not None else cues[-1].end_s
    track, report = dub_track(segments(cues, args.voice), duration, Aligner(align))
    model = _model(cfg)
    res = run_file(
        args.video, (track[:, None], RATE_HZ), args.output, cfg, model, realtime=args.realtime, video_mode="hold"
    )
    print(report.summary())
    print(_summary(res))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.filejob import check_job, run_file

    cfg = _config(args)
    if args.image and args.video:
        raise SayAnythingError("demo takes --image or --video, not both: pick one")
    video = args.image or args.video or asset(DEMO_VIDEO if cfg.model.name != "identity" else "sample_face.mp4")
    audio = args.audio or asset("sample_speech.wav")
    check_job(video, audio, args.output)  # before the model loads
    model = _model(cfg)
    what = "your picture" if args.image else ("your clip" if args.video else "the bundled clip")
    speech = "your audio" if args.audio else "bundled speech"
    print(f"demo: {what} + {speech} -> {args.output}, model '{model.name}'")
    if model.name == "identity":
        print(
            "note: the 'identity' model runs (no lip-sync model): the engine "
            "tracks the face, runs VAD, chunks and composites, but speech frames keep the filmed mouth; "
            "in silence the mouth is held still at rest."
        )
    res = run_file(
        video, audio, args.output, cfg, model, realtime=args.realtime, video_mode="hold" if args.image else "loop"
    )
    print(_summary(res))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from stream.server import check_bind, check_port, serve

    cfg = _config(args)
    token = cfg.server.token or os.environ.get("SAYANYTHING_TOKEN", "")
    check_bind(cfg.server.host, token)  # before loading the model
    check_port(cfg.server.host, cfg.server.port)
    model = _model(cfg)
    logging.getLogger("stream.server").setLevel(logging.INFO)
    print(f"sayanything-live serve: http://{cfg.server.host}:{cfg.server.port}/ (model '{model.name}'); Ctrl-C stops")
    if token:
        print("signalling needs 'Authorization: Bearer ...'; the page reads it from http://HOST:PORT/#token=...")
    try:
        asyncio.run(serve(cfg, model, token))
    except KeyboardInterrupt:
        print("sayanything-live serve: stopped")
    return 0


def _live_parts(cfg: Config, mic: bool = True):  # noqa: ANN202
    from stream.clock import MonotonicClock
    from stream.sinks.speaker import SpeakerSink
    from stream.sources.camera import CameraSource
    from stream.sources.mic import MicSource

    clock = MonotonicClock()
    origin = clock.now()
    return (
        clock,
        CameraSource(cfg.live, clock, origin),
        MicSource(cfg.live, clock, origin) if mic else None,
        SpeakerSink(cfg.live, clock),
    )


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from stream.live import LiveRun
    from stream.sinks.virtualcam import VirtualCameraSink, open_virtual_camera

    cfg = _config(args)
    lc = cfg.live
    # the outputs first: a missing virtual camera or device stops here, with its set-up hint
    cam = open_virtual_camera(lc, lc.camera_width, lc.camera_height, lc.camera_fps)
    sink: Any = VirtualCameraSink(cam)
    if lc.preview:
        from stream.sinks.virtualcam import PreviewSink

        sink = PreviewSink(sink)
    model = _model(cfg)
    clock, camera, mic, speaker = _live_parts(cfg, mic=not args.no_mic)
    run = LiveRun(cfg, model, clock, camera, mic, lambda w, h, fps: sink, speaker)
    print(
        f"sayanything-live run: camera {camera.describe()} -> virtual camera {getattr(cam, 'device', '?')}; "
        f"microphone {lc.mic_device or '(default)'} -> {lc.speaker_device or '(default output)'} delayed "
        f"{cfg.playout.delay_ms + lc.audio_extra_delay_ms} ms; model '{model.name}'. Ctrl-C stops."
    )
    tty = sys.stderr.isatty()

    def show(line: str) -> None:
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            log.warning("%s", line)

    async def main() -> None:
        site = None
        if args.bridge_port is not None:
            from aiohttp import web

            from translate_bridge.ws import serve_provider

            dub = run.enable_dub(cfg.bridge)

            async def bridge(request: web.Request) -> web.StreamResponse:
                ws = web.WebSocketResponse(max_msg_size=2 * cfg.bridge.max_message_bytes, heartbeat=20.0)
                await ws.prepare(request)
                await serve_provider(ws, dub)
                return ws

            app = web.Application()
            app.router.add_get("/bridge", bridge)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", args.bridge_port)
            await site.start()
            print(f"dubbing provider WebSocket: ws://127.0.0.1:{args.bridge_port}/bridge (translate_bridge/README.md)")
        try:
            await run.run(args.seconds, show)
        finally:
            if site is not None:
                await runner.cleanup()

    from stream.worker import settle_heap

    settle_heap()  # after the model and the face tracker loaded: no 250 ms collection mid-stream
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        run.close()
        if tty:
            print(file=sys.stderr)
    print(f"stopped: {run.session.stats.frames_out} frames sent, {run.session.stats.late} late; devices closed")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from stream.devices import report

    print(report())
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import asyncio

    from stream.calibrate import Calibration, click_times, emit_pattern, flash_times, pair
    from stream.config import LiveConfig
    from stream.devices import _os
    from stream.sinks.virtualcam import VirtualCameraSink, open_virtual_camera
    from stream.sources.camera import CameraSource
    from stream.sources.mic import MicSource

    cfg = _config(args)
    lc = cfg.live
    readback = args.camera or lc.virtual_camera_device
    listen = args.listen or (f"{lc.speaker_device}.monitor" if lc.speaker_device and _os() == "linux" else "")
    if not readback or not listen:
        raise SayAnythingError(
            "calibrate reads the outputs back: give --camera (the virtual camera as a capture device, e.g. "
            "/dev/video10) and --listen (the virtual microphone as an input, e.g. sayanything_mic.monitor)"
        )
    sink = VirtualCameraSink(open_virtual_camera(lc, 640, 480, 30))
    clock, _, _, speaker = _live_parts(cfg, mic=False)
    origin = clock.now()
    import dataclasses

    back_cfg = dataclasses.replace(LiveConfig(), camera_device=readback, camera_width=640, camera_height=480)
    camera = CameraSource(back_cfg, clock, origin)
    mic = MicSource(dataclasses.replace(LiveConfig(), mic_device=listen), clock, origin)
    seen: list[tuple[float, float]] = []
    heard: list[Any] = []

    async def go() -> Calibration:
        loop = asyncio.get_running_loop()
        camera.start(loop, lambda vf: seen.append((origin + vf.time_s, float(vf.image.mean()))))
        mic.start(loop, heard.append)
        speaker.start()
        try:
            await asyncio.sleep(1.0)
            await emit_pattern(clock, sink.send, lambda x, r, t: speaker.put(x, r, t + lc.audio_extra_delay_ms / 1000))
            await asyncio.sleep(1.0)
        finally:
            camera.stop()
            mic.stop()
            speaker.stop()
            sink.close()
        f, c = flash_times(seen), click_times(heard, origin)
        return Calibration(f, c, pair(f, c))

    print(asyncio.run(go()).summary())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from stream.bench import run_bench, write_report

    cfg = _config(args)
    model = _model(cfg)
    video = args.video or asset("sample_face.mp4")
    audio = args.audio or asset("sample_speech.wav")
    with tempfile.TemporaryDirectory() as d:
        report = run_bench(
            video,
            audio,
            cfg,
            model,
            seconds=args.seconds,
            realtime=not args.no_live,
            encode_path=os.path.join(d, "bench.mp4"),
        )
    write_report(report, args.json, args.plot)
    tp = report["throughput"]
    print(f"machine: {report['machine']}")
    print(
        f"model {report['model']} ({report['runtime']}), {report['size']} @ {report['fps_in']:g} fps, "
        f"{report['duration_s']} s of audio"
    )
    print(f"throughput: {tp['fps']} frames/s, first frame after {tp['first_frame_s'] * 1000:.0f} ms")
    print("per-frame stage ms: " + ", ".join(f"{k} {v}" for k, v in tp["stage_ms_per_frame"].items()))
    print(f"face+crop+paste: {tp['face_crop_paste_ms_per_frame']} ms/frame")
    if "live" in report:
        lv = report["live"]
        a = lv["added_latency_ms"]
        print(
            f"live (D = {report['delay_ms']} ms): added latency p50 {a['p50']} / p95 {a['p95']} / max {a['max']} ms, "
            f"mouth ready p95 {lv['mouth_ready_ms']['p95']} ms, late frames {lv['late_frames']} of {lv['frames']}"
        )
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch
    from tqdm import tqdm

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.train.data import clip_chunks
    from model.train.distill import DistillConfig, chunkset_batches, clip_batches, distill, trajectory_errors

    torch.manual_seed(args.seed)
    teacher = load_checkpoint(args.teacher)
    if teacher.config.consistency:
        raise SayAnythingError(f"checkpoint {args.teacher} is already a distilled student: pass a teacher checkpoint")
    if args.data:
        from model.train.distill import stream_batches
        from model.train.prepare import Shard, shard_paths
        from model.train.realtrain import _check_data
        from model.train.shards import ShardStream
        from model.train.train import to_tensors

        _check_data(teacher, args.data)
        paths = [p for d in args.data for p in shard_paths(d)]
        last = Shard.load(paths[-1]).chunks()
        held_out = to_tensors(last, np.arange(1))
        stream = ShardStream(paths[:-1] if len(paths) > 1 else paths, seed=args.seed)
        n = sum(len(Shard.load(p)) for p in paths)
        batches = stream_batches(teacher, stream, args.batch_size)
    elif args.synthetic:
        from model.train.dataset import build
        from model.train.train import to_tensors

        data = build(teacher.config, "train", range(args.synthetic), args.cache)
        n = len(data)
        held_out = to_tensors(build(teacher.config, "val", range(1), args.cache), np.arange(1))
        batches = chunkset_batches(teacher, data, args.batch_size, args.seed)
    else:
        if not (args.video and args.audio):
            raise SayAnythingError("distill needs --video and --audio, --data DATA, or --synthetic N: give one")
        chunks = clip_chunks(args.video, args.audio, teacher.config)
        n = chunks["frames"].shape[0]
        held_out = {k: v[-1:] for k, v in chunks.items()}
        train = {k: v[:-1] for k, v in chunks.items()} if n > 1 else chunks
        batches = clip_batches(teacher, train, args.batch_size, args.seed)
    cfg = DistillConfig(
        iterations=args.iterations,
        lr=args.lr,
        base_steps=args.base_steps,
        skip=args.skip,
        guidance=args.guidance,
        seed=args.seed,
    )
    bar = tqdm(total=cfg.iterations, unit="it", desc="distill", file=sys.stderr, disable=not sys.stderr.isatty())
    t0 = time.perf_counter()

    def progress(_: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    student = distill(teacher, batches, cfg, progress=progress)
    bar.close()
    save_checkpoint(student, args.out)
    errs = trajectory_errors(teacher, student, held_out, cfg, steps=args.eval_steps)
    print(f"wrote student {args.out}: {cfg.iterations} iterations on {n} chunks in {time.perf_counter() - t0:.1f} s")
    print(
        f"held-out chunk, distance to the teacher's {cfg.base_steps}-step output (mean squared, latent): "
        f"student {args.eval_steps}-step {errs['student']:.4f}; teacher {args.eval_steps}-step "
        f"{errs['teacher']:.4f} on its own schedule, {errs['teacher_same_sigmas']:.4f} on the student's sigmas"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    import torch

    from model.checkpoint import load_svd_weights, save_checkpoint
    from model.configs import PRESETS
    from model.network import SayAnythingModel

    torch.manual_seed(args.seed)
    model = SayAnythingModel(PRESETS[args.preset])
    if args.svd:
        load_svd_weights(model, args.svd)
    save_checkpoint(model, args.out)
    counts = model.parameter_count()
    origin = f"UNet and VAE from {args.svd}" if args.svd else "random initialisation (a starting point for training)"
    print(f"wrote {args.preset} checkpoint {args.out}: {sum(counts.values()) / 1e6:.1f} M parameters, {origin}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import time

    from model.train.prepare import PrepareConfig, prepare, progress_printer

    t0 = time.time()
    pc = PrepareConfig(faces=args.faces, min_seconds=args.min_seconds)
    face = _config(args).face
    summary = prepare(args.inputs, args.out, args.preset, face, pc, progress_printer(t0))
    rate = (summary["clips_kept"] + summary["clips_skipped"]) / max(1e-9, (time.time() - t0) / 60)
    print(
        f"wrote {args.out}: {summary['clips_kept']} clips kept ({summary['hours'] * 60:.1f} min, "
        f"{summary['chunks']} chunks), {summary['clips_skipped']} skipped; {rate:.1f} clips/min"
    )
    for path, reason in summary["skipped"].items():
        print(f"  skipped {path}: {reason}")
    return 0


def _train_data(args: argparse.Namespace) -> int:
    """``train --data``: few-step training on prepared real video (torchrun for many processes)."""
    import time

    from model.train.fewstep import FewStepConfig, LatentSet
    from model.train.realtrain import SHIPPED, train_on_data

    tc = FewStepConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        accum=args.accum,
        bf16=args.bf16,
        grad_checkpoint=args.grad_checkpoint,
        minutes=args.minutes,
        save_every=args.save_every,
        warmup=args.warmup,
    )
    synthetic = LatentSet.load(args.synthetic_latents) if args.synthetic_latents else None
    t0 = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))

    def progress(step: int, losses: dict[str, float]) -> None:
        if step % 10 == 0:
            print(
                f"step {step}/{tc.steps} loss {losses['loss']:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr
            )

    train_on_data(args.data, args.out, args.init or SHIPPED, tc, args.device, synthetic, args.synthetic_share, progress)
    if rank == 0:
        print(f"wrote {args.out} (EMA weights; log.jsonl; resume state) in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    from model.train.realtrain import DETAIL_SHARE, SHIPPED, enrol, print_progress

    video = args.video
    if args.camera or args.mic:
        if not (args.camera and args.mic) or video:
            raise SayAnythingError("enrol: record with --camera and --mic (no --video), or pass --video ME.mp4")
        from stream.record import record_clip

        video = record_clip(_config(args), args.seconds, os.path.normpath(args.out) + "-recording.mp4")
        print(f"recorded {video}")
    elif not video:
        raise SayAnythingError("enrol needs --video ME.mp4, or --camera --mic to record one")
    r = enrol(
        video,
        args.out,
        args.base or SHIPPED,
        args.minutes,
        progress=print_progress,
        parts=args.parts,
        detail_share=DETAIL_SHARE if args.detail else 0.0,
    )
    b, a = r["before"], r["after"]
    print(
        f"wrote {args.out} in {r['minutes']:.1f} min ({r['train_steps']} steps on {r['train_chunks']} chunks); "
        f"held-out last 20 % ({r['held_out_chunks']} chunks): mouth PSNR {b['psnr_db']:.1f} -> {a['psnr_db']:.1f} dB, "
        f"SSIM {b['ssim']:.3f} -> {a['ssim']:.3f}, mouth-vs-audio correlation {b['corr_audio']:.2f} -> "
        f"{a['corr_audio']:.2f} (real frames {a['corr_audio_real_frames']:.2f})"
    )
    d = r["detail"]
    if d and "vae_before_db" in d:
        print(
            f"detail net ({d['steps']} steps): held-out mouth PSNR of the VAE's reconstructions at the frame's "
            f"resolution {d['vae_before_db']:.1f} -> {d['vae_after_db']:.1f} dB; "
            + ("kept" if d["kept"] else "not kept (no gain)")
        )
    elif d:
        print(f"detail net: not trained ({d['reason']})")
    print(f"use it with: --set model.checkpoint={args.out} (demo, file, run, serve)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    if args.data:
        return _train_data(args)

    from model.configs import PRESETS
    from model.train.dataset import build
    from model.train.train import TrainConfig, train, vae_psnr

    config = PRESETS[args.preset]
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()
    with tqdm(total=args.clips, unit="clip", desc="synthesise", file=sys.stderr, disable=not tty) as bar:
        data = build(config, "train", range(args.clips), args.cache, progress=lambda _: bar.update(1))
    t_data = time.perf_counter() - t0
    tc = TrainConfig(
        vae_steps=args.vae_steps,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    bars = {
        "vae": tqdm(total=tc.vae_steps, unit="step", desc="vae", file=sys.stderr, disable=not tty),
        "denoiser": tqdm(total=tc.steps, unit="step", desc="denoiser", file=sys.stderr, disable=not tty),
    }

    def progress(phase: str, step: int, loss: float) -> None:
        bars[phase].n = step
        bars[phase].set_postfix(loss=f"{loss:.4f}", refresh=True)

    model = train(config, data, tc, args.out, resume=args.resume, progress=progress)
    for b in bars.values():
        b.close()
    t_train = time.perf_counter() - t0 - t_data
    print(
        f"wrote {args.preset} teacher {args.out}: {len(data)} chunks from {args.clips} clips "
        f"({t_data:.0f} s to synthesise), {tc.vae_steps} VAE + {tc.steps} denoiser steps in "
        f"{t_train:.0f} s; VAE PSNR {vae_psnr(model, data):.1f} dB"
    )
    if args.distill_iterations:
        import torch

        from model.checkpoint import save_checkpoint
        from model.train.distill import DistillConfig, chunkset_batches, distill

        dc = DistillConfig(iterations=args.distill_iterations, lr=args.distill_lr, seed=args.seed)
        t1 = time.perf_counter()
        with tqdm(total=dc.iterations, unit="it", desc="distill", file=sys.stderr, disable=not tty) as bar:
            student = distill(
                model, chunkset_batches(model, data, 4, args.seed), dc, progress=lambda i, loss: bar.update(1)
            )
        out = os.path.join(args.out, "student")
        save_checkpoint(student, out)
        print(f"wrote student {out}: {dc.iterations} distillation iterations in {time.perf_counter() - t1:.0f} s")
        if args.ship:
            save_checkpoint(student, args.ship, dtype=torch.float16)
            print(f"wrote shipped weights {args.ship} (float16)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from model.checkpoint import load_checkpoint
    from model.pipeline import SayAnythingPipeline
    from model.train.evaluate import evaluate
    from model.train.speech import ESpeak
    from model.train.synth import make_clip

    cfg = _config(args)
    if args.portrait is not None:
        from stream.sources.file import probe_video

        args.portrait = args.portrait or [asset("sample_face.mp4")]
        for path in args.portrait:
            probe_video(path)  # a missing or unreadable photo: one line, before the model loads
    net = load_checkpoint(args.checkpoint)
    mc = cfg.model
    pipe = SayAnythingPipeline.from_config(net, mc, guidance=args.guidance)
    cfg = load(args.config, [*(args.set or []), f"model.steps={args.steps}"])
    engine = ESpeak()
    if args.portrait is not None:
        return _eval_portraits(args, cfg, pipe, [make_clip(10_000 + i, "test", engine) for i in range(args.clips)])
    if args.split in ("test_engines", "test_real"):
        from model.train.festival import Festival
        from model.train.realspeech import RecordedSpeech

        other_engine = Festival() if args.split == "test_engines" else RecordedSpeech()
        clips = [make_clip(10_000 + i, args.split, other_engine) for i in range(args.clips)]
    else:
        clips = [make_clip(10_000 + i, args.split, engine) for i in range(args.clips)]
    others = [make_clip(20_000 + i, "test", engine) for i in range(args.clips)]
    res = evaluate(clips, others, cfg, pipe)
    names = {
        "model": pipe.name,
        "passthrough": "pass-through",
        "audio_energy": "audio energy",
        "truth_readout": "truth",
    }
    print(f"{args.clips} held-out clips ({args.split}), {args.steps} steps; mean +- std over clips")
    print(
        f"{'':14} {'corr':>13} {'offset':>11} {'still sil':>10} {'edges':>6} {'still sp':>9} {'seam':>6} {'PSNR':>6} "
        f"{'SSIM':>6} "
        f"{'leak':>13} {'leak|truth':>10} {'slope':>6}"
    )
    for k, v in res.items():
        print(
            f"{names[k]:14} {v['corr']:6.3f}+-{v['corr_std']:.3f} "
            f"{v['offset_frames']:5.2f}+-{v['offset_frames_std']:.2f} "
            f"{v['still_silence']:10.2f} {v['still_edges']:6.2f} {v['still_speech']:9.2f} {v['seam_ratio']:6.2f} "
            f"{v['psnr_db']:6.1f} {v['ssim']:6.3f} {v['leak']:6.3f}+-{v['leak_std']:.3f} {v['leak_partial']:10.3f} "
            f"{v['leak_slope']:6.3f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    if args.write:
        import datetime

        from stream.bench import machine

        argv = sys.argv[2:]
        at = argv.index("--write") if "--write" in argv else len(argv)
        cmd = "sayanything-live eval " + " ".join(argv[:at] + argv[at + 2 :])
        with open(args.write, "a") as fh:
            for k, v in res.items():
                fh.write(
                    f"| {datetime.date.today()} | {machine()} | {names[k]} | {args.split} | {args.clips} | "
                    f"{args.steps} | "
                    f"{v['corr']:.3f} +- {v['corr_std']:.3f} | {v['offset_frames']:.2f} | {v['still_silence']:.2f} | "
                    f"{v['still_speech']:.2f} | "
                    f"{v['seam_ratio']:.2f} | {v['psnr_db']:.1f} | {v['ssim']:.3f} | `{cmd}` |\n"
                )
    return 0


def _eval_portraits(args: argparse.Namespace, cfg: Config, pipe: Any, clips: list[Any]) -> int:
    """``eval --portrait``: colour shift and sharpness of the repainted region on photographs."""
    import json

    from model.train.evaluate import portrait_scores
    from stream.sources.file import decode_video

    paths = args.portrait
    res = {}
    print(f"{len(clips)} held-out English utterances per photograph, {args.steps} steps; mean +- std over utterances")
    for path in paths:
        image = next(iter(decode_video(path)))
        r = portrait_scores(image, clips, cfg, pipe)
        res[path] = r
        print(
            f"{os.path.basename(path)}: delta-E in the mask at rest {r['delta_e']:.2f} +- {r['delta_e_std']:.2f}; "
            f"Laplacian variance vs the input {r['laplacian_ratio']:.2f} +- {r['laplacian_ratio_std']:.2f}; "
            f"darkening vs the true opening {r['motion']:.3f} +- {r['motion_std']:.3f} "
            f"({r['mask_px']} mask pixels, texture {r['texture']})"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sayanything-live", description="Real-time audio-driven lip-sync.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", metavar="PATH", help="TOML config file (see config.toml)")
        sp.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. playout.delay_ms=600"
        )

    d = sub.add_parser("demo", help="bundled portrait + bundled speech -> demo.mp4, with stats")
    common(d)
    d.add_argument("-o", "--output", default="demo.mp4")
    d.add_argument("--realtime", action="store_true", help="pace at the media rate with live deadlines")
    d.add_argument("--image", metavar="PHOTO", help="animate a still portrait (cartoon or photo)")
    d.add_argument("--video", metavar="CLIP", help="use your own clip instead of the bundled one")
    d.add_argument("--audio", metavar="WAV", help="drive it with your own audio")
    d.set_defaults(fn=cmd_demo)

    f = sub.add_parser("file", help="offline dubbing: VIDEO + AUDIO -> OUT")
    common(f)
    f.add_argument("video")
    f.add_argument("audio", nargs="?", help="the driving audio (not with --dub)")
    f.add_argument("--dub", metavar="SUBS", help="dub from timed subtitles (SRT/VTT) spoken in --voice")
    f.add_argument("--voice", default="en-us", help="eSpeak NG voice of the dub's language (es, de, ja, ...)")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--realtime", action="store_true", help="pace at the media rate with live deadlines")
    f.add_argument(
        "--video-mode", choices=["loop", "hold"], default="loop", help="when the audio is longer than the video"
    )
    f.set_defaults(fn=cmd_file)

    b = sub.add_parser("bench", help="latency / throughput / per-stage report (JSON + PNG)")
    common(b)
    b.add_argument("--video")
    b.add_argument("--audio")
    b.add_argument("--seconds", type=float, help="use only the first N seconds of audio")
    b.add_argument("--no-live", action="store_true", help="skip the paced (real-time) pass")
    b.add_argument("--json", default="bench.json")
    b.add_argument("--plot", default="bench.png")
    b.set_defaults(fn=cmd_bench)

    rn = sub.add_parser("run", help="live: camera + microphone -> virtual camera + delayed virtual microphone")
    common(rn)
    rn.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    rn.add_argument("--no-mic", action="store_true", help="no microphone (silence: the mouth rests)")
    rn.add_argument(
        "--bridge-port", type=int, help="take dubbed speech from a provider on ws://127.0.0.1:PORT/bridge instead"
    )
    rn.set_defaults(fn=cmd_run)

    dv = sub.add_parser("devices", help="cameras, audio devices and virtual camera backends, with set-up hints")
    dv.set_defaults(fn=cmd_devices)

    cb = sub.add_parser("calibrate", help="measure the A/V offset between the virtual camera and virtual microphone")
    common(cb)
    cb.add_argument("--camera", help="the virtual camera as a capture device (default: live.virtual_camera_device)")
    cb.add_argument("--listen", help="the virtual microphone as an input (default: SPEAKER_DEVICE.monitor on Linux)")
    cb.set_defaults(fn=cmd_calibrate)

    sv = sub.add_parser("serve", help="WebRTC server: browser page, POST /offer, WHIP ingest, WHEP egress")
    common(sv)
    sv.add_argument("--host", help="bind address (server.host); not loopback: a token is required")
    sv.add_argument("--port", type=int, help="port (server.port)")
    sv.set_defaults(fn=cmd_serve)

    ds = sub.add_parser("distill", help="latent consistency distillation: a few-step student from a teacher")
    ds.add_argument("--teacher", required=True, metavar="DIR", help="teacher checkpoint folder")
    ds.add_argument("--out", required=True, metavar="DIR", help="where to write the student checkpoint")
    ds.add_argument("--video", help="training clip (a visible face)")
    ds.add_argument("--audio", help="its driving audio")
    ds.add_argument("--synthetic", type=int, metavar="N", help="instead: N synthetic training clips (see train)")
    ds.add_argument("--data", nargs="+", metavar="DATA", help="instead: prepared datasets (see prepare)")
    ds.add_argument("--cache", metavar="DIR", help="synthetic chunk cache (shared with train)")
    ds.add_argument("--iterations", type=int, default=2000)
    ds.add_argument("--lr", type=float, default=1e-4)
    ds.add_argument("--batch-size", type=int, default=4)
    ds.add_argument("--base-steps", type=int, default=40, help="teacher schedule the student learns (N)")
    ds.add_argument("--skip", type=int, default=10, help="teacher intervals per consistency step (k)")
    ds.add_argument("--guidance", type=float, default=2.0, help="audio guidance folded into the student")
    ds.add_argument("--eval-steps", type=int, default=2)
    ds.add_argument("--seed", type=int, default=0)
    ds.set_defaults(fn=cmd_distill)

    ini = sub.add_parser("init", help="write a starting checkpoint (random, or UNet + VAE from an SVD folder)")
    ini.add_argument("--preset", choices=["full", "tiny"], default="tiny")
    ini.add_argument("--svd", metavar="DIR", help="diffusers-format Stable Video Diffusion folder (unet/, vae/)")
    ini.add_argument("--out", required=True, metavar="DIR")
    ini.add_argument("--seed", type=int, default=0)
    ini.set_defaults(fn=cmd_init)

    pr = sub.add_parser("prepare", help="real talking-head video -> training shards (what the engine sees)")
    common(pr)
    pr.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR")
    pr.add_argument("--out", required=True, metavar="DATA")
    pr.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    pr.add_argument("--faces", choices=["skip", "select"], default="skip", help="clips with several faces")
    pr.add_argument("--min-seconds", type=float, default=4.0, help="shorter clips are skipped")
    pr.set_defaults(fn=cmd_prepare)

    en = sub.add_parser("enrol", help="fine-tune the model on a clip of yourself (CPU, minutes)")
    common(en)
    en.add_argument("--video", metavar="ME.mp4", help="30-120 s of you talking, face to the camera")
    en.add_argument("--camera", action="store_true", help="record the clip from live.camera_device (with --mic)")
    en.add_argument("--mic", action="store_true", help="... and live.mic_device")
    en.add_argument("--seconds", type=float, default=60.0, help="length of the recording")
    en.add_argument("--out", required=True, metavar="DIR")
    en.add_argument("--minutes", type=float, default=10.0, help="time budget, preparation and scoring included")
    en.add_argument("--base", metavar="DIR", help="checkpoint to start from (default: the shipped tiny model)")
    en.add_argument(
        "--parts",
        choices=["appearance", "all", "anchored"],
        default="appearance",
        help="appearance: VAE decoder + ID-guider only (keeps lip sync); all: the UNet too, on mouth-swapped "
        "inputs (measured to lose sync when dubbed); anchored: as all, with the UNet's response to the mouth held "
        "to the shipped model's (slower steps)",
    )
    en.add_argument(
        "--detail",
        action="store_true",
        help="also train a personal detail net (12 %% of the time): the model's small crop brought to the frame's "
        "resolution with your own fine detail; measured twice as sharp at the same PSNR, a little more motion in "
        "silence",
    )
    en.set_defaults(fn=cmd_enrol)

    tr = sub.add_parser("train", help="train the tiny model on synthetic characters, or any model on --data")
    tr.add_argument("--preset", choices=["tiny"], default="tiny")
    tr.add_argument("--out", required=True, metavar="DIR")
    tr.add_argument("--data", nargs="+", metavar="DATA", help="prepared datasets (sayanything-live prepare)")
    tr.add_argument("--init", metavar="DIR", help="--data: checkpoint to start from (default: shipped tiny)")
    tr.add_argument("--accum", type=int, default=1, help="--data: gradient accumulation steps")
    tr.add_argument("--bf16", action="store_true", help="--data: bfloat16 autocast")
    tr.add_argument("--grad-checkpoint", action="store_true", help="--data: gradient checkpointing in the UNet")
    tr.add_argument("--minutes", type=float, default=0.0, help="--data: stop after this wall-clock time")
    tr.add_argument("--save-every", type=int, default=100, help="--data: checkpoint every N steps")
    tr.add_argument("--warmup", type=int, default=50, help="--data: learning-rate warm-up steps")
    tr.add_argument("--synthetic-latents", metavar="NPZ", help="--data: mix in cached synthetic latents")
    tr.add_argument("--synthetic-share", type=float, default=0.5, help="--data: their share of each batch")
    tr.add_argument("--clips", type=int, default=200, help="synthetic training clips")
    tr.add_argument("--cache", metavar="DIR", help="keep the synthesised chunks here (reused when present)")
    tr.add_argument("--vae-steps", type=int, default=2000)
    tr.add_argument("--steps", type=int, default=4000)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--distill-iterations", type=int, default=0, help="then distil a student into OUT/student")
    tr.add_argument("--distill-lr", type=float, default=1e-4)
    tr.add_argument("--ship", metavar="DIR", help="also write the student as float16 weights here")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu", help="cpu, cuda, ... (training only)")
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser("eval", help="lip-sync quality on held-out synthetic clips, with baselines")
    common(ev)
    ev.add_argument("--checkpoint", required=True, metavar="DIR")
    ev.add_argument("--clips", type=int, default=8)
    ev.add_argument(
        "--split",
        choices=("test", "test_languages", "test_engines", "test_real"),
        default="test",
        help="held-out English voices (test), languages no part of the model trained on, or an engine "
        "it never heard (test_engines: Festival; apt-get install festival festvox-kallpc16k festvox-us-slt-hts), "
        "or people reading, force-aligned: a development split, for choosing, not a truth (test_real; "
        "apt-get install pocketsphinx-testdata && pip install pocketsphinx==5.1.1)",
    )
    ev.add_argument(
        "--portrait",
        nargs="*",
        metavar="PHOTO",
        help="instead of the clips: animate these photographs (no path: the bundled public-domain portrait) with "
        "--clips held-out utterances and report the colour shift (CIELAB delta-E at rest) and sharpness "
        "(Laplacian variance vs the input) of the mask region",
    )
    ev.add_argument("--steps", type=int, default=2)
    ev.add_argument("--guidance", type=float, default=1.0, help="audio guidance (teacher checkpoints only)")
    ev.add_argument("--json", metavar="PATH")
    ev.add_argument("--write", metavar="BENCHMARKS_MD", help="append the rows to this markdown table")
    ev.set_defaults(fn=cmd_eval)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every clean-up path (partial outputs, devices,
    sessions) runs the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def _handle_termination() -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, _raise_terminated)
    return previous


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = _handle_termination()
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("GLOG_minloglevel", "2")  # quiet MediaPipe's native logging
    try:
        return int(args.fn(args))
    except SayAnythingError as e:
        print(f"sayanything-live: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        import signal

        if isinstance(e, Terminated):
            name = signal.Signals(e.signum).name
            print(f"sayanything-live: stopped by {name}; no partial output was kept", file=sys.stderr)
            return 128 + e.signum
        print("sayanything-live: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
