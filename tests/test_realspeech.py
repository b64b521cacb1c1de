"""Real read speech for the ``test_real`` development split (model/train/realspeech.py): the
recordings of Debian's pocketsphinx-testdata, force-aligned by pocketsphinx. The alignment is
deterministic and its phones lie where the recording has speech.

.ci/run installs the package (and the test extras the wheel) and sets
SAYANYTHING_REQUIRE_REALSPEECH=1, so these tests run there instead of skipping.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from speech_checks import require_or_skip

from model.train.realspeech import DATA_DIR, INSTALL
from model.train.synth import FPS, make_clip

try:
    import pocketsphinx  # noqa: F401

    have = os.path.isdir(os.path.join(DATA_DIR, "librivox"))
except ImportError:
    have = False
require_or_skip(have, "the real-speech recordings", "SAYANYTHING_REQUIRE_REALSPEECH", INSTALL)

from model.train.realspeech import RecordedSpeech  # noqa: E402


@pytest.fixture(scope="module")
def speech() -> RecordedSpeech:
    return RecordedSpeech()


def test_alignment_is_deterministic_and_covers_the_recording(speech: RecordedSpeech) -> None:
    assert len(speech.texts) >= 8
    text = "he was not an ill disposed young man"
    a = speech.synthesize(text)
    b = RecordedSpeech().synthesize(text)  # a fresh decoder, no memo
    assert a.sample_rate_hz == 16000 and np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes
    starts = [p.start_s for p in a.phonemes]
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] < a.duration_s
    assert [p.name for p in a.phonemes].count("m") >= 1  # "man"


def test_aligned_phones_sit_on_the_speech(speech: RecordedSpeech) -> None:
    """Frames the alignment calls speech are far louder than those it calls pauses."""
    clip = make_clip(10_000, "test_real", speech)
    hop = 16000 // FPS
    rms = np.array([np.sqrt(np.mean(clip.audio[i * hop : (i + 1) * hop] ** 2)) + 1e-6 for i in range(len(clip.speech))])
    db = 20 * np.log10(rms)
    assert clip.speech.any() and (~clip.speech).any()
    assert np.median(db[clip.speech]) > np.median(db[~clip.speech]) + 15
    again = make_clip(10_000, "test_real", RecordedSpeech())
    assert np.array_equal(again.mouth, clip.mouth) and np.array_equal(again.audio, clip.audio)
