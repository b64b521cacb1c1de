"""Checks shared by the tests of the speech engines with exact phone timing (Festival, Flite, MBROLA, Kokoro)."""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pytest

from model.train.synth import viseme_of
from model.train.voices import Speech, build_frames
from translate_bridge.espeak import Utterance


def require_or_skip(present: bool, engine: str, env: str, install: str) -> None:
    """At a test module's top: skip the module when ``engine`` is not installed, unless ``env`` is
    1 (.ci/run sets it after installing the engine), where its absence is an error."""
    if present:
        return
    if os.environ.get(env) == "1":
        raise RuntimeError(f"{engine} is required here ({env}=1) but not installed: {install}")
    pytest.skip(f"{engine} is not installed: {install}", allow_module_level=True)


def assert_phone_timing_matches_the_audio(u: Utterance, slow: Utterance) -> None:
    """``u``'s phones are in order inside the audio, silent where they say pause and loud where
    the mouth opens; ``slow`` (the same text at a lower rate) lasts longer."""
    starts = np.array([p.start_s for p in u.phonemes])
    assert starts[0] == 0.0 and np.all(np.diff(starts) > 0) and starts[-1] < u.duration_s
    ends = [*starts[1:], u.duration_s]
    r = u.sample_rate_hz

    def rms(t0: float, t1: float) -> float:
        seg = u.audio[int(t0 * r) : int(t1 * r)]
        return float(np.sqrt(np.mean(seg**2)))

    pauses = [rms(s, e) for p, s, e in zip(u.phonemes, starts, ends, strict=True) if p.name == "_" and e - s > 0.05]
    opens = [rms(s, e) for p, s, e in zip(u.phonemes, starts, ends, strict=True) if viseme_of(p.name)[0] >= 0.5]
    assert pauses and len(opens) >= 5
    assert max(pauses) < 0.1 * float(np.median(opens))  # silence where the segments say pause
    assert slow.duration_s > 1.2 * u.duration_s  # the rate stretches the phones


def assert_training_speech_is_deterministic_and_speaks(
    a: Speech, b: Speech, engine: Literal["flite", "mbrola", "kokoro"], voices: tuple[str, ...]
) -> None:
    """``a`` and ``b``, the same seed of ``engine``'s training speech, are the same utterance by
    one of ``voices``, with the mouth open while it speaks and shut in its pauses; and
    ``build_frames`` cuts that engine's training frames as the engine cuts audio windows."""
    assert a.voice == b.voice and a.voice.removeprefix(f"{engine}:") in voices
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.mouth, b.mouth)
    assert a.speech.any() and (~a.speech).any()
    assert a.mouth[a.speech, 0].mean() > 3 * a.mouth[~a.speech, 0].mean()
    frames = build_frames("train", range(2), 200, 80, engine=engine)
    assert frames.audio.shape == (len(frames.mouth), (200 + 80) * 16)
