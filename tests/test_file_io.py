"""File input/output: decoding odd and broken media, the output's length and streams, the
temporary-name-then-rename write, and the ``file`` / ``demo`` commands.

Every clip is synthesised with PyAV (tests/media.py), 0.2-2 s long, so the whole module runs
in seconds. Outputs are checked by decoding them with PyAV.
"""

from __future__ import annotations

import logging
import os

import media
import numpy as np
import pytest

from model.identity import IdentityModel
from stream import cli, filejob
from stream.config import load
from stream.errors import InputError
from stream.filejob import FileJobResult, run_file
from stream.session import LipSyncSession
from stream.sinks.file import FileSink

FPS = media.FPS
FRAME_S = 1 / FPS


# -- helpers ------------------------------------------------------------------------------
def run(video: str, audio: str, out: str, *overrides: str, model: object = None, **kwargs: object) -> FileJobResult:
    cfg = load(None, list(overrides))
    return run_file(video, audio, out, cfg, model or IdentityModel(), progress=False, **kwargs)  # type: ignore[arg-type]


class Sessions:
    """Records the sessions run_file creates (to look at the tracked face afterwards)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[LipSyncSession] = []
        made = self.made

        class Recording(LipSyncSession):
            def __init__(self, *a: object, **k: object) -> None:
                super().__init__(*a, **k)  # type: ignore[arg-type]
                made.append(self)

        monkeypatch.setattr(filejob, "LipSyncSession", Recording)


class CountingModel(IdentityModel):
    """The identity model, remembering every chunk it was asked to generate."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[object] = []

    def generate(self, chunk, reference, steps):  # noqa: ANN001, ANN201
        self.chunks.append(chunk)
        return super().generate(chunk, reference, steps)


def assert_follows_audio(p: media.Probe, audio_s: float) -> None:
    """The output's video and audio both last as long as the driving audio (within a frame)."""
    assert p.video_streams == 1 and p.audio_streams == 1
    assert abs(p.n_frames - audio_s * FPS) <= 1, (p.n_frames, audio_s)
    assert p.video_end_s is not None and abs(p.video_end_s - audio_s) <= FRAME_S + 1e-6, (p.video_end_s, audio_s)
    assert abs(p.audio_s - audio_s) <= FRAME_S, (p.audio_s, audio_s)


