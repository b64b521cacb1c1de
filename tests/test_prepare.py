"""Real-video preparation (``prepare``), training on its shards (one process and two under
torchrun/DDP) and enrolment, on MP4s rendered from held-out synthetic characters."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_fakes import micro_config

from model.checkpoint import save_checkpoint
from model.network import SayAnythingModel
from model.train.fewstep import FewStepConfig
from model.train.prepare import MANIFEST, Shard, prepare, shard_paths
from model.train.realtrain import enrol, train_on_data
from model.train.shards import ShardStream
from model.train.synth import FPS, SAMPLE_RATE_HZ, make_clip, write_clip_video
from stream.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = micro_config(chunk_frames=4)  # 32 px crops, 4-frame chunks: fast to train


@functools.lru_cache(maxsize=8)
def _clip(seed: int, sentences: int = 2):  # noqa: ANN202
    return make_clip(seed, "test", sentences=(sentences, sentences))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:  # noqa: ANN001
    d = tmp_path_factory.mktemp("videos")
    a, b = _clip(1), _clip(2)
    n = min(len(a.frames), len(b.frames))
    two = np.concatenate([a.frames[:n], b.frames[:n]], 2)
    short = {"frames": a.frames[:40], "audio": a.audio[: 40 * SAMPLE_RATE_HZ // FPS]}
    p = {
        "good1": write_clip_video(a, str(d / "good1.mp4")),
        "good2": write_clip_video(b, str(d / "good2.mp4")),
        "no_audio": write_clip_video(a, str(d / "no_audio.mp4"), audio=np.zeros(0, np.float32)),
        "silent": write_clip_video(a, str(d / "silent.mp4"), audio=np.zeros_like(a.audio)),
        "no_face": write_clip_video(a, str(d / "no_face.mp4"), frames=np.full_like(a.frames, 90)),
        "two_faces": write_clip_video(a, str(d / "two_faces.mp4"), frames=two),
        "short": write_clip_video(a, str(d / "short.mp4"), **short),
        "late_audio": write_clip_video(a, str(d / "late_audio.mp4"), audio_delay_s=0.4),
    }
    # variable frame rate: frame intervals alternate 30 and 50 ms (the same 40 ms on average)
    times = [i * 40 + 10 * (i % 2) for i in range(len(a.frames))]
    p["vfr"] = write_clip_video(a, str(d / "vfr.mp4"), times_ms=times)
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    p["corrupt"] = str(corrupt)
    return p


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory) -> tuple[str, dict]:  # noqa: ANN001
    out = str(tmp_path_factory.mktemp("data") / "DATA")
    seen: list[str] = []
    summary = prepare(list(videos.values()), out, CONFIG, progress=lambda k, n, path, res: seen.append(path))
    return out, summary


def _status(out: str) -> dict[str, dict]:
    with open(os.path.join(out, MANIFEST)) as f:
        clips = json.load(f)["clips"]
    return {os.path.splitext(os.path.basename(k))[0]: v for k, v in clips.items()}


def test_prepare_keeps_good_clips_and_says_why_others_are_skipped(prepared) -> None:  # noqa: ANN001
    out, summary = prepared
    st = _status(out)
    assert {k for k, v in st.items() if v["status"] == "kept"} == {"good1", "good2", "vfr"}
    reasons = {k: v["reason"] for k, v in st.items() if v["status"] == "skipped"}
    assert "no audio" in reasons["no_audio"]
    assert "silence only" in reasons["silent"]
    assert "no usable face" in reasons["no_face"]
    assert "several faces" in reasons["two_faces"]
    assert "too short" in reasons["short"]
    assert "out of sync" in reasons["late_audio"]
    assert "unreadable" in reasons["corrupt"] or "cannot be decoded" in reasons["corrupt"]
    assert summary["clips_kept"] == 3 and summary["clips_skipped"] == 7
    assert summary["chunks"] == sum(v["chunks"] for v in st.values() if v["status"] == "kept")
    assert not os.path.exists(out + ".partial")


def test_shards_are_what_the_engine_sees(prepared) -> None:  # noqa: ANN001
    out, _ = prepared
    paths = shard_paths(out)
    s = Shard.load(paths[0])
    L, R = CONFIG.chunk_frames, CONFIG.resolution_px
    assert s.frames.shape[1:] == (L, R, R, 3) and s.masks.shape[1:] == (L, R, R)
    assert s.audio.shape[1:] == (L, round(280 * SAMPLE_RATE_HZ / 1000))
    assert np.isnan(s.mouth).all() and s.speech.any() and s.masks.max() == 1
    # consecutive frames of a chunk are one frame period apart (25 fps source)
    np.testing.assert_allclose(np.diff(s.times, axis=1), 1 / FPS, atol=1e-6)


def test_variable_frame_rate_keeps_the_source_timestamps(prepared) -> None:  # noqa: ANN001
    out, _ = prepared
    vfr = [p for p in shard_paths(out) if os.path.basename(p).startswith("vfr")]
    times = np.concatenate([Shard.load(p).times for p in vfr])
    gaps = np.round(np.diff(times, axis=1) * 1000).astype(int)
    assert set(np.unique(gaps)) == {30, 50}


def test_prepare_resumes_and_adds_new_clips(prepared, videos, tmp_path) -> None:  # noqa: ANN001
    out, _ = prepared
    seen: list[str] = []
    summary = prepare([videos["good1"], videos["good2"]], out, CONFIG, progress=lambda k, n, p, r: seen.append(p))
    assert seen == [] and summary["clips_kept"] == 3  # nothing redone
    with pytest.raises(InputError, match="preset"):
        prepare([videos["good1"]], out, "tiny")  # a dataset keeps one resolution
    with pytest.raises(InputError, match="does not exist"):
        prepare([str(tmp_path / "nope.mp4")], str(tmp_path / "x"), CONFIG)


def test_shard_stream_splits_shards_over_ranks(prepared) -> None:  # noqa: ANN001
    out, _ = prepared
    paths = shard_paths(out)
    a, b = ShardStream(paths, rank=0, world=2), ShardStream(paths, rank=1, world=2)
    assert set(a.paths).isdisjoint(b.paths) and set(a.paths) | set(b.paths) == set(paths)
    batch = a.next(5)
    assert len(batch) == 5 and batch.frames.shape[1:] == (CONFIG.chunk_frames, 32, 32, 3)


def _micro_checkpoint(path: str) -> str:
    torch.manual_seed(0)
    save_checkpoint(SayAnythingModel(CONFIG), path)
    return path


def _val(out: str) -> list[float]:
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line)["val"] for line in f if "val" in json.loads(line)]


def test_training_on_prepared_data_one_and_two_processes(prepared, tmp_path) -> None:  # noqa: ANN001
    """The same global batch on 1 process and on 2 (torchrun, gloo) gives the same held-out
    loss curve within 15 %, and both fall; the 2-process run writes one checkpoint."""
    data, _ = prepared
    init = _micro_checkpoint(str(tmp_path / "init"))
    one = str(tmp_path / "one")
    tc = FewStepConfig(steps=30, batch_size=4, lr=1e-3, warmup=5, save_every=10)
    train_on_data([data], one, init, tc)
    two = str(tmp_path / "two")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "stream.cli",
           "train", "--data", data, "--init", init, "--out", two, "--steps", "30", "--batch-size", "4", "--lr", "1e-3",
           "--save-every", "10", "--warmup", "5"]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    v1, v2 = _val(one), _val(two)
    assert len(v1) == len(v2) == 4  # steps 0, 10, 20, 30
    assert v1[0] == pytest.approx(v2[0], rel=1e-5)  # same start, same fixed batch
    assert v1[-1] < 0.9 * v1[0] and v2[-1] < 0.9 * v2[0]
    for a, b in zip(v1[1:], v2[1:], strict=True):
        assert abs(a - b) / a < 0.15, (v1, v2)
    assert os.path.isfile(os.path.join(two, "model.safetensors"))
    # a second run resumes at its last step instead of starting again
    tc2 = FewStepConfig(steps=40, batch_size=4, lr=1e-3, warmup=5, save_every=10)
    train_on_data([data], one, init, tc2)
    with open(os.path.join(one, "log.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [0, 10, 20, 30, 40]


def test_enrol_improves_the_held_out_mouth(tmp_path) -> None:  # noqa: ANN001
    """Enrolment on a short clip of a character the model never saw, with a small budget and the
    detail net (``--detail``): the held-out stretch's mouth error falls; the checkpoint loads as
    model.checkpoint, with its detail net when that was kept."""
    clip = _clip(7, sentences=4)
    assert clip.duration_s >= 8
    video = write_clip_video(clip, str(tmp_path / "me.mp4"))
    out = str(tmp_path / "me_model")
    r = enrol(video, out, minutes=1.0, min_seconds=5.0, detail_share=0.12)
    assert r["after"]["psnr_db"] > r["before"]["psnr_db"]
    assert r["train_steps"] > 0 and r["held_out_chunks"] >= 2
    assert os.path.isfile(os.path.join(out, "model.safetensors")) and not os.path.exists(out + ".partial")
    from model import load_model
    from stream.config import load

    # torch runtime: converting the new weights for OpenVINO is tested in test_model.py
    model = load_model(load(None, ["model.steps=1", f"model.checkpoint={out}", "model.runtime=torch"]))
    assert "me_model" in model.name
    # the personal detail net: trained, scored on the held-out stretch, saved only if it helped
    d = r["detail"]
    assert d["steps"] > 0 and d["held_out_frames"] > 0
    assert d["kept"] == (d["vae_after_db"] > d["vae_before_db"])
    assert os.path.isfile(os.path.join(out, "detail.safetensors")) == d["kept"]
    assert (getattr(model, "detail", None) is not None) == d["kept"]


def test_enrol_refuses_unusable_clips_and_leaves_nothing(videos, tmp_path) -> None:  # noqa: ANN001
    for name, what in [("no_face", "no usable face"), ("no_audio", "no audio"), ("short", "too short")]:
        out = str(tmp_path / name)
        with pytest.raises(InputError, match=what) as e:
            enrol(videos[name], out, minutes=1.0, min_seconds=5.0)
        assert "record" in str(e.value) and "\n" not in str(e.value)
        assert not os.path.exists(out) and not os.path.exists(out + ".partial")
    with pytest.raises(InputError, match="parts must be one of appearance, all, anchored"):
        enrol(videos["no_face"], str(tmp_path / "parts"), parts="unet")
    assert not os.path.exists(tmp_path / "parts") and not os.path.exists(str(tmp_path / "parts") + ".partial")


def test_distill_on_prepared_data(prepared, tmp_path) -> None:  # noqa: ANN001
    from stream.cli import main

    data, _ = prepared
    teacher = _micro_checkpoint(str(tmp_path / "teacher"))
    out = str(tmp_path / "student")
    argv = ["distill", "--teacher", teacher, "--out", out, "--data", data, "--iterations", "3", "--batch-size", "2"]
    assert main(argv) == 0
    from model.checkpoint import load_checkpoint

    assert load_checkpoint(out).config.consistency
    # a dataset prepared for another resolution is refused with the fix
    with pytest.raises(InputError, match="prepare it with --preset"):
        train_on_data([data], str(tmp_path / "x"), str(model_dir_tiny()), FewStepConfig(steps=1))


def model_dir_tiny() -> str:
    from model import SHIPPED_WEIGHTS

    return SHIPPED_WEIGHTS["tiny"]
