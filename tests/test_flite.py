"""Flite as a training speech engine (model/train/flite.py): deterministic, its phone timing
matches its audio, and the speakers of the unseen-engine evaluation never train.

Flite is a Debian package (``flite``); .ci/run installs it and sets SAYANYTHING_REQUIRE_FLITE=1
so these tests run there instead of skipping.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from speech_checks import (
    assert_phone_timing_matches_the_audio,
    assert_training_speech_is_deterministic_and_speaks,
    require_or_skip,
)

from model.train.festival import TO_ESPEAK
from model.train.flite import HELD_OUT, TRAIN_VOICES, Flite
from model.train.voices import build_frames, make_flite_speech
from stream.errors import ModelError

require_or_skip(shutil.which("flite") is not None, "flite", "SAYANYTHING_REQUIRE_FLITE", "apt-get install flite")

TEXT = "Maybe we should meet at noon tomorrow."


@pytest.fixture(scope="module")
def flite() -> Flite:
    return Flite()


@pytest.mark.parametrize("voice", TRAIN_VOICES)
def test_the_same_text_gives_the_same_audio_and_phones(flite: Flite, voice: str) -> None:
    a = flite.synthesize("Hello there, how are you?", voice, 160)
    b = flite.synthesize("Hello there, how are you?", voice, 160)
    assert a.sample_rate_hz == 16000 and a.duration_s > 0.8
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    names = [p.name for p in a.phonemes]
    assert names[0] == "_" and names[-1] == "_" and "h" in names
    assert set(names) <= set(TO_ESPEAK.values())  # every phone mapped to an eSpeak mnemonic


@pytest.mark.parametrize("voice", TRAIN_VOICES)
def test_phone_timing_matches_the_audio(flite: Flite, voice: str) -> None:
    assert_phone_timing_matches_the_audio(flite.synthesize(TEXT, voice, 160), flite.synthesize(TEXT, voice, 110))


def test_the_unseen_engine_speakers_never_train(flite: Flite) -> None:
    assert not set(TRAIN_VOICES) & set(HELD_OUT)
    for voice in HELD_OUT:
        with pytest.raises(ModelError, match="unseen-engine"):
            flite.synthesize(TEXT, voice)
    with pytest.raises(ValueError, match="training only"):
        build_frames("test_english", range(1), 200, 80, engine="flite")


def test_flite_speech_is_deterministic_and_opens_the_mouth_while_it_speaks(flite: Flite) -> None:
    assert_training_speech_is_deterministic_and_speaks(
        make_flite_speech(3, flite), make_flite_speech(3, flite), "flite", TRAIN_VOICES
    )
