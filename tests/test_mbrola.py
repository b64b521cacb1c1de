"""MBROLA as a training speech engine (model/train/mbrola.py): deterministic, every phone mapped
to an eSpeak NG mnemonic, and its phone timing matches its audio.

MBROLA and its English voices are Debian packages in contrib and non-free (``mbrola``,
``mbrola-us1`` ...); .ci/run enables those components, installs them and sets
SAYANYTHING_REQUIRE_MBROLA=1 so these tests run there instead of skipping.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from speech_checks import (
    assert_phone_timing_matches_the_audio,
    assert_training_speech_is_deterministic_and_speaks,
    require_or_skip,
)

from model.train.mbrola import TO_ESPEAK, TRAIN_VOICES, Mbrola, phones_from_pho
from model.train.synth import viseme_of
from model.train.voices import build_frames, make_mbrola_speech
from stream.errors import ModelError

require_or_skip(
    shutil.which("mbrola") is not None and os.path.isfile("/usr/share/mbrola/us1/us1"),
    "mbrola",
    "SAYANYTHING_REQUIRE_MBROLA",
    "apt-get install mbrola mbrola-us1 (non-free)",
)

TEXT = "Maybe we should meet at noon tomorrow."


@pytest.fixture(scope="module")
def mbrola() -> Mbrola:
    return Mbrola()


def test_every_english_voice_is_installed(mbrola: Mbrola) -> None:
    assert mbrola.voices() == list(TRAIN_VOICES)


@pytest.mark.parametrize("voice", TRAIN_VOICES)
def test_the_same_text_gives_the_same_audio_and_phones(mbrola: Mbrola, voice: str) -> None:
    a = mbrola.synthesize("Hello there, how are you? The quick brown fox jumps.", voice, 160)
    b = mbrola.synthesize("Hello there, how are you? The quick brown fox jumps.", voice, 160)
    assert a.sample_rate_hz == 16000 and a.duration_s > 1.5
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    names = [p.name for p in a.phonemes]
    assert names[0] == "h" and names[-1] == "_" and "aU" in names and "oU" in names
    # the voice's SAMPA names that eSpeak NG's mnemonics spell differently are mapped
    assert not set(names) & (set(TO_ESPEAK) - set(TO_ESPEAK.values()))


@pytest.mark.parametrize("voice", TRAIN_VOICES)
def test_phone_timing_matches_the_audio(mbrola: Mbrola, voice: str) -> None:
    assert_phone_timing_matches_the_audio(mbrola.synthesize(TEXT, voice, 160), mbrola.synthesize(TEXT, voice, 110))


def test_the_phone_file_gives_start_times_and_visemes() -> None:
    pho = "; a comment\n_\t100\nh\t70\n@U\t63\t 0 232 80 215\nt_h\t94\n{\t50\n_\t150\n_\t1\n"
    phones, total = phones_from_pho(pho)
    assert [n for n, _ in phones] == ["_", "h", "oU", "t", "a", "_"]
    assert np.allclose([t for _, t in phones], [0.0, 0.1, 0.17, 0.233, 0.327, 0.377])
    assert total == pytest.approx(0.528)
    assert viseme_of("oU") != viseme_of("h") and viseme_of("a") == viseme_of("A:")


def test_a_voice_that_is_not_an_english_training_voice_is_refused(mbrola: Mbrola) -> None:
    with pytest.raises(ModelError, match="use one of"):
        mbrola.synthesize(TEXT, "de1")
    with pytest.raises(ValueError, match="training only"):
        build_frames("test_english", range(1), 200, 80, engine="mbrola")


def test_mbrola_speech_is_deterministic_and_opens_the_mouth_while_it_speaks(mbrola: Mbrola) -> None:
    assert_training_speech_is_deterministic_and_speaks(
        make_mbrola_speech(3, mbrola), make_mbrola_speech(3, mbrola), "mbrola", TRAIN_VOICES
    )
