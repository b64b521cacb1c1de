"""Typed configuration. Defaults live here; ``config.toml`` documents them and the CLI reads it.

Each component takes its own section object as constructor argument. Unknown keys and bad
values raise :class:`ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from stream.errors import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """Audio in: everything is converted to 16 kHz mono and kept in a ring buffer."""

    ring_buffer_ms: int = 12000


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detection: silero-vad probabilities under a hysteresis state machine."""

    enabled: bool = True
    threshold: float = 0.5
    speech_start_ms: int = 64
    speech_stop_ms: int = 250
    # the mouth is drawn this far into the silence that ends speech, then fades to rest; the
    # stop is moved back there once it is heard (``speech_stop_ms`` later, inside the playout
    # delay); speech_stop_ms or more draws the whole wait, as the model is run for it anyway
    stop_tail_ms: int = 0
    crossfade_ms: int = 100
    # the mouth in a pause after speech: "reference" (the model's rendering of the reference frame
    # at rest), "held" (the model draws on into the pause, and its drawing at the pause's first
    # frame, closed since the audio is silent, is held still until speech resumes) or "frame" (the
    # reference frame's own pixels, before any speech too: with model.texture "reference" the
    # pause shows them whatever this says)
    pause_mouth: Literal["reference", "held", "frame"] = "held"
    # the VAD's input (only) is brought to a steady speech level, by at most this gain: silero-vad
    # misses quiet speech (a far or low-gain microphone, a quiet dubbing track); 0 turns it off
    max_gain_db: float = 30.0


@dataclass(frozen=True)
class FaceConfig:
    """Face detection, tracking, crop and mouth mask."""

    detect_every_frames: int = 3
    min_confidence: float = 0.5
    select: Literal["largest", "leftmost", "rightmost", "center"] = "largest"
    smoothing: float = 0.3
    crop_scale: float = 1.8
    lost_after_frames: int = 10
    mask_feather_px: int = 6
    mask_width_scale: float = 1.0
    mask_height_scale: float = 1.0
    # the paste's weight is min(1, this x the feathered mask): above 1 the model's pixels are
    # pasted more fully in the feather, where the input's own mouth (the original speaker's, when
    # dubbing) is otherwise blended in; the region the model paints is unchanged
    mask_paste_gain: float = 1.0
    # eye distances: the paste gain falls off from the mouth point as a Gaussian of this width,
    # so only the feather near the lips takes more of the model's pixels; 0: the same everywhere
    mask_paste_radius: float = 0.0
    # the mouth at rest (silence) is pasted through the crop window averaged over this many frames
    # either side: the detector's box breathes with the filmed mouth's jaw, and a still mouth
    # pasted through it would bob with the original speaker; 0 pastes through each frame's own
    steady_rest_frames: int = 8
    # the rest mouth's mask: "union" (the largest over the steady window: it covers the filmed
    # mouth wherever it went, and its edge moves less), "pause" (that union grown over the whole
    # pause so far: its edge does not move back) or "own" (this frame's keypoints: it follows the
    # filmed mouth)
    steady_rest_mask: Literal["own", "union", "pause"] = "pause"
    # what places that steady window: "box" (the detector's box and mouth keypoint, averaged over
    # the window: both move with the filmed jaw) or "eyes" (the eyes, averaged over the window,
    # which do not; the window keeps the size and offset from the eyes of the one the rest mouth
    # was drawn in: the reference frame's, or the held pause drawing's)
    steady_rest_anchor: Literal["box", "eyes"] = "eyes"
    # a held pause's mouth (vad.pause_mouth = "held") glides from its first frame's own crop window,
    # which the drawing before it was pasted through, to the steady one over this many frames,
    # instead of jumping there at once (0: the jump); its mask is the steady one from the start
    rest_glide_frames: int = 6


@dataclass(frozen=True)
class ChunkConfig:
    """How frames are grouped for the model."""

    chunk_frames: int = 8
    overlap_frames: int = 2
    audio_before_ms: int = 200
    audio_after_ms: int = 80


