"""sayanything-live streaming engine: face tracking, chunked lip-sync inference and fixed-delay playout."""

__version__ = "0.1.0"
