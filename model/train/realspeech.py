"""Real read speech with a pseudo-truth mouth track, for a development split (``test_real``):
recordings of people reading (Debian's ``pocketsphinx-testdata``: five LibriVox sentences of
*Sense and Sensibility* and five spoken card names), force-aligned to their transcripts by
pocketsphinx's bundled en-US acoustic model (the ``pocketsphinx`` wheel), which gives each
phone's start to 10 ms.

The alignment is an estimate, not the truth that eSpeak NG and Festival report, so this split
is for choosing between models and settings, never for training. Phones are in the CMU set and
go through the same mapping as Festival's (``model.train.festival.TO_ESPEAK``), so the mouth
track is made as for the other engines.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from model.train.festival import TO_ESPEAK
from stream.errors import ModelError
from translate_bridge.espeak import Phoneme, Utterance

DATA_DIR = "/usr/share/pocketsphinx/test/data"
INSTALL = "apt-get install pocketsphinx-testdata && pip install pocketsphinx==5.1.1"
SETS = ("librivox", "cards")  # folders of DATA_DIR with a transcription file and 16 kHz WAVs


def _transcripts(data_dir: str) -> dict[str, str]:
    """transcript -> WAV path, from the sets' ``<s> words </s> (file id)`` lines."""
    out: dict[str, str] = {}
    for name in SETS:
        folder = os.path.join(data_dir, name)
        path = os.path.join(folder, "transcription" if name == "librivox" else f"{name}.transcription")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                if "(" not in line:
                    continue
                words, _, fid = line.rpartition("(")
                text = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
                wav = os.path.join(folder, fid.strip().rstrip(")") + ".wav")
                if text and os.path.isfile(wav):
                    out[text] = wav
    return out


class RecordedSpeech:
    """The recordings as a speech engine: ``texts`` lists what it can say, and ``synthesize``
    returns the recording of that text with its aligned phones (rate and pitch are the
    reader's own: the arguments are ignored)."""

    def __init__(self, data_dir: str = DATA_DIR) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise ModelError(f"the real-speech split needs pocketsphinx: {INSTALL}") from None
        self._files = _transcripts(data_dir)
        if not self._files:
            raise ModelError(f"no recordings under {data_dir} (the real-speech split): {INSTALL}")
        self.texts = tuple(sorted(self._files))
        self._decoder = Decoder
        self._memo: dict[str, Utterance] = {}

    def synthesize(self, text: str, voice: str = "", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        if text not in self._memo:
            self._memo[text] = self._align(text)
        return self._memo[text]

    def _align(self, text: str) -> Utterance:
        path = self._files.get(text)
        if path is None:
            raise ModelError(f"no recording says {text!r}: pick one of RecordedSpeech.texts")
        with wave.open(path) as w:
            if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ModelError(f"{path}: expected 16 kHz mono 16-bit PCM")
            raw = w.readframes(w.getnframes())
        # a fresh decoder each time: one carries its cepstral mean over from the last utterance,
        # which would make an alignment depend on what was aligned before
        d = self._decoder(lm=None, samprate=16000, loglevel="FATAL")
        d.set_align_text(text)  # first pass: the words' places
        d.start_utt()
        d.process_raw(raw, full_utt=True)
        d.end_utt()
        d.set_alignment()  # second pass: phones within them
        d.start_utt()
        d.process_raw(raw, full_utt=True)
        d.end_utt()
        alignment = d.get_alignment()
        if alignment is None:
            raise ModelError(f"{path}: pocketsphinx could not align it to {text!r}")
        phonemes = [Phoneme(TO_ESPEAK.get(ph.name.lower(), "_"), ph.start / 100.0) for word in alignment for ph in word]
        audio = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
        return Utterance(audio, 16000, tuple(phonemes))
