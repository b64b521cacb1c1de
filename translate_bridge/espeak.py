"""Speech with known phoneme timing, from eSpeak NG (the library shipped inside the
``espeakng-loader`` wheel, driven through its C API with ctypes: no subprocess, no download).

``synthesize(text, voice, rate_wpm, pitch)`` returns 22.05 kHz mono audio and the phonemes
with their start times, taken from eSpeak NG's own phoneme events, so the mouth truth is
aligned to the audio by construction.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from stream.errors import ModelError

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED, EVENT_PHONEME, EVENT_END = 0, 7, 5
CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH = 1, 3
POS_CHARACTER = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    name: str  # eSpeak NG phoneme mnemonic, e.g. "h", "@", "oU", "_:" (pause)
    start_s: float


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32 mono
    sample_rate_hz: int
    phonemes: tuple[Phoneme, ...]

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate_hz


class ESpeak:
    """One eSpeak NG engine (the C library keeps global state: use it from one place at a time)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ModelError(
                "speech synthesis needs espeakng-loader: pip install 'sayanything-live[bridge]' (or [train])"
            ) from None
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = espeakng_loader.get_data_path().rsplit("/", 1)[0]
        lib = self._lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 500, data_parent.encode(), INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise ModelError(f"eSpeak NG failed to start (data folder {data_parent}): reinstall espeakng-loader")
        self.sample_rate_hz = int(rate)
        self._chunks: list[np.ndarray] = []
        self._memo: dict[tuple[str, str, int, int], Utterance] = {}
        self._phonemes: list[Phoneme] = []
        self._cb = _CALLBACK(self._callback)  # keep a reference: the C side holds the pointer
        lib.espeak_SetSynthCallback(self._cb)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def _callback(self, wav: ctypes.Array, n: int, events: ctypes.Array) -> int:  # type: ignore[type-arg]
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0)
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_PHONEME:
                name = ev.id.string.decode("utf-8", "replace")
                self._phonemes.append(Phoneme(name, ev.audio_position / 1000.0))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str = "en-us", rate_wpm: int = 160, pitch: int = 50) -> Utterance:
        """Speech and phoneme timing. eSpeak NG's output drifts by a few samples between calls
        (its noise sources keep state), so results are memoised: within one engine the same
        request always returns the same utterance, and truth and audio always come from the
        same synthesis."""
        key = (text, voice, int(rate_wpm), int(pitch))
        if key in self._memo:
            return self._memo[key]
        utt = self._synthesize(text, voice, rate_wpm, pitch)
        if len(self._memo) >= 4096:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = utt
        return utt

    def _synthesize(self, text: str, voice: str, rate_wpm: int, pitch: int) -> Utterance:
        with self._lock:
            self._chunks, self._phonemes = [], []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ModelError(f"eSpeak NG voice {voice!r} is unknown: use e.g. 'en-us', 'en-gb-x-rp', 'en-us+f3'")
            self._lib.espeak_SetParameter(PARAM_RATE, int(rate_wpm), 0)
            self._lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
            data = text.encode("utf-8") + b"\0"
            self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            return Utterance(audio, self.sample_rate_hz, tuple(self._phonemes))