@dataclass(frozen=True)
class ModelConfig:
    """Which lip-sync model runs, and how."""

    name: Literal["identity", "tiny", "tiny-voices", "sayanything"] = "tiny"
    checkpoint: str = ""  # sayanything: a local checkpoint folder (config.json + model.safetensors)
    steps: int = 1
    guidance: float = 1.0  # audio guidance of a many-step teacher (a distilled student ignores it)
    reference_guidance: float = 1.0  # reference (identity) guidance of a teacher
    device: str = "cpu"
    # "auto": bfloat16 where the runtime runs it natively (OpenVINO on a CPU with AVX-512 BF16/AMX), else float32
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # "auto": OpenVINO on the CPU (unless `compile` asks for torch.compile), torch on GPUs
    runtime: Literal["auto", "torch", "openvino"] = "auto"
    # "box": decode only the latent box around the mask (faster); "full": the whole latent (the
    # decoder's normalisations then see what they saw in training: measured a little better)
    decode: Literal["box", "full"] = "box"
    # "reference": every generated mouth gets the reference crop's difference from the model's
    # rendering of it at rest added, so the mask shows the person's own colours and texture with
    # the model's mouth change on top (at rest: the reference itself); "model": the model's pixels
    # "auto": "reference" when the model's rendering of the reference at rest is more than
    # ``texture_auto_delta_e`` (mean CIELAB delta-E over the mask) from the reference itself, i.e.
    # the model cannot draw this face (a photograph, for the tiny model), else "model"
    texture: Literal["auto", "model", "reference"] = "auto"
    texture_auto_delta_e: float = 14.0
    # texture "reference" shows the reference frame's mouth at rest: the frame with the most
    # closed-looking mouth (FaceCropper.mouth_darkness) of the face's first this many seconds; at
    # their end "auto" decides again on that frame, if it is not the first (a stream cut mid-word)
    reference_window_s: float = 2.0
    # the model's pixels shifted by the median colour difference between the reference crop and
    # the model's rendering of it at rest (over the mask): the person's colours, not the model's
    # cast (measured: mouth PSNR +0.4 dB on every split, openness and leak within +-0.02 either
    # way, so not the default; BENCHMARKS.md)
    match_colour: bool = False
    # a checkpoint's personal detail net (``enrol --detail`` trains one on the user's clip: the model's
    # crop brought to the frame's resolution with that person's fine detail, model/detail.py),
    # applied to the model's pixels as they are pasted; "auto": when the checkpoint has one; "off"
    detail: Literal["auto", "off"] = "auto"
    # the model's opening calibration (its config's ``mouth_gain``) replaced by this; 0: the model's
    mouth_gain: float = 0.0
    # the denoiser run twice, with the opening asked for and with the mouth closed, and the
    # output taken this many times as far from the closed one: the mouth the audio asks for gains
    # weight against what the input's own mouth leaks through both (twice the denoiser's cost);
    # 1: off; 0: the model's own (its config's ``mouth_guidance``)
    mouth_guidance: float = 0.0
    # torch.compile the UNet; "reduce-overhead" also captures CUDA graphs
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none"
    seed: int = 0
    # "shared": every frame of a chunk starts from the same noise draw (and every chunk from the
    # same seed), so what changes from frame to frame is what the audio asks for, not the noise;
    # "independent": a draw per frame, as the model was trained
    frame_noise: Literal["shared", "independent"] = "shared"


@dataclass(frozen=True)
class PlayoutConfig:
    """Fixed-delay playout with deadlines, fallbacks and a degrade ladder."""

    delay_ms: int = 800
    fallback: Literal["hold", "rest", "passthrough"] = "hold"
    hold_max_frames: int = 12
    degrade_late_frames: int = 3
    degrade_window_frames: int = 25
    recover_after_frames: int = 125


@dataclass(frozen=True)
class OutputConfig:
    """Encoded output (file sink)."""

    video_codec: Literal["libx264", "mpeg4"] = "libx264"
    crf: int = 20
    audio_codec: Literal["aac"] = "aac"
    audio_sample_rate_hz: int = 48000


