"""Audio devices (sounddevice / PortAudio, PulseAudio / PipeWire sinks and sources), cameras and
virtual camera backends: lookup by name with clear errors, and the listing of
``sayanything-live devices`` with the set-up command for whatever is missing."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from stream.errors import DeviceError

_ENV_LOCK = threading.Lock()

AUDIO_SETUP = {
    "linux": "sudo apt install libportaudio2 (PortAudio, for sounddevice)",
    "darwin": "brew install portaudio",
    "win32": "pip install --force-reinstall sounddevice (its wheel ships PortAudio)",
}
VIRTUAL_MIC_SETUP = {
    "linux": (
        "pactl load-module module-null-sink sink_name=sayanything_mic "
        "sink_properties=device.description=sayanything_mic  (then pick 'Monitor of sayanything_mic' as the "
        "microphone in the call app; PipeWire's pipewire-pulse takes the same command)"
    ),
    "darwin": 'install BlackHole (brew install blackhole-2ch), then speaker_device = "BlackHole 2ch"',
    "win32": 'install VB-Cable (vb-audio.com/Cable), then speaker_device = "CABLE Input"',
}
VIRTUAL_CAMERA_SETUP = {
    "linux": (
        "sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 video_nr=10 "
        'card_label="sayanything" exclusive_caps=1  (exclusive_caps=1 is needed for browsers; '
        "frame widths must be even)"
    ),
    "darwin": "install OBS Studio 30+ and start its Virtual Camera once (Tools > Start Virtual Camera), then stop it",
    "win32": "install OBS Studio 30+ (its virtual camera) or Unity Capture",
}


def _os() -> str:
    return "darwin" if sys.platform == "darwin" else ("win32" if sys.platform == "win32" else "linux")


def sounddevice_module() -> Any:
    """sounddevice, or a DeviceError saying how to install PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise DeviceError(f"audio devices need PortAudio ({exc}): {AUDIO_SETUP[_os()]}") from None
    return sounddevice


def rescan(sd: Any) -> None:
    """Re-enumerate devices: PortAudio lists them once, when it starts (sounddevice's documented
    way to refresh the list; needed when a device or sound server appeared since). It ends every
    open stream, so it is only called before any is opened."""
    with contextlib.suppress(Exception):
        sd._terminate()
        sd._initialize()


