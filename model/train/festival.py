"""Festival speech with exact phone timing: a second speech engine, kept out of training so an
evaluation can ask whether the model follows a synthesiser it never heard.

Festival (the Debian ``festival`` package, with a voice such as ``festvox-kallpc16k``, a diphone
voice built from recorded human speech, or ``festvox-us-slt-hts``) runs as a subprocess in batch
mode. The phone end times come from the utterance's Segment relation (``utt.save.segs``). They are
the times the waveform was built from, so they are exact, not estimated.

Phone names are the CMU/radio set (``hh ax l ow``). They are mapped to the eSpeak NG mnemonics that
:func:`model.train.synth.viseme_of` reads, so the truth mouth track is made the same way for
both engines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

from stream.errors import ModelError
from translate_bridge.espeak import Phoneme, Utterance

INSTALL = "apt-get install festival festvox-kallpc16k festvox-us-slt-hts"

# CMU / radio phone set -> eSpeak NG mnemonic of the same mouth shape
TO_ESPEAK = {
    "pau": "_", "h#": "_", "brth": "_",
    "p": "p", "b": "b", "m": "m", "em": "m", "f": "f", "v": "v", "th": "T", "dh": "D",
    "sh": "S", "zh": "Z", "ch": "tS", "jh": "dZ", "w": "w", "r": "r", "y": "j",
    "k": "k", "g": "g", "ng": "N", "hh": "h", "t": "t", "d": "d", "dx": "t", "n": "n", "en": "n",
    "nx": "n", "l": "l", "el": "l", "s": "s", "z": "z",
    "aa": "A:", "ae": "a", "ah": "V", "ao": "O:", "aw": "aU", "ax": "@", "axr": "3", "ay": "aI",
    "eh": "E", "er": "3:", "ey": "eI", "ih": "I", "iy": "i:", "ow": "oU", "oy": "OI", "uh": "U",
    "uw": "u:",
}  # fmt: skip


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_program(name: str, executable: str | None, engine: str, install: str) -> str:
    """``executable``, or ``name`` on the PATH, if it is a program; else a one-line ModelError
    naming what to install."""
    exe = executable or shutil.which(name)
    if exe is None or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise ModelError(f"{engine} is not installed: {install}")
    return exe


def read_pcm16(path: str, engine: str) -> tuple[np.ndarray, int]:
    """A 16-bit WAV that ``engine`` wrote -> (float32 mono in [-1, 1], sample rate)."""
    with wave.open(path) as w:
        rate, n, width, channels = w.getframerate(), w.getnframes(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(n)
    if width != 2:
        raise ModelError(f"{engine} wrote {8 * width}-bit audio; expected 16-bit")
    return np.frombuffer(raw, "<i2").reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0, rate


def phones_from_ends(ends: list[tuple[str, float]]) -> tuple[Phoneme, ...]:
    """CMU phones with their end times (seconds), in order -> eSpeak NG phonemes with start times."""
    phonemes, start = [], 0.0
    for name, end in ends:
        phonemes.append(Phoneme(TO_ESPEAK.get(name, name), start))
        start = end
    return tuple(phonemes)


class Festival:
    """Festival as a speech engine: ``synthesize(text, voice, rate_wpm, pitch)`` like
    :class:`translate_bridge.espeak.ESpeak`. ``voice`` is a Festival voice name
    (``kal_diphone``, ``cmu_us_slt_arctic_hts``); ``pitch`` is not used (Festival's intonation
    models set it); the rate stretches the phone durations around 160 words per minute."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = find_program("festival", executable, "Festival", INSTALL)
        self._memo: dict[tuple[str, str, int], Utterance] = {}

    def voices(self) -> list[str]:
        """The installed voices (Festival's ``voice.list``)."""
        out = self._run("(print (voice.list))")
        return out.strip().strip("()").split()

    def _run(self, script: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as fh:
            fh.write(script)
            path = fh.name
        try:
            p = subprocess.run([self.executable, "--batch", path], capture_output=True, text=True, timeout=120)
        finally:
            os.unlink(path)
        if p.returncode != 0 or "SIOD ERROR" in p.stderr or "SIOD ERROR" in p.stdout:
            err = (p.stderr or p.stdout).strip().splitlines()
            raise ModelError(f"Festival failed: {err[-1] if err else p.returncode}")
        return p.stdout

    def synthesize(self, text: str, voice: str = "kal_diphone", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        key = (text, voice, rate_wpm)
        if key in self._memo:
            return self._memo[key]
        stretch = float(np.clip(160.0 / max(rate_wpm, 1), 0.6, 1.6))
        with tempfile.TemporaryDirectory() as d:
            wav, segs = os.path.join(d, "u.wav"), os.path.join(d, "u.segs")
            self._run(
                f"(voice_{voice})\n(Parameter.set 'Duration_Stretch {stretch:.3f})\n"
                f"(set! u (utt.synth (Utterance Text {_scheme_string(text)})))\n"
                f'(utt.save.wave u "{wav}" \'riff)\n(utt.save.segs u "{segs}")\n'
            )
            audio, rate = read_pcm16(wav, "Festival")
            with open(segs) as fh:
                body = fh.read().split("#", 1)[-1]
            rows = [line.split() for line in body.strip().splitlines()]
            phonemes = phones_from_ends([(parts[2], float(parts[0])) for parts in rows if len(parts) >= 3])
        u = Utterance(audio, rate, phonemes)
        self._memo[key] = u
        return u
