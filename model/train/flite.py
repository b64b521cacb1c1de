"""Flite speech with exact phone timing: a training engine besides eSpeak NG, so that the audio
head hears voices built from recorded people (CMU's diphone and cluster-unit voices) and not
only a formant synthesiser.

Flite (the Debian ``flite`` package, CMU's small C engine) runs as a subprocess. ``-psdur`` prints
every segment with its end time in seconds; these are the times the waveform was built from, so
they are exact. Phone names are the CMU set and go through the same mapping to eSpeak NG
mnemonics as Festival's (``model.train.festival.TO_ESPEAK``), so the truth mouth track is made
the same way for every engine.

Which voices train: ``awb`` (a Scottish English male, cluster units) and ``rms`` (an American
male, diphones). Flite's ``kal``, ``kal16`` and ``slt`` are the speakers of the Festival voices
that the unseen-engine evaluation uses (``kal_diphone``, ``cmu_us_slt_arctic_hts``), so they
never train (``HELD_OUT``): that split keeps both its engine and its speakers unheard.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from model.train.festival import find_program, phones_from_ends, read_pcm16
from stream.errors import ModelError
from translate_bridge.espeak import Utterance

INSTALL = "apt-get install flite"
TRAIN_VOICES = ("awb", "rms")
HELD_OUT = ("kal", "kal16", "slt")  # the Festival evaluation's speakers


class Flite:
    """Flite as a speech engine: ``synthesize(text, voice, rate_wpm, pitch)`` like
    :class:`translate_bridge.espeak.ESpeak`. The rate stretches the durations around 160 words
    per minute; ``pitch`` (0-100, eSpeak NG's scale) sets the mean F0 target of the diphone voice
    (``rms``) from 80 to 160 Hz; the cluster-unit voice (``awb``) keeps its recorded pitch."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = find_program("flite", executable, "Flite", INSTALL)

    def voices(self) -> list[str]:
        p = subprocess.run([self.executable, "-lv"], capture_output=True, text=True, timeout=30)
        return p.stdout.split(":", 1)[-1].split()

    def synthesize(self, text: str, voice: str = "awb", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        if voice in HELD_OUT:
            raise ModelError(
                f"Flite voice {voice!r} is the unseen-engine evaluation's speaker: use one of {TRAIN_VOICES}"
            )
        stretch = float(np.clip(160.0 / max(rate_wpm, 1), 0.6, 1.6))
        f0 = 80.0 + 0.8 * float(np.clip(pitch, 0, 100))
        with tempfile.TemporaryDirectory() as d:
            wav = os.path.join(d, "u.wav")
            cmd = [self.executable, "-voice", voice, "-psdur", "--setf", f"duration_stretch={stretch:.3f}"]
            cmd += ["--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", wav]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if p.returncode != 0 or not os.path.isfile(wav):
                err = (p.stderr or p.stdout).strip().splitlines()
                raise ModelError(f"Flite failed on voice {voice!r}: {err[-1] if err else p.returncode}")
            audio, rate = read_pcm16(wav, "Flite")
        ends = [item.rpartition(":") for item in p.stdout.split()]
        return Utterance(audio, rate, phones_from_ends([(name, float(end)) for name, _, end in ends if name]))
