"""MBROLA speech with exact phone timing: a third training engine, diphones recorded from people
and resynthesised by MBROLA, so that the audio head hears a kind of voice that is neither eSpeak
NG's formant synthesis nor Flite's.

eSpeak NG's program (the Debian ``espeak-ng`` package) turns text into an MBROLA phone file
(``--pho``): one phone per line, its duration in milliseconds and pitch points. The ``mbrola``
program (Debian ``mbrola``, contrib) then builds the waveform from that file with a voice
database (``mbrola-us1``, ``mbrola-us2``, ``mbrola-us3``, ``mbrola-en1``, non-free). The waveform is
made from those durations, so the phone times are exact by construction.

Phone names are the voice's SAMPA; the few that differ from the eSpeak NG mnemonics that
:func:`model.train.synth.viseme_of` reads are mapped (``TO_ESPEAK``), so the truth mouth track is
made the same way for every engine.

The MBROLA voices are not the speakers of the Festival voices that the unseen-engine evaluation
uses (``kal_diphone``, ``cmu_us_slt_arctic_hts``), and the unseen languages' MBROLA voices are
not used: only English voices train.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from model.train.festival import find_program, read_pcm16
from stream.errors import ModelError
from translate_bridge.espeak import Phoneme, Utterance

INSTALL = (
    "enable Debian's contrib and non-free components, then "
    "apt-get install espeak-ng mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1"
)
VOICE_DIR = "/usr/share/mbrola"
TRAIN_VOICES = ("us1", "us2", "us3", "en1")

# MBROLA SAMPA -> eSpeak NG mnemonic, where they differ
TO_ESPEAK = {
    "_": "_", "t_h": "t", "p_h": "p", "k_h": "k", "r=": "3:", "@`": "3", "3`": "3:", "@U": "oU",
    "EI": "eI", "A": "A:", "u": "u:", "i": "i:", "{": "a", "Q": "0", "I@": "i@", "4": "t",
    "l=": "l", "n=": "n", "m=": "m", "?": "?", "AI": "aI", "5": "l",
}  # fmt: skip


def phones_from_pho(pho: str) -> tuple[list[tuple[str, float]], float]:
    """An MBROLA phone file -> ([(eSpeak NG mnemonic, start s)], total duration s); a pause that
    follows a pause joins it."""
    out: list[tuple[str, float]] = []
    t = 0.0
    for line in pho.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(";"):
            continue
        name = TO_ESPEAK.get(parts[0], parts[0])
        if not (name == "_" and out and out[-1][0] == "_"):  # eSpeak NG ends a pause with a 1 ms "_"
            out.append((name, t))
        t += float(parts[1]) / 1000.0
    return out, t


class Mbrola:
    """MBROLA as a speech engine: ``synthesize(text, voice, rate_wpm, pitch)`` like
    :class:`translate_bridge.espeak.ESpeak`. ``voice`` is an MBROLA English voice (``us1``,
    ``us2``, ``us3``, ``en1``); the rate and pitch (0-100) are eSpeak NG's, which writes the
    durations and the pitch points MBROLA follows."""

    def __init__(self, espeak: str | None = None, mbrola: str | None = None, voice_dir: str = VOICE_DIR) -> None:
        self.espeak = find_program("espeak-ng", espeak, "eSpeak NG's program", INSTALL)
        self.mbrola = find_program("mbrola", mbrola, "MBROLA", INSTALL)
        self.voice_dir = voice_dir

    def voices(self) -> list[str]:
        """The installed voices among :data:`TRAIN_VOICES`."""
        return [v for v in TRAIN_VOICES if os.path.isfile(os.path.join(self.voice_dir, v, v))]

    def synthesize(self, text: str, voice: str = "us1", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        if voice not in TRAIN_VOICES:
            raise ModelError(f"MBROLA voice {voice!r}: use one of {TRAIN_VOICES}")
        database = os.path.join(self.voice_dir, voice, voice)
        if not os.path.isfile(database):
            raise ModelError(f"MBROLA voice {voice!r} is not installed: apt-get install mbrola-{voice}")
        cmd = [self.espeak, "-q", "--pho", "-v", f"mb-{voice}", "-s", str(int(rate_wpm)), "-p", str(int(pitch))]
        p = subprocess.run([*cmd, text], capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or not p.stdout.strip():
            raise ModelError(f"eSpeak NG wrote no MBROLA phones for voice {voice!r}: {p.stderr.strip()[-200:]}")
        with tempfile.TemporaryDirectory() as d:
            pho, wav = os.path.join(d, "u.pho"), os.path.join(d, "u.wav")
            with open(pho, "w") as fh:
                fh.write(p.stdout)
            q = subprocess.run([self.mbrola, "-e", database, pho, wav], capture_output=True, text=True, timeout=60)
            if q.returncode != 0 or not os.path.isfile(wav):
                err = (q.stderr or q.stdout).strip().splitlines()
                raise ModelError(f"MBROLA failed on voice {voice!r}: {err[-1] if err else q.returncode}")
            audio, rate = read_pcm16(wav, "MBROLA")
        phones, _ = phones_from_pho(p.stdout)
        return Utterance(audio, rate, tuple(Phoneme(name, start) for name, start in phones))
