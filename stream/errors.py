"""The project's exception hierarchy. Messages name the thing, the value and the fix."""


class SayAnythingError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(SayAnythingError):
    """A configuration key or value is invalid."""


class InputError(SayAnythingError):
    """An input file or stream cannot be used."""


class ModelError(SayAnythingError):
    """The lip-sync model failed or was misconfigured."""


class DeviceError(SayAnythingError):
    """A camera, audio device or virtual camera is missing, busy or misconfigured."""


class OutputError(SayAnythingError):
    """An output file cannot be written (permissions, a full disk, a locked target)."""