def pulse_names(kind: str) -> list[str] | None:
    """PulseAudio / PipeWire sink (``kind='output'``) or source names, or None without pactl."""
    pactl = shutil.which("pactl")
    if pactl is None:
        return None
    what = "sinks" if kind == "output" else "sources"
    try:
        res = subprocess.run([pactl, "list", "short", what], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return [line.split("\t")[1] for line in res.stdout.splitlines() if "\t" in line]


@contextlib.contextmanager
def _pulse_target(kind: str, name: str) -> Iterator[None]:
    """libpulse reads PULSE_SINK / PULSE_SOURCE when a stream is opened on the 'pulse' device."""
    var = "PULSE_SINK" if kind == "output" else "PULSE_SOURCE"
    with _ENV_LOCK:
        old = os.environ.get(var)
        os.environ[var] = name
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old


def find_portaudio_device(sd: Any, name: str, kind: str) -> int | None:
    """Index of the device called ``name`` (exact, then case-insensitive substring) with
    ``kind`` channels, or None."""
    key = "max_output_channels" if kind == "output" else "max_input_channels"
    devices = [(i, d) for i, d in enumerate(sd.query_devices()) if d[key] > 0]
    if name.isdigit() and any(i == int(name) for i, _ in devices):
        return int(name)
    for i, d in devices:
        if d["name"] == name:
            return i
    for i, d in devices:
        if name.lower() in d["name"].lower():
            return i
    return None


def open_portaudio_stream(
    cls: Any,
    name: str,
    kind: str,
    rate: int | None,
    callback: Callable,
    block_ms: int,
    before_start: Callable[[Any], None] | None = None,
) -> Any:
    """Open and start a sounddevice stream (``cls``: InputStream / OutputStream) on the device
    called ``name`` ('' = default), or on the PulseAudio / PipeWire sink or source of that name."""
    sd = sounddevice_module()
    what = "speaker_device" if kind == "output" else "mic_device"
    device: Any = None
    pulse: str | None = None
    if name:
        device = find_portaudio_device(sd, name, kind)
        if device is None:
            names = pulse_names(kind)
            pulse_dev = find_portaudio_device(sd, "pulse", kind)
            if names is not None and name in names and pulse_dev is not None:
                device, pulse = pulse_dev, name
            else:
                listed = ", ".join(
                    d["name"]
                    for d in sd.query_devices()
                    if d["max_output_channels" if kind == "output" else "max_input_channels"] > 0
                )
                what_pulse = "sinks" if kind == "output" else "sources"
                extra = f"; PulseAudio {what_pulse}: {', '.join(names)}" if names else ""
                hint = f"; to make a virtual microphone: {VIRTUAL_MIC_SETUP[_os()]}" if kind == "output" else ""
                raise DeviceError(
                    f"live.{what} = {name!r} is not an audio {kind} here (devices: {listed}{extra}){hint}"
                )
    if device is None:
        with contextlib.suppress(Exception):
            device = sd.default.device[1 if kind == "output" else 0]
            device = None if device is None or device < 0 else device
    info = sd.query_devices(device, kind) if device is not None else sd.query_devices(kind=kind)
    channels = min(
        2 if kind == "output" else 1, int(info["max_output_channels" if kind == "output" else "max_input_channels"])
    )
    sr = rate or int(info["default_samplerate"])
    # blocksize 0: PortAudio picks (and may vary) the block size; a fixed size stalls the
    # ALSA->PulseAudio path after the first block. ``block_ms`` only sets the latency asked for.
    blocksize = 0
    try:
        ctx = _pulse_target(kind, pulse) if pulse else contextlib.nullcontext()
        with ctx:  # the pulse plugin connects when the stream starts: keep the target set until then
            stream = cls(
                samplerate=sr,
                channels=channels,
                device=device,
                dtype="float32",
                callback=callback,
                blocksize=blocksize,
                latency=max(block_ms / 1000, 0.01),
            )
            if before_start is not None:
                before_start(stream)  # the caller learns the stream's rate before the first callback
            stream.start()
            return stream
    except sd.PortAudioError as exc:
        raise DeviceError(
            f"live.{what} = {name or '(default)'!r} cannot be opened at {sr} Hz ({exc}): pick another device "
            f"or sample rate (sayanything-live devices lists them)"
        ) from None


# -- listing ------------------------------------------------------------------------
def list_cameras() -> list[str]:
    if _os() == "linux":
        out = []
        for dev in sorted(glob.glob("/dev/video*")):
            name_file = f"/sys/class/video4linux/{os.path.basename(dev)}/name"
            label = ""
            with contextlib.suppress(OSError):
                with open(name_file) as fh:
                    label = fh.read().strip()
            out.append(f"{dev}  {label}".rstrip())
        return out
    return []


def virtual_camera_backends() -> list[tuple[str, bool, str]]:
    """(backend, available, detail) for each pyvirtualcam backend of this OS."""
    try:
        import pyvirtualcam  # noqa: F401
    except ImportError as exc:
        return [("pyvirtualcam", False, f"not importable: {exc}")]
    if _os() == "linux":
        loops = []
        for path in sorted(glob.glob("/sys/class/video4linux/video*/name")):
            with contextlib.suppress(OSError), open(path) as fh:
                label = fh.read().strip()
                if "loopback" in label.lower() or "dummy" in label.lower() or "sayanything" in label.lower():
                    loops.append(f"/dev/{path.split('/')[-2]} ({label})")
        module = os.path.isdir("/sys/module/v4l2loopback")
        if loops:
            return [("v4l2loopback", True, ", ".join(loops))]
        return [("v4l2loopback", False, "module loaded, no device" if module else "module not loaded")]
    return [("obs", True, "needs OBS Studio's virtual camera installed"), ("unitycapture", _os() == "win32", "")]


def report() -> str:
    """What ``sayanything-live devices`` prints."""
    lines = ["cameras:"]
    cams = list_cameras()
    if cams:
        lines += [f"  {c}" for c in cams]
    elif _os() == "linux":
        lines.append("  none found (/dev/video*): plug a camera in, or use a file: --set live.camera_device=clip.mp4")
    else:
        fmt = "avfoundation" if _os() == "darwin" else "dshow"
        lines.append(f'  listed by FFmpeg: ffmpeg -f {fmt} -list_devices true -i ""')
    lines.append("audio:")
    try:
        sd = sounddevice_module()
        rescan(sd)
        for i, d in enumerate(sd.query_devices()):
            io = []
            if d["max_input_channels"]:
                io.append(f"in {d['max_input_channels']}")
            if d["max_output_channels"]:
                io.append(f"out {d['max_output_channels']}")
            lines.append(f"  [{i}] {d['name']}  ({', '.join(io)}, {int(d['default_samplerate'])} Hz)")
        for kind in ("output", "input"):
            names = pulse_names(kind)
            if names is not None:
                lines.append(f"  PulseAudio/PipeWire {'sinks' if kind == 'output' else 'sources'}: {', '.join(names)}")
    except DeviceError as exc:
        lines.append(f"  unavailable: {exc}")
    lines.append(f"  virtual microphone set-up: {VIRTUAL_MIC_SETUP[_os()]}")
    lines.append("virtual camera:")
    for name, ok, detail in virtual_camera_backends():
        lines.append(f"  {name}: {'available' if ok else 'missing'}{(' - ' + detail) if detail else ''}")
    if not any(ok for _, ok, _ in virtual_camera_backends()):
        lines.append(f"  set-up: {VIRTUAL_CAMERA_SETUP[_os()]}")
    return "\n".join(lines)