def assert_one_line_input_error(err: InputError, path: str, fix: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert path in msg, msg
    assert fix in msg, msg


def leftovers(folder: str, keep: set[str]) -> list[str]:
    return sorted(set(os.listdir(folder)) - keep)


# -- shared inputs (made once per module) ----------------------------------------------------
@pytest.fixture(scope="module")
def mdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def face_mp4(mdir: str) -> str:
    """1 s of the bundled face, 640x480 H.264, frames numbered in the corner."""
    return media.marked_face_clip(os.path.join(mdir, "face.mp4"), 1.0)


@pytest.fixture(scope="module")
def speech_wav(mdir: str) -> str:
    """1.5 s of the bundled speech (it has speech from the start), 16 kHz mono."""
    return media.write_audio(os.path.join(mdir, "speech.wav"), media.speech(1.5), 16000)


@pytest.fixture(scope="module")
def speech_1s_wav(mdir: str) -> str:
    return media.write_audio(os.path.join(mdir, "speech1.wav"), media.speech(1.0), 16000)


@pytest.fixture(scope="module")
def audio_only_m4a(mdir: str) -> str:
    return media.write_audio(os.path.join(mdir, "voice.m4a"), media.speech(1.0, 48000, 2), 48000, codec="aac")


@pytest.fixture(scope="module")
def video_only_mp4(mdir: str) -> str:
    return media.face_clip(os.path.join(mdir, "silent_film.mp4"), 0.4)


@pytest.fixture(scope="module")
def corrupt_mp4(mdir: str) -> str:
    return media.random_bytes(os.path.join(mdir, "corrupt.mp4"))


@pytest.fixture()
def out_dir(tmp_path: os.PathLike[str]) -> str:
    d = os.path.join(tmp_path, "out")
    os.mkdir(d)
    return d


# -- the media helpers themselves ------------------------------------------------------------
def test_media_helpers_make_what_they_say(mdir: str, face_mp4: str, speech_wav: str) -> None:
    p = media.probe(face_mp4)
    assert (p.video_streams, p.audio_streams, p.width, p.height, p.n_frames) == (1, 0, 640, 480, 25)
    assert [media.read_mark(f) for f in p.frames] == list(range(25))
    a = media.probe(speech_wav)
    assert (a.video_streams, a.audio_streams) == (0, 1)
    assert (a.audio_rate, a.audio_channels, a.audio_samples) == (16000, 1, 24000)
    st = media.write_audio(os.path.join(mdir, "st.wav"), media.tone(0.5, 22050, 2), 22050)
    a = media.probe(st)
    assert (a.audio_rate, a.audio_channels, a.audio_samples) == (22050, 2, 11025)
    lay = media.three_faces_layout()
    assert [p.scale for p in lay] == list(media.THREE_FACES_SCALES)
    assert all(a.box[2] <= b.box[0] for a, b in zip(lay, lay[1:], strict=False))  # side by side


# -- bad input: one clear line -----------------------------------------------------------------
def test_missing_video_is_an_input_error(speech_wav: str, out_dir: str) -> None:
    path = os.path.join(out_dir, "nope.mp4")
    out = os.path.join(out_dir, "o.mp4")
    with pytest.raises(InputError) as ei:
        run(path, speech_wav, out)
    assert_one_line_input_error(ei.value, path, "does not exist: check the path")
    assert leftovers(out_dir, set()) == []


def test_missing_audio_is_an_input_error(face_mp4: str, out_dir: str) -> None:
    path = os.path.join(out_dir, "nope.wav")
    with pytest.raises(InputError) as ei:
        run(face_mp4, path, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, path, "does not exist: check the path")
    assert leftovers(out_dir, set()) == []


def test_corrupt_video_is_an_input_error(corrupt_mp4: str, speech_wav: str, out_dir: str) -> None:
    with pytest.raises(InputError) as ei:
        run(corrupt_mp4, speech_wav, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, corrupt_mp4, "pass a valid")
    assert leftovers(out_dir, set()) == []


def test_empty_video_file_is_an_input_error(speech_wav: str, out_dir: str) -> None:
    path = os.path.join(out_dir, "empty.mp4")
    open(path, "wb").close()
    with pytest.raises(InputError) as ei:
        run(path, speech_wav, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, path, "pass a valid")
    assert leftovers(out_dir, {"empty.mp4"}) == []


def test_corrupt_audio_is_an_input_error(face_mp4: str, mdir: str, out_dir: str) -> None:
    path = media.random_bytes(os.path.join(mdir, "corrupt.wav"), seed=1)
    with pytest.raises(InputError) as ei:
        run(face_mp4, path, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, path, "valid")


def test_audio_only_file_as_video_is_an_input_error(audio_only_m4a: str, speech_wav: str, out_dir: str) -> None:
    with pytest.raises(InputError) as ei:
        run(audio_only_m4a, speech_wav, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, audio_only_m4a, "has no video stream: pass a file with video")
    assert leftovers(out_dir, set()) == []


def test_video_only_file_as_audio_is_an_input_error(face_mp4: str, video_only_mp4: str, out_dir: str) -> None:
    with pytest.raises(InputError) as ei:
        run(face_mp4, video_only_mp4, os.path.join(out_dir, "o.mp4"))
    assert_one_line_input_error(ei.value, video_only_mp4, "has no audio stream: pass a file with audio")
    assert leftovers(out_dir, set()) == []


def test_unknown_video_mode_is_an_input_error(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    with pytest.raises(InputError, match="'bounce' is unknown: use 'loop' or 'hold'"):
        run(face_mp4, speech_wav, os.path.join(out_dir, "o.mp4"), video_mode="bounce")


def test_missing_output_folder_is_an_input_error(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    folder = os.path.join(out_dir, "no", "such")
    with pytest.raises(InputError) as ei:
        run(face_mp4, speech_wav, os.path.join(folder, "o.mp4"))
    assert_one_line_input_error(ei.value, folder, "create it or choose another -o path")
    assert leftovers(out_dir, set()) == []


def test_output_without_extension_is_an_input_error(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    out = os.path.join(out_dir, "result")
    with pytest.raises(InputError) as ei:
        run(face_mp4, speech_wav, out)
    assert_one_line_input_error(ei.value, out, f"use e.g. {out}.mp4")
    assert leftovers(out_dir, set()) == []


@pytest.mark.parametrize("ext", [".wav", ".webm", ".xyz"])
def test_output_container_that_cannot_hold_the_result_is_an_input_error(
    ext: str, face_mp4: str, speech_wav: str, out_dir: str
) -> None:
    out = os.path.join(out_dir, "o" + ext)
    with pytest.raises(InputError) as ei:
        run(face_mp4, speech_wav, out)
    assert_one_line_input_error(ei.value, out, "cannot be written")
    assert "use .mp4, .mkv or .mov" in str(ei.value)
    assert leftovers(out_dir, set()) == []


def test_output_path_that_is_a_folder_is_an_input_error(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    out = os.path.join(out_dir, "o.mp4")
    os.mkdir(out)
    with pytest.raises(InputError) as ei:
        run(face_mp4, speech_wav, out)
    assert_one_line_input_error(ei.value, out, "is a folder: name a file")
    assert os.listdir(out_dir) == ["o.mp4"] and os.listdir(out) == []


# -- truncated video: used up to where it breaks -----------------------------------------------
@pytest.mark.parametrize(
    ("ext", "container_options"),
    [("mp4", {"movflags": "faststart"}), ("mkv", None)],
    ids=["mp4-faststart", "mkv"],
)
def test_truncated_video_is_used_up_to_the_break(
    ext: str,
    container_options: dict[str, str] | None,
    mdir: str,
    speech_1s_wav: str,
    out_dir: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = media.marked_face_clip(os.path.join(mdir, f"whole.{ext}"), 1.0, container_options=container_options)
    cut = media.truncated_copy(full, os.path.join(mdir, f"cut.{ext}"), 0.6)
    n_cut = media.probe(cut, damaged_ok=True).n_frames
    assert 0 < n_cut < 25  # the cut really lost frames, and some still decode
    out = os.path.join(out_dir, "o.mp4")
    with caplog.at_level(logging.WARNING, logger="stream"):
        res = run(cut, speech_1s_wav, out)
    assert res.frames == 25
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and cut in r.getMessage()]
    assert warnings, "a truncated video must be reported with a warning"
    p = media.probe(out)
    assert_follows_audio(p, 1.0)
    # the frames that decode, then (the audio being longer) the clip again from its start
    assert [media.read_mark(f) for f in p.frames] == [i % n_cut for i in range(25)]
    assert leftovers(out_dir, {"o.mp4"}) == []


# -- audio at any rate and channel count -----------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_stereo_audio_at_any_rate_sets_the_output_length(rate: int, mdir: str, face_mp4: str, out_dir: str) -> None:
    seconds = 1.3
    wav = media.write_audio(os.path.join(mdir, f"st{rate}.wav"), media.speech(seconds, rate, 2), rate)
    out = os.path.join(out_dir, "o.mp4")
    res = run(face_mp4, wav, out)
    assert res.duration_s == pytest.approx(seconds, abs=1 / rate)
    assert res.frames == round(seconds * FPS)
    p = media.probe(out, keep_frames=False)
    assert_follows_audio(p, seconds)
    assert p.audio_channels == 2 and p.audio_rate == 48000  # the configured output rate


def test_surround_audio_is_downmixed(mdir: str, face_mp4: str, out_dir: str) -> None:
    wav = media.write_audio(os.path.join(mdir, "six.wav"), media.speech(1.0, 48000, 6), 48000)
    assert media.probe(wav).audio_channels == 6
    out = os.path.join(out_dir, "o.mp4")
    res = run(face_mp4, wav, out)
    assert res.session["generated"] > 0  # the speech was heard
    p = media.probe(out, keep_frames=False)
    assert_follows_audio(p, 1.0)
    assert p.audio_channels == 2


def test_compressed_audio_drives_the_output(audio_only_m4a: str, face_mp4: str, out_dir: str) -> None:
    src = media.probe(audio_only_m4a)
    out = os.path.join(out_dir, "o.mkv")
    run(face_mp4, audio_only_m4a, out)
    assert_follows_audio(media.probe(out, keep_frames=False), src.audio_s)


# -- frame sizes and pixel formats ------------------------------------------------------------
def test_odd_frame_size_is_padded_to_even(mdir: str, speech_1s_wav: str, out_dir: str) -> None:
    src = media.face_clip(os.path.join(mdir, "odd.mkv"), 1.0, size=(641, 479), codec="ffv1")
    sp = media.probe(src)
    assert (sp.width, sp.height) == (641, 479)
    out = os.path.join(out_dir, "o.mp4")
    run(src, speech_1s_wav, out)
    p = media.probe(out)
    assert (p.width, p.height) == (642, 480)
    assert_follows_audio(p, 1.0)
    # padding replicates the edge: the extra column / row equal their neighbours (pre-encoding)
    last = p.frames[0]
    assert np.abs(last[:, 641].astype(int) - last[:, 640].astype(int)).mean() < 4
    assert np.abs(last[479].astype(int) - last[478].astype(int)).mean() < 4
    # and the picture is the input's, not shifted or scaled
    diff = np.abs(p.frames[0][:479, :641].astype(int) - sp.frames[0].astype(int)).mean()
    assert diff < 4


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "ext"),
    [("ffv1", "gray", "mkv"), ("libx264", "yuv444p", "mp4")],
)
def test_gray_and_444_video_work(
    codec: str, pix_fmt: str, ext: str, mdir: str, speech_1s_wav: str, out_dir: str
) -> None:
    src = media.face_clip(os.path.join(mdir, f"{pix_fmt}.{ext}"), 1.0, codec=codec, pix_fmt=pix_fmt)
    sp = media.probe(src)
    out = os.path.join(out_dir, "o.mp4")
    res = run(src, speech_1s_wav, out)
    assert res.session["no_face"] < res.frames  # the face is still found
    p = media.probe(out)
    assert_follows_audio(p, 1.0)
    assert (p.width, p.height) == (640, 480)
    diff = np.abs(p.frames[3].astype(int) - sp.frames[3].astype(int)).mean()
    assert diff < 4
    if pix_fmt == "gray":
        f = p.frames[3].astype(int)
        assert np.abs(f[..., 0] - f[..., 1]).mean() < 3 and np.abs(f[..., 1] - f[..., 2]).mean() < 3


def test_4k_frames_work(mdir: str, out_dir: str) -> None:
    src = media.face_clip(os.path.join(mdir, "uhd.mp4"), 0.2, size=(3840, 2160))
    wav = media.write_audio(os.path.join(mdir, "short.wav"), media.speech(0.2), 16000)
    out = os.path.join(out_dir, "o.mp4")
    res = run(src, wav, out)
    assert res.frames == 5
    assert res.session["no_face"] == 0  # the detector copes with a downscaled 4K frame
    p = media.probe(out)
    assert (p.width, p.height, p.n_frames) == (3840, 2160, 5)


# -- faces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gradient", "noise"])
def test_clip_without_a_face_passes_through(kind: str, mdir: str, speech_1s_wav: str, out_dir: str) -> None:
    src = media.background_clip(os.path.join(mdir, f"{kind}.mp4"), 1.0, kind=kind)
    out = os.path.join(out_dir, "o.mp4")
    res = run(src, speech_1s_wav, out)
    s = res.session
    assert s["passthrough"] == s["no_face"] == res.frames == 25
    assert s["generated"] == s["rest"] == s["hold"] == 0
    p = media.probe(out)
    assert_follows_audio(p, 1.0)
    if kind == "gradient":  # smooth content re-encodes almost losslessly: the output is the input
        sp = media.probe(src)
        for a, b in zip(p.frames, sp.frames, strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_three_faces_the_largest_is_tracked(
    mdir: str, speech_1s_wav: str, out_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, layout = media.three_faces_clip(os.path.join(mdir, "three.mp4"), 1.0)
    largest = max(layout, key=lambda p: p.scale)
    sessions = Sessions(monkeypatch)
    out = os.path.join(out_dir, "o.mp4")
    res = run(src, speech_1s_wav, out)
    (session,) = sessions.made
    from stream.face import MediaPipeFaceDetector

    det = MediaPipeFaceDetector()  # the session's own was closed with it
    dets = det.detect(media.probe(src).frames[0])
    det.close()
    assert len(dets) == 3, "the clip must really show three detectable faces"
    state = session.tracker.state
    assert state is not None
    assert largest.contains(*state.center), (state.center, largest)
    assert res.session["generated"] > 0 and res.session["no_face"] == 0
    p = media.probe(out)
    assert (p.width, p.height) == media.THREE_FACES_SIZE
    assert_follows_audio(p, 1.0)


def test_three_faces_select_rule_is_honoured(
    mdir: str, speech_1s_wav: str, out_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, layout = media.three_faces_clip(os.path.join(mdir, "three.mp4"), 1.0)
    sessions = Sessions(monkeypatch)
    run(src, speech_1s_wav, os.path.join(out_dir, "o.mp4"), "face.select=leftmost")
    state = sessions.made[0].tracker.state
    assert state is not None
    assert layout[0].contains(*state.center) and layout[0].scale != max(p.scale for p in layout)


# -- audio content -----------------------------------------------------------------------------
def test_silent_audio_keeps_every_face_frame_at_rest(mdir: str, face_mp4: str, out_dir: str) -> None:
    wav = media.write_audio(os.path.join(mdir, "silence.wav"), media.silence(1.0, 48000, 2), 48000)
    model = CountingModel()
    out = os.path.join(out_dir, "o.mp4")
    res = run(face_mp4, wav, out, model=model)
    s = res.session
    assert s["chunks_planned"] > 0 and s["chunks_silent"] == s["chunks_planned"]
    assert s["rest"] == res.frames == 25 and s["generated"] == 0
    assert not any(c.speech.any() for c in model.chunks)  # no speech chunk reached the model
    assert_follows_audio(media.probe(out, keep_frames=False), 1.0)


def test_nan_audio_is_replaced_by_silence_and_counted(
    mdir: str, face_mp4: str, out_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = media.speech(1.0, 16000, 1)
    x[4000:4400] = np.nan
    x[9000:9010] = np.inf
    x[12000:12005] = -np.inf
    wav = media.write_audio(os.path.join(mdir, "nan.wav"), x, 16000, codec="pcm_f32le", sample_fmt="flt")
    out = os.path.join(out_dir, "o.mp4")
    with caplog.at_level(logging.WARNING, logger="stream"):
        res = run(face_mp4, wav, out)
    assert res.session["nonfinite_audio_samples"] == 415
    assert any("NaN" in r.getMessage() for r in caplog.records)
    p = media.probe(out, keep_frames=False)
    assert_follows_audio(p, 1.0)


# -- the output lasts as long as the audio ------------------------------------------------------
def test_longer_audio_loops_the_video(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    out = os.path.join(out_dir, "o.mp4")
    res = run(face_mp4, speech_wav, out)
    assert res.frames == 38
    p = media.probe(out)
    assert_follows_audio(p, 1.5)
    assert [media.read_mark(f) for f in p.frames] == [i % 25 for i in range(38)]


def test_longer_audio_holds_the_last_frame_in_hold_mode(face_mp4: str, speech_wav: str, out_dir: str) -> None:
    out = os.path.join(out_dir, "o.mp4")
    res = run(face_mp4, speech_wav, out, video_mode="hold")
    assert res.frames == 38
    p = media.probe(out)
    assert_follows_audio(p, 1.5)
    assert [media.read_mark(f) for f in p.frames] == list(range(25)) + [24] * 13
    held = [f.astype(int) for f in p.frames[25:]]
    assert all(np.abs(h - held[0]).mean() < 1.5 for h in held)  # a still picture


def test_shorter_audio_trims_the_video(mdir: str, speech_1s_wav: str, out_dir: str) -> None:
    long_clip = media.marked_face_clip(os.path.join(mdir, "face2s.mp4"), 2.0)
    sp = media.probe(long_clip, keep_frames=False)
    assert sp.n_frames == 50
    out = os.path.join(out_dir, "o.mp4")
    res = run(long_clip, speech_1s_wav, out)
    assert res.frames == 25
    p = media.probe(out)
    assert_follows_audio(p, 1.0)
    assert [media.read_mark(f) for f in p.frames] == list(range(25))


# -- temporary name, then rename -----------------------------------------------------------------
def test_success_leaves_only_the_requested_file(face_mp4: str, speech_1s_wav: str, out_dir: str) -> None:
    run(face_mp4, speech_1s_wav, os.path.join(out_dir, "o.mp4"))
    assert os.listdir(out_dir) == ["o.mp4"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_run_leaves_no_file(
    exc: type[BaseException], face_mp4: str, speech_wav: str, out_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = os.path.join(out_dir, "o.mp4")
    seen: list[tuple[bool, bool, str]] = []
    real_write = FileSink.write_video

    def failing_write(self: FileSink, frame: object) -> None:
        real_write(self, frame)  # type: ignore[arg-type]
        # while writing, the data goes to a temporary file beside the target, not to the target
        seen.append((os.path.exists(self.tmp_path), os.path.exists(out), os.path.dirname(self.tmp_path)))
        if len(seen) == 10:
            raise exc("disk on fire")

    monkeypatch.setattr(FileSink, "write_video", failing_write)
    with pytest.raises(exc, match="disk on fire"):
        run(face_mp4, speech_wav, out)
    assert len(seen) == 10
    assert all(tmp_exists and not out_exists for tmp_exists, out_exists, _ in seen)
    assert {d for _, _, d in seen} == {out_dir}
    assert os.listdir(out_dir) == []


def test_failure_mid_run_keeps_an_existing_file(
    face_mp4: str, speech_wav: str, out_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = os.path.join(out_dir, "o.mp4")
    with open(out, "wb") as fh:
        fh.write(b"previous result")

    def failing_write(self: FileSink, frame: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(FileSink, "write_video", failing_write)
    with pytest.raises(RuntimeError):
        run(face_mp4, speech_wav, out)
    assert os.listdir(out_dir) == ["o.mp4"]
    with open(out, "rb") as fh:
        assert fh.read() == b"previous result"


def test_failure_while_starting_the_session_leaves_no_file(
    face_mp4: str, speech_wav: str, out_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or any error) while the detector / VAD load, after the output was opened."""

    class Interrupted(LipSyncSession):
        def __init__(self, *a: object, **k: object) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(filejob, "LipSyncSession", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(face_mp4, speech_wav, os.path.join(out_dir, "o.mp4"))
    assert os.listdir(out_dir) == []


# -- the command line ------------------------------------------------------------------------------
def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sayanything-live: error: ")
    return lines[0]


def test_cli_file_missing_video_exits_2_with_one_line(
    speech_wav: str, out_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = os.path.join(out_dir, "missing.mp4")
    out = os.path.join(out_dir, "o.mp4")
    assert cli.main(["file", missing, speech_wav, "-o", out]) == 2
    line = one_error_line(capsys)
    assert missing in line and "does not exist" in line
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("case", ["corrupt-video", "audio-as-video", "video-as-audio", "missing-audio", "wav-output"])
def test_cli_file_bad_inputs_exit_2_with_one_line(
    case: str,
    corrupt_mp4: str,
    audio_only_m4a: str,
    video_only_mp4: str,
    face_mp4: str,
    speech_wav: str,
    out_dir: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = os.path.join(out_dir, "missing.wav")
    out = os.path.join(out_dir, "o.mp4")
    wav_out = os.path.join(out_dir, "o.wav")
    video, audio, bad = {
        "corrupt-video": (corrupt_mp4, speech_wav, corrupt_mp4),
        "audio-as-video": (audio_only_m4a, speech_wav, audio_only_m4a),
        "video-as-audio": (face_mp4, video_only_mp4, video_only_mp4),
        "missing-audio": (face_mp4, missing, missing),
        "wav-output": (face_mp4, speech_wav, wav_out),
    }[case]
    if case == "wav-output":
        out = wav_out
    assert cli.main(["file", video, audio, "-o", out]) == 2
    assert bad in one_error_line(capsys)
    assert os.listdir(out_dir) == []


def test_cli_file_writes_output_and_summary(
    face_mp4: str, speech_wav: str, out_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = os.path.join(out_dir, "dub.mp4")
    assert cli.main(["file", face_mp4, speech_wav, "-o", out, "--video-mode", "hold"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}: 38 frames, 1.50 s" in stdout
    p = media.probe(out)
    assert_follows_audio(p, 1.5)
    assert [media.read_mark(f) for f in p.frames][-3:] == [24, 24, 24]


def test_cli_interrupt_exits_130_and_keeps_nothing(
    face_mp4: str, speech_wav: str, out_dir: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_write(self: FileSink, frame: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(FileSink, "write_video", interrupted_write)
    assert cli.main(["file", face_mp4, speech_wav, "-o", os.path.join(out_dir, "o.mp4")]) == 130
    assert "no partial output was kept" in capsys.readouterr().err
    assert os.listdir(out_dir) == []


def test_cli_demo_writes_a_synced_file_with_the_shipped_model(out_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    """README command (a): the bundled character and speech through the engine with the shipped
    model, end to end."""
    out = os.path.join(out_dir, "demo.mp4")
    assert cli.main(["demo", "-o", out]) == 0
    stdout = capsys.readouterr().out
    assert "model 'sayanything-tiny (shipped)'" in stdout and "identity" not in stdout
    assert f"wrote {out}:" in stdout
    gen = int(stdout.split("frames: ")[1].split(" from the model")[0])
    assert gen > 20 and "0 passed through" in stdout and "(0 model errors)" in stdout
    speech_s = media.probe(media.SAMPLE_SPEECH).audio_s
    p = media.probe(out, keep_frames=False)
    demo_clip = media.probe(os.path.join(media.ASSETS, "character.mp4"), keep_frames=False)
    assert (p.width, p.height) == (demo_clip.width, demo_clip.height)
    assert_follows_audio(p, speech_s)
    assert os.listdir(out_dir) == ["demo.mp4"]


# -- hardening: outputs that would destroy an input, write errors, signals, tiny audio, VFR ----
def _sha(path: str) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if the CLI loads the model: the checks under test must come before it."""

    def refuse(cfg: object) -> None:
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "_model", refuse)


def test_output_that_is_one_of_the_inputs_is_refused_before_the_model_loads(
    mdir: str,
    face_mp4: str,
    speech_wav: str,
    tmp_path,
    capsys,
    monkeypatch,  # noqa: ANN001
) -> None:
    import shutil

    video = shutil.copy(face_mp4, str(tmp_path / "v.mp4"))
    audio_mp4 = shutil.copy(face_mp4, str(tmp_path / "a.mp4"))  # an .mp4 can be the audio too
    link = tmp_path / "same-as-v.mp4"
    os.symlink(video, link)
    before = {p: _sha(p) for p in (video, audio_mp4)}
    _no_model(monkeypatch)
    for args in (
        ["file", video, speech_wav, "-o", video],
        ["file", video, audio_mp4, "-o", audio_mp4],
        ["file", video, speech_wav, "-o", str(link)],
        ["demo", "--video", video, "-o", video],
    ):
        assert cli.main(args) == 2, args
        line = one_error_line(capsys)
        assert "is one of the inputs" in line and "choose another -o" in line, line
    assert {p: _sha(p) for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "same-as-v.mp4", "v.mp4"]


def test_bad_inputs_are_reported_before_the_model_loads(
    face_mp4: str,
    speech_wav: str,
    corrupt_mp4: str,
    out_dir: str,
    capsys,
    monkeypatch,  # noqa: ANN001
) -> None:
    _no_model(monkeypatch)
    out = os.path.join(out_dir, "o.mp4")
    for args, says in (
        (["file", face_mp4, os.path.join(out_dir, "nope.wav"), "-o", out], "does not exist"),
        (["file", corrupt_mp4, speech_wav, "-o", out], corrupt_mp4),
        (["file", face_mp4, speech_wav, "-o", os.path.join(out_dir, "no", "o.mp4")], "does not exist"),
        (["demo", "--audio", corrupt_mp4, "-o", out], corrupt_mp4),
    ):
        assert cli.main(args) == 2, args
        assert says in one_error_line(capsys)
    assert os.listdir(out_dir) == []


def test_audio_shorter_than_one_frame_is_an_error_not_a_near_empty_video(
    mdir: str,
    face_mp4: str,
    out_dir: str,
    capsys,  # noqa: ANN001
) -> None:
    tiny = media.write_audio(os.path.join(mdir, "tiny.wav"), media.speech(0.01), 16000)
    assert cli.main(["file", face_mp4, tiny, "-o", os.path.join(out_dir, "o.mp4")]) == 2
    line = one_error_line(capsys)
    assert tiny in line and "shorter than one video frame" in line and "pass longer audio" in line
    assert os.listdir(out_dir) == []


def test_a_variable_frame_rate_video_keeps_its_source_timestamps(mdir: str, out_dir: str, caplog) -> None:  # noqa: ANN001
    """Frame gaps alternating 30 and 50 ms stay 30 and 50 ms in the output (not re-timed to a
    constant 40 ms), with no 'truncated' warning."""
    from fractions import Fraction

    import av

    n = 26
    times = [sum(30 if i % 2 == 0 else 50 for i in range(k)) for k in range(n)]  # 0, 30, 80, 110, ...
    path = os.path.join(mdir, "vfr.mkv")
    frames = media.mark(media.face_frames(n))
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height = 640, 480
        st.pix_fmt = "yuv420p"
        st.options = {"preset": "ultrafast"}
        st.codec_context.time_base = Fraction(1, 1000)
        for img, t in zip(frames, times, strict=True):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    audio = media.write_audio(os.path.join(mdir, "vfr.wav"), media.speech(times[-1] / 1000 + 0.04), 16000)
    out = os.path.join(out_dir, "o.mp4")
    with caplog.at_level(logging.WARNING):
        res = run(path, audio, out)
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    assert res.frames == n
    with av.open(out) as c:
        got = [(float(f.pts * f.time_base), media.read_mark(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    assert [m for _, m in got] == list(range(n))
    gaps = np.diff([t for t, _ in got]) * 1000
    assert np.allclose(gaps, np.diff(times), atol=1.5), gaps


def _cli_subprocess(args: list[str], preexec: object = None, **kw: object):  # noqa: ANN202
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_a_write_error_mid_run_is_one_line_and_keeps_no_partial_file(face_mp4: str, mdir: str, out_dir: str) -> None:
    """A file-size limit hit while encoding (EFBIG, errno 27: what a full disk looks like too)."""
    import resource
    import signal

    long_wav = media.write_audio(os.path.join(mdir, "speech6.wav"), np.tile(media.speech(1.5), (4, 1)), 16000)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    out = os.path.join(out_dir, "o.mp4")
    p = _cli_subprocess(["file", face_mp4, long_wav, "-o", out, "--set", "model.name=identity"], small_files)
    _, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, err
    assert "could not be written (the file grew past the file system's size limit)" in lines[0], lines
    assert os.listdir(out_dir) == []


def test_a_read_only_output_folder_is_one_line_before_any_work(
    face_mp4: str,
    speech_wav: str,
    tmp_path,
    monkeypatch,
    capsys,  # noqa: ANN001
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the file system's answer for another user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(ro) else real_access(p, m))
    _no_model(monkeypatch)
    assert cli.main(["file", face_mp4, speech_wav, "-o", str(ro / "o.mp4")]) == 2
    line = one_error_line(capsys)
    assert f"output folder {ro} is not writable" in line, line
    assert os.listdir(ro) == []


def test_a_target_that_cannot_be_replaced_keeps_the_finished_video(
    face_mp4: str,
    speech_1s_wav: str,
    out_dir: str,
    monkeypatch,
    capsys,  # noqa: ANN001
) -> None:
    """An immutable or locked target at the final rename: the run's work is not lost."""
    target = os.path.join(out_dir, "o.mp4")
    real_replace = os.replace

    def locked(src: str, dst: str) -> None:
        if dst == target:
            raise PermissionError(1, "Operation not permitted")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", locked)
    assert cli.main(["file", face_mp4, speech_1s_wav, "-o", target, "--set", "model.name=identity"]) == 2
    line = one_error_line(capsys)
    kept = os.path.join(out_dir, "o.new.mp4")
    assert "could not be replaced (Operation not permitted)" in line and kept in line, line
    assert os.listdir(out_dir) == ["o.new.mp4"]
    assert media.probe(kept, keep_frames=False).n_frames == 25


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_mid_run_leave_no_temporary_file_and_inputs_untouched(
    sig: str, face_mp4: str, mdir: str, out_dir: str
) -> None:
    import signal
    import time

    long_wav = media.write_audio(os.path.join(mdir, "speech30.wav"), np.tile(media.speech(1.5), (20, 1)), 16000)
    before = (_sha(face_mp4), _sha(long_wav))
    out = os.path.join(out_dir, "o.mp4")
    p = _cli_subprocess(["file", face_mp4, long_wav, "-o", out, "--set", "model.name=identity", "--realtime"])
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.startswith(".o.part") for n in os.listdir(out_dir)):
        time.sleep(0.05)
    assert os.listdir(out_dir), "the run never started writing"
    time.sleep(0.5)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + getattr(signal, sig), (p.returncode, err)
    assert f"stopped by {sig}; no partial output was kept" in err
    assert os.listdir(out_dir) == []
    assert (_sha(face_mp4), _sha(long_wav)) == before
