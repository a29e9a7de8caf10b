"""acids-core: the shared contract of the acids toolchain (no torch, no numpy)."""

__version__ = "0.1.0"
