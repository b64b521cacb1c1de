"""Festival as a second speech engine (model/train/festival.py), kept out of training for the
``test_engines`` evaluation split: deterministic, and its phone timing matches its audio.

Festival is a Debian package (``festival festvox-kallpc16k``); .ci/run installs it and sets
SAYANYTHING_REQUIRE_FESTIVAL=1 so these tests run there instead of skipping.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from speech_checks import assert_phone_timing_matches_the_audio, require_or_skip

from model.train.festival import TO_ESPEAK, Festival
from model.train.synth import VOICES, make_clip

require_or_skip(
    shutil.which("festival") is not None,
    "festival",
    "SAYANYTHING_REQUIRE_FESTIVAL",
    "apt-get install festival festvox-kallpc16k",
)

TEXT = "Maybe we should meet at noon tomorrow."


@pytest.fixture(scope="module")
def festival() -> Festival:
    return Festival()


def test_the_same_text_gives_the_same_audio_and_phones(festival: Festival) -> None:
    a = festival.synthesize("Hello there, how are you?", "kal_diphone", 160)
    b = Festival().synthesize("Hello there, how are you?", "kal_diphone", 160)  # a fresh process, no memo
    assert a.sample_rate_hz == 16000 and a.duration_s > 0.8
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    names = [p.name for p in a.phonemes]
    assert names[0] == "_" and names[-1] == "_" and "h" in names
    assert set(names) <= set(TO_ESPEAK.values())  # every phone mapped to an eSpeak mnemonic


def test_phone_timing_matches_the_audio(festival: Festival) -> None:
    assert_phone_timing_matches_the_audio(
        festival.synthesize(TEXT, "kal_diphone", 160), festival.synthesize(TEXT, "kal_diphone", 110)
    )


def test_an_unseen_engine_clip_opens_the_mouth_while_festival_speaks(festival: Festival) -> None:
    clip = make_clip(10_000, "test_engines", festival, size=64)
    assert clip.voice in VOICES["test_engines"]
    assert clip.speech.any() and (~clip.speech).any()
    assert clip.mouth[clip.speech, 0].mean() > 3 * clip.mouth[~clip.speech, 0].mean()