@dataclass(frozen=True)
class LiveConfig:
    """Live presenter path (``sayanything-live run``): camera + microphone in, virtual camera +
    delayed audio on an output device (a virtual microphone) out."""

    # camera: a v4l2 path (/dev/video0), an avfoundation index ("0"), a dshow name
    # ("video=Integrated Camera"), or a media file / lavfi graph (tests, demos)
    camera_device: str = ""
    camera_format: str = ""  # PyAV input format; empty: v4l2 / avfoundation / dshow by OS
    camera_width: int = 640
    camera_height: int = 480
    camera_fps: int = 30
    mic_device: str = ""  # sounddevice name or index; empty: the default input
    mic_sample_rate_hz: int = 0  # 0: the device's own rate (any rate is resampled)
    # where the delayed audio goes (the virtual microphone's other end): a sounddevice output
    # name, or a PulseAudio / PipeWire sink name (e.g. a null sink); empty: the default output
    speaker_device: str = ""
    virtual_camera_backend: str = ""  # "v4l2loopback", "obs", "unitycapture"; empty: first available
    virtual_camera_device: str = ""  # e.g. /dev/video10 (v4l2loopback)
    audio_extra_delay_ms: int = 0  # added to the audio delay (negative: less); see `calibrate`
    preview: bool = False  # a local preview window (needs a display)
    retry_max_s: float = 10.0  # camera retries back off up to this


@dataclass(frozen=True)
class BridgeConfig:
    """Translation dubbing (translate_bridge): duration policy and provider limits."""

    max_speed: float = 1.25  # fastest pitch-preserving speed-up of a dub that overruns its span
    tail_s: float = 0.25  # a dub may run this far past its span before it is sped up
    max_lag_s: float = 1.5  # the running delay never exceeds this (the dub's end is cut beyond it)
    deadline_margin_ms: int = 300  # live: gaps become silence this long before they are due
    max_message_bytes: int = 4194304  # one provider message
    max_segment_s: float = 30.0  # one segment's audio


