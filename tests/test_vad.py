"""Voice activity: the real silero model on the bundled speech, and the hysteresis state machine
driven by a scripted probability."""

from __future__ import annotations

import os

import numpy as np
import pytest

import stream
from stream.audio import SAMPLE_RATE_HZ, AudioInput, AudioRing
from stream.config import VadConfig
from stream.sources.file import audio_blocks, read_audio
from stream.vad import WINDOW_SAMPLES, SileroProbability, Vad

SPEECH_WAV = os.path.join(os.path.dirname(stream.__file__), "assets", "sample_speech.wav")
WIN_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ  # 32 ms


class ScriptedProbability:
    """Probability per window from a list (0 past its end); counts calls and resets."""

    def __init__(self, probs: list[float]) -> None:
        self.probs = probs
        self.calls = 0
        self.resets = 0

    def __call__(self, window: np.ndarray) -> float:
        assert window.shape == (WINDOW_SAMPLES,)
        p = self.probs[self.calls] if self.calls < len(self.probs) else 0.0
        self.calls += 1
        return p

    def reset(self) -> None:
        self.resets += 1


def scripted_vad(probs: list[float], **cfg: object) -> Vad:
    """A Vad over a ring holding exactly len(probs) windows, all analysed."""
    ring = AudioRing(60000)
    vad = Vad(VadConfig(**cfg), ring, ScriptedProbability(probs))  # type: ignore[arg-type]
    ring.write(0, np.zeros(len(probs) * WINDOW_SAMPLES, np.float32))
    vad.update()
    return vad


# -- the real model on real speech ----------------------------------------------------------
@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    return read_audio(SPEECH_WAV)


