"""Voice activity: silero-vad speech probabilities under a hysteresis state machine.

Speech starts after ``speech_start_ms`` of consecutive windows at or above ``threshold`` and is
back-dated to the first of them (so the first syllable is not lost: the playout delay covers
the decision lag). It stops after ``speech_stop_ms`` below ``threshold - 0.15`` and is not
back-dated (the trailing silent windows drive a closing mouth anyway). A time is *final* once
the audio ``speech_start_ms`` past it has been analysed.

silero-vad misses quiet speech: speech whose loudest 32 ms windows sit near -45 dBFS RMS (a
far or low-gain microphone, a quiet dubbing track) scores under 0.5 throughout, and the mouth
then stays at rest. So the windows it is given (not the audio played or fed to the model) are
scaled to bring a peak-hold speech level (decaying 3 dB/s) to ``TARGET_RMS``, with at most
``max_gain_db`` of gain; silero-vad rejects loud noise and hum, so the gain does not invent speech.
"""

from __future__ import annotations

import bisect
from typing import Protocol

import numpy as np

from stream.audio import SAMPLE_RATE_HZ, AudioRing
from stream.config import VadConfig

WINDOW_SAMPLES = 512  # silero-vad's window at 16 kHz (32 ms)
TARGET_RMS = 0.1  # -20 dBFS: the level the loudest recent window is brought to
LEVEL_DECAY = 10 ** (-3.0 / 20 * WINDOW_SAMPLES / SAMPLE_RATE_HZ)  # peak hold falls 3 dB per second


class SpeechProbability(Protocol):
    """Anything that maps consecutive 512-sample 16 kHz windows to speech probabilities."""

    def __call__(self, window: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class SileroProbability:
    """silero-vad's model, loaded from the installed package (no download)."""

    def __init__(self) -> None:
        import torch
        from silero_vad import load_silero_vad

        self._torch = torch
        self._model = load_silero_vad(onnx=False)

    def __call__(self, window: np.ndarray) -> float:
        with self._torch.inference_mode():
            return float(self._model(self._torch.from_numpy(window), SAMPLE_RATE_HZ).item())

    def reset(self) -> None:
        self._model.reset_states()


class Vad:
    """Reads new audio from the ring, runs the probability model per window and keeps a
    timeline of speech segments addressed by media time."""

    def __init__(self, config: VadConfig, ring: AudioRing, prob: SpeechProbability | None = None) -> None:
        self.config = config
        self.ring = ring
        self.prob = prob if prob is not None else (SileroProbability() if config.enabled else None)
        self._next_window = 0  # index of the next window to analyse
        self._speech = False
        self._run = 0  # consecutive windows arguing for a state change
        self._run_start = 0
        self._quiet_start = 0  # in speech: the first window of the quiet run now counting
        self._start_windows = max(1, round(config.speech_start_ms * SAMPLE_RATE_HZ / 1000 / WINDOW_SAMPLES))
        self._stop_windows = max(1, round(config.speech_stop_ms * SAMPLE_RATE_HZ / 1000 / WINDOW_SAMPLES))
        self._max_gain = 10 ** (config.max_gain_db / 20)
        self._level = 0.0  # peak-hold RMS of the windows analysed
        # Sorted change points: (time_s, is_speech). Before the first, silence.
        self._times: list[float] = []
        self._states: list[bool] = []
        # per change point: when the quiet run that ended the speech began (a start: its own time)
        self._quiet: list[float] = []

    @property
    def analysed_until_s(self) -> float:
        return self._next_window * WINDOW_SAMPLES / SAMPLE_RATE_HZ

    @property
    def final_until_s(self) -> float:
        """Speech state is final for all media times before this."""
        if self.prob is None:
            return float("inf")
        lag = self._start_windows * WINDOW_SAMPLES / SAMPLE_RATE_HZ
        return self.analysed_until_s - lag

    @property
    def settled_until_s(self) -> float:
        """Media times before this are past any stop still to be decided: the quiet run that
        could end speech there has been heard to its end (``settled_change_points``)."""
        if self.prob is None:
            return float("inf")
        return self.analysed_until_s - self._stop_windows * WINDOW_SAMPLES / SAMPLE_RATE_HZ

    def update(self) -> None:
        """Analyse every complete window now in the ring."""
        if self.prob is None:
            return
        while (self._next_window + 1) * WINDOW_SAMPLES <= self.ring.end_index:
            w = self._next_window
            p = self.prob(self._levelled(self.ring.read(w * WINDOW_SAMPLES, WINDOW_SAMPLES)))
            self._step(w, p)
            self._next_window += 1

    def _levelled(self, x: np.ndarray) -> np.ndarray:
        """The window scaled towards a steady speech level (see the module docstring)."""
        if self._max_gain <= 1.0:
            return x
        self._level = max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), self._level * LEVEL_DECAY)
        gain = min(self._max_gain, TARGET_RMS / self._level) if self._level > 0 else 1.0
        return np.clip(x * np.float32(gain), -1.0, 1.0).astype(np.float32) if gain > 1.0 else x

    def _step(self, w: int, p: float) -> None:
        c = self.config
        if not self._speech:
            if p >= c.threshold:
                if self._run == 0:
                    self._run_start = w
                self._run += 1
                if self._run >= self._start_windows:
                    self._set(self._run_start, True)
            else:
                self._run = 0
        else:
            if p < c.threshold - 0.15:
                if self._run == 0:
                    self._quiet_start = w
                self._run += 1
                if self._run >= self._stop_windows:
                    self._set(w + 1, False, self._quiet_start)
            else:
                self._run = 0

    def _set(self, window: int, speech: bool, quiet_window: int | None = None) -> None:
        self._speech = speech
        self._run = 0
        t = window * WINDOW_SAMPLES / SAMPLE_RATE_HZ
        # a back-dated start may precede the previous change point; drop what it overrides
        while self._times and self._times[-1] >= t:
            self._times.pop()
            self._states.pop()
            self._quiet.pop()
        self._times.append(t)
        self._states.append(speech)
        self._quiet.append(t if quiet_window is None else quiet_window * WINDOW_SAMPLES / SAMPLE_RATE_HZ)

    def change_points(self) -> tuple[list[float], list[bool]]:
        """Sorted (times, states) at which speech starts (True) or stops (False)."""
        if self.prob is None:
            return [float("-inf")], [True]
        return self._times, self._states

    def settled_change_points(self, tail_s: float) -> tuple[list[float], list[bool]]:
        """``change_points`` with each stop moved back to ``tail_s`` after the quiet run that
        ended the speech began (never later than the stop itself): the silence ``speech_stop_ms``
        waits out before ending speech is silence after all. Final before ``settled_until_s``."""
        if self.prob is None:
            return [float("-inf")], [True]
        times = list(self._times)
        for i, (s, q) in enumerate(zip(self._states, self._quiet, strict=True)):
            if not s and i > 0:
                times[i] = max(min(times[i], q + tail_s), times[i - 1])
        return times, self._states

    def is_speech(self, t_s: float) -> bool:
        if self.prob is None:
            return True  # VAD disabled: every frame is treated as speech
        i = bisect.bisect_right(self._times, t_s) - 1
        return self._states[i] if i >= 0 else False

    def segments(self, end_s: float) -> list[tuple[float, float]]:
        """Speech segments (start_s, end_s) found so far, clipped to ``end_s``."""
        out = []
        for i, (t, s) in enumerate(zip(self._times, self._states, strict=True)):
            if s:
                stop = self._times[i + 1] if i + 1 < len(self._times) else end_s
                out.append((t, min(stop, end_s)))
        return out