@dataclass(frozen=True)
class ServerConfig:
    """WebRTC server (``sayanything-live serve``): signalling, limits and ICE."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Bearer token required on every signalling request when set (or from $SAYANYTHING_TOKEN);
    # binding an address other than loopback refuses to start without one.
    token: str = ""
    max_sessions: int = 4  # engine sessions (browser peers and WHIP publishers); beyond: 503
    max_viewers: int = 16  # WHEP players
    max_body_bytes: int = 65536  # signalling request bodies (SDP offers are a few kB)
    connect_timeout_s: float = 20.0  # ICE + DTLS must connect within this
    media_timeout_s: float = 10.0  # no media from the peer for this long ends the session
    # STUN/TURN URLs, comma-separated ("stun:host:3478"); empty: none is contacted
    ice_servers: str = ""
    # host addresses offered as ICE candidates, comma-separated; empty: every non-loopback
    # interface. "127.0.0.1" serves a browser on the same machine only (and tests).
    ice_host_addresses: str = ""


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    playout: PlayoutConfig = field(default_factory=PlayoutConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    def __post_init__(self) -> None:
        validate(self)


# Ranges for numeric keys: (min, max), inclusive; None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "audio.ring_buffer_ms": (2000, 600000),
    "vad.threshold": (0.01, 0.99),
    "vad.speech_start_ms": (0, 2000),
    "vad.speech_stop_ms": (0, 5000),
    "vad.stop_tail_ms": (0, 5000),
    "vad.crossfade_ms": (0, 2000),
    "vad.max_gain_db": (0.0, 60.0),
    "model.mouth_gain": (0.0, 4.0),
    "model.mouth_guidance": (0.0, 4.0),
    "model.texture_auto_delta_e": (0.0, 200.0),
    "model.reference_window_s": (0.0, 600.0),
    "face.detect_every_frames": (1, 1000),
    "face.min_confidence": (0.05, 0.99),
    "face.smoothing": (0.0, 0.95),
    "face.crop_scale": (1.0, 4.0),
    "face.lost_after_frames": (0, 10000),
    "face.mask_feather_px": (0, 64),
    "face.mask_width_scale": (0.3, 3.0),
    "face.mask_height_scale": (0.3, 3.0),
    "face.mask_paste_gain": (1.0, 50.0),
    "face.mask_paste_radius": (0.0, 10.0),
    "face.steady_rest_frames": (0, 50),
    "face.rest_glide_frames": (0, 50),
    "chunk.chunk_frames": (1, 64),
    "chunk.overlap_frames": (0, 32),
    "chunk.audio_before_ms": (0, 2000),
    "chunk.audio_after_ms": (0, 1000),
    "model.steps": (1, 100),
    "model.guidance": (0.0, 20.0),
    "model.reference_guidance": (0.0, 20.0),
    "playout.delay_ms": (0, 10000),
    "playout.hold_max_frames": (0, 1000),
    "playout.degrade_late_frames": (1, 1000),
    "playout.degrade_window_frames": (1, 10000),
    "playout.recover_after_frames": (1, 100000),
    "output.crf": (0, 51),
    "output.audio_sample_rate_hz": (8000, 96000),
    "live.camera_width": (16, 8192),
    "live.camera_height": (16, 8192),
    "live.camera_fps": (1, 240),
    "live.mic_sample_rate_hz": (0, 384000),
    "live.audio_extra_delay_ms": (-2000, 2000),
    "live.retry_max_s": (0.1, 600.0),
    "bridge.max_speed": (1.0, 2.0),
    "bridge.tail_s": (0.0, 10.0),
    "bridge.max_lag_s": (0.0, 30.0),
    "bridge.deadline_margin_ms": (20, 5000),
    "bridge.max_message_bytes": (1024, 64 * 1024 * 1024),
    "bridge.max_segment_s": (0.5, 600.0),
    "server.port": (0, 65535),
    "server.max_sessions": (1, 1000),
    "server.max_viewers": (0, 10000),
    "server.max_body_bytes": (1024, 16 * 1024 * 1024),
    "server.connect_timeout_s": (1.0, 600.0),
    "server.media_timeout_s": (1.0, 3600.0),
}


# String keys with a fixed shape: (regular expression, what the message says is allowed).
_PATTERNS: dict[str, tuple[str, str]] = {
    "model.device": (r"cpu|cuda|cuda:\d+|mps", "one of 'cpu', 'cuda', 'cuda:N' (N a GPU index), 'mps'"),
}


def _allowed(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _check_value(key: str, tp: Any, value: Any) -> Any:
    ok: bool
    if get_origin(tp) is Literal:
        ok = value in get_args(tp)
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field type is listed above
        ok = True
    if not ok:
        raise ConfigError(f"config key {key} = {value!r} is invalid: expected {_allowed(tp)}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"config key {key} = {value!r} is invalid: expected a finite number")
    if key in _PATTERNS and not re.fullmatch(_PATTERNS[key][0], value):
        raise ConfigError(f"config key {key} = {value!r} is invalid: expected {_PATTERNS[key][1]}")
    lo, hi = _RANGES.get(key, (None, None))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"config key {key} = {value!r} is out of range: allowed {lo} to {hi}")
    return value


def validate(cfg: Config) -> None:
    """Check ranges and cross-field rules of a fully built config."""
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            _check_value(f"{sec.name}.{f.name}", hints[f.name], getattr(obj, f.name))
    c = cfg.chunk
    if c.overlap_frames >= c.chunk_frames:
        raise ConfigError(
            f"config key chunk.overlap_frames = {c.overlap_frames} must be smaller than "
            f"chunk.chunk_frames = {c.chunk_frames}"
        )


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def from_dict(data: dict[str, Any]) -> Config:
    """Build a config from nested dicts (as TOML parses), rejecting unknown keys."""
    sections = _section_types()
    built: dict[str, Any] = {}
    for name, values in data.items():
        if name not in sections:
            given = (
                ", ".join(f"{name}.{k} = {v!r}" for k, v in values.items())
                if isinstance(values, dict)
                else f"{name} = {values!r}"
            )
            raise ConfigError(
                f"unknown config section [{name}] (in {given}): allowed sections are {', '.join(sections)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{name}] must be a table, got {values!r}")
        cls = sections[name]
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in values.items():
            if key not in names:
                raise ConfigError(f"unknown config key {name}.{key} = {value!r}: allowed keys are {', '.join(names)}")
            kwargs[key] = _check_value(f"{name}.{key}", hints[key], value)
        built[name] = cls(**kwargs)
    return Config(**built)


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value in TOML syntax; bare words are strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} is malformed: use --set section.key=value, e.g. playout.delay_ms=600")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def load(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load defaults, then the TOML file at ``path`` (if any), then ``section.key=value`` overrides."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist: pass an existing TOML file to --config") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a folder: pass a TOML file to --config") from None
        except PermissionError:
            raise ConfigError(f"config file {path} cannot be read (permission denied): fix its permissions") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8 TOML") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML ({e}): fix the syntax") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read ({e.strerror}): pass a readable TOML file") from None
    for text in overrides:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = value
    return from_dict(data)