def energy_segments(x: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """Where the waveform has energy, with pauses shorter than 0.4 s bridged."""
    assert rate == SAMPLE_RATE_HZ
    mono = x.mean(axis=1)
    n = mono.shape[0] // WINDOW_SAMPLES
    rms = np.sqrt(np.mean(mono[: n * WINDOW_SAMPLES].reshape(n, WINDOW_SAMPLES) ** 2, axis=1))
    active = np.flatnonzero(rms > 0.005)
    segs: list[list[int]] = []
    for w in active:
        if segs and (w - segs[-1][1]) * WIN_S < 0.4:
            segs[-1][1] = w
        else:
            segs.append([w, w])
    return [(a * WIN_S, (b + 1) * WIN_S) for a, b in segs]


def test_bundled_speech_has_two_sentences(speech: tuple[np.ndarray, int]) -> None:
    # check the asset is what the VAD test below assumes
    x, rate = speech
    assert rate == 16000 and x.shape[1] == 1
    segs = energy_segments(x, rate)
    assert len(segs) == 2
    assert 0.4 <= segs[0][0] <= 0.6
    assert segs[1][0] - segs[0][1] >= 1.3  # the 1.5 s pause
    assert x.shape[0] / rate - segs[1][1] >= 0.4


def _silero_run(x: np.ndarray, rate: int, **cfg: float) -> tuple[Vad, float]:
    """The real VAD fed ``x`` in 20 ms blocks as a stream would; (the VAD, the stream's end)."""
    ring = AudioRing(15000)
    audio_in = AudioInput(ring)
    vad = Vad(VadConfig(**cfg), ring)  # type: ignore[arg-type]
    assert isinstance(vad.prob, SileroProbability)
    for block in audio_blocks(x, rate, 20):
        audio_in.push(block)
        vad.update()
    audio_in.close()
    vad.update()
    return vad, ring.end_s


def test_silero_finds_exactly_the_two_sentences(speech: tuple[np.ndarray, int]) -> None:
    x, rate = speech
    vad, end_s = _silero_run(x, rate)

    found = vad.segments(end_s)
    truth = energy_segments(x, rate)
    assert len(found) == 2, found
    for (a, b), (ta, tb) in zip(found, truth, strict=True):
        assert abs(a - ta) <= 0.15  # onset back-dated to where speech begins
        assert tb - 0.15 <= b <= tb + 0.5  # offset after the stop hangover (250 ms)
    # the pause between them is silence, all of it final
    gap_a, gap_b = found[0][1], found[1][0]
    assert gap_b - gap_a >= 1.0
    assert vad.final_until_s > gap_b
    for t in np.arange(gap_a + 0.01, gap_b, 0.05):
        assert not vad.is_speech(float(t))
    for t in (0.1, end_s - 0.1):
        assert not vad.is_speech(t)
    assert vad.is_speech((found[0][0] + found[0][1]) / 2) and vad.is_speech((found[1][0] + found[1][1]) / 2)
    assert vad.change_points() == ([found[0][0], found[0][1], found[1][0], found[1][1]], [True, False, True, False])


def _silero_segments(x: np.ndarray, rate: int, **cfg: float) -> list[tuple[float, float]]:
    vad, end_s = _silero_run(x, rate, **cfg)
    return vad.segments(end_s)


def test_quiet_speech_is_found_like_loud_speech(speech: tuple[np.ndarray, int]) -> None:
    """The same two sentences 40 dB quieter (a far microphone, a quiet dubbing track): silero-vad
    alone misses the first 0.8 s of speech; with the VAD's level normalisation both sentences are
    found where the loud ones are."""
    x, rate = speech
    loud = _silero_segments(x, rate)
    quiet = x * np.float32(10 ** (-40 / 20))
    raw = _silero_segments(quiet, rate, max_gain_db=0.0)
    assert raw[0][0] > loud[0][0] + 0.5
    found = _silero_segments(quiet, rate)
    assert len(found) == len(loud) == 2, found
    for (a, b), (la, lb) in zip(found, loud, strict=True):
        assert abs(a - la) <= 0.1 and abs(b - lb) <= 0.2


def test_silero_reset_gives_repeatable_probabilities(speech: tuple[np.ndarray, int]) -> None:
    x, _ = speech
    prob = SileroProbability()
    windows = [x[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES, 0].copy() for i in range(40, 60)]
    first = [prob(w) for w in windows]
    prob.reset()
    second = [prob(w) for w in windows]
    assert first == pytest.approx(second, abs=1e-6)
    assert max(first) > 0.5  # the middle of the first sentence
    prob.reset()
    assert prob(np.zeros(WINDOW_SAMPLES, np.float32)) < 0.2


# -- hysteresis -----------------------------------------------------------------------------
# speech_start_ms=96 -> 3 windows; speech_stop_ms=256 -> 8 windows; threshold 0.5, stop below 0.35
HYST = {"speech_start_ms": 96, "speech_stop_ms": 256}


def test_window_counts_from_milliseconds() -> None:
    vad = scripted_vad([], **HYST)
    assert (vad._start_windows, vad._stop_windows) == (3, 8)


def test_blips_shorter_than_speech_start_do_not_start_speech() -> None:
    probs = [0.0] * 5 + [0.9, 0.9] + [0.0] * 3 + [0.95, 0.6] + [0.2] + [0.9, 0.9] + [0.0] * 10
    vad = scripted_vad(probs, **HYST)
    assert vad.change_points() == ([], [])
    assert vad.segments(10.0) == []
    assert not any(vad.is_speech(w * WIN_S) for w in range(len(probs)))


def test_onset_is_back_dated_to_the_first_window_of_the_run() -> None:
    probs = [0.1] * 10 + [0.7, 0.5, 0.9, 0.8] + [0.9] * 10
    vad = scripted_vad(probs, **HYST)
    times, states = vad.change_points()
    assert states == [True]
    assert times == [pytest.approx(10 * WIN_S)]
    assert not vad.is_speech(10 * WIN_S - 0.001)
    assert vad.is_speech(10 * WIN_S)


def test_onset_decision_waits_for_the_whole_start_window() -> None:
    vad = scripted_vad([0.0] * 4 + [0.9, 0.9], **HYST)  # run of 2 < 3 so far
    assert vad.change_points() == ([], [])
    vad.ring.write(vad.ring.end_index, np.zeros(WINDOW_SAMPLES, np.float32))
    vad.prob.probs.append(0.9)  # type: ignore[union-attr]
    vad.update()
    assert vad.change_points() == ([pytest.approx(4 * WIN_S)], [True])


def test_dip_shorter_than_speech_stop_does_not_end_speech() -> None:
    probs = [0.9] * 5 + [0.1] * 7 + [0.9] * 3 + [0.2] * 5 + [0.9] * 2
    vad = scripted_vad(probs, **HYST)
    assert vad.change_points() == ([0.0], [True])
    assert all(vad.is_speech(w * WIN_S) for w in range(len(probs)))


def test_probabilities_in_the_hysteresis_band_keep_speech_going() -> None:
    probs = [0.9] * 5 + [0.4] * 30  # below threshold 0.5 but not below 0.35
    vad = scripted_vad(probs, **HYST)
    assert vad.change_points() == ([0.0], [True])


def test_speech_stops_after_speech_stop_without_back_dating() -> None:
    probs = [0.0] * 2 + [0.9] * 6 + [0.1] * 12
    vad = scripted_vad(probs, **HYST)
    times, states = vad.change_points()
    assert states == [True, False]
    assert times[0] == pytest.approx(2 * WIN_S)
    # the dip starts at window 8; its 8th window (15) ends speech at the end of that window
    assert times[1] == pytest.approx(16 * WIN_S)
    assert vad.segments(100.0) == [(pytest.approx(2 * WIN_S), pytest.approx(16 * WIN_S))]


def test_settled_stops_move_back_to_where_their_silence_began() -> None:
    probs = [0.0] * 2 + [0.9] * 6 + [0.1] * 12 + [0.9] * 5 + [0.4] * 3 + [0.1] * 10
    vad = scripted_vad(probs, **HYST)
    times, states = vad.change_points()
    assert states == [True, False, True, False]
    # the first quiet run starts at window 8 and ends speech 8 windows later, at 16; the second
    # starts at 28 (the band 0.35-0.5 at 25-27 neither counts towards a stop nor resets it)
    assert times[1] == pytest.approx(16 * WIN_S) and times[3] == pytest.approx(36 * WIN_S)
    settled, s2 = vad.settled_change_points(2 * WIN_S)
    assert s2 == states
    assert settled == [pytest.approx(t) for t in (2 * WIN_S, 10 * WIN_S, 20 * WIN_S, 30 * WIN_S)]
    # a tail as long as the wait keeps the stops where they were
    assert vad.settled_change_points(1.0)[0] == times
    assert vad.settled_until_s == pytest.approx(vad.analysed_until_s - 8 * WIN_S)


def test_two_segments_and_segments_clipped_to_end() -> None:
    probs = [0.9] * 4 + [0.0] * 10 + [0.9] * 5
    vad = scripted_vad(probs, **HYST)
    assert vad.change_points()[1] == [True, False, True]
    segs = vad.segments(len(probs) * WIN_S)
    assert segs == [
        (pytest.approx(0.0), pytest.approx(12 * WIN_S)),
        (pytest.approx(14 * WIN_S), pytest.approx(19 * WIN_S)),
    ]


def test_final_until_lags_analysed_until_by_the_start_window() -> None:
    vad = scripted_vad([0.0] * 20, **HYST)
    assert vad.analysed_until_s == pytest.approx(20 * WIN_S)
    assert vad.final_until_s == pytest.approx(vad.analysed_until_s - 3 * WIN_S)
    # an incomplete window is not analysed yet
    vad.ring.write(vad.ring.end_index, np.zeros(WINDOW_SAMPLES - 1, np.float32))
    vad.update()
    assert vad.analysed_until_s == pytest.approx(20 * WIN_S)
    vad.ring.write(vad.ring.end_index, np.zeros(1, np.float32))
    vad.update()
    assert vad.analysed_until_s == pytest.approx(21 * WIN_S)
    assert vad.final_until_s == pytest.approx(18 * WIN_S)
    assert vad.prob.calls == 21  # type: ignore[union-attr]


def test_final_state_never_changes_afterwards() -> None:
    # whatever comes later, the state of times before final_until_s stays as it was
    probs = [0.0] * 6 + [0.9] * 3 + [0.0] * 10
    for n in range(1, len(probs) + 1):
        vad = scripted_vad(probs[:n], **HYST)
        final = vad.final_until_s
        full = scripted_vad(probs, **HYST)
        for w in range(n):
            t = w * WIN_S
            if t < final:
                assert vad.is_speech(t) == full.is_speech(t), (n, w)


def test_disabled_vad_treats_everything_as_speech() -> None:
    ring = AudioRing(2000)
    vad = Vad(VadConfig(enabled=False), ring)
    assert vad.prob is None
    ring.write(0, np.zeros(4000, np.float32))
    vad.update()
    assert vad.final_until_s == float("inf")
    assert vad.is_speech(0.0) and vad.is_speech(123.0)
    assert vad.change_points() == ([float("-inf")], [True])
