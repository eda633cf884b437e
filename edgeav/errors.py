"""Typed errors under one base; the CLI turns each into one line and a non-zero exit code."""

from __future__ import annotations


class EdgeAVError(Exception):
    """Base of every error edgeav raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(EdgeAVError):
    """A configuration file, key or value is wrong (exit 2, as for a usage error)."""

    exit_code = 2


class UnknownNameError(EdgeAVError, KeyError):
    """A name asked of a registry does not exist; the message lists the valid names."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(EdgeAVError):
    """A data set cannot be read as asked (missing folder, no usable sample, bad manifest)."""


class MediaError(DataError):
    """One media file cannot be decoded: corrupt, truncated, empty, or missing a stream."""


class ModelError(EdgeAVError):
    """A model or checkpoint cannot be built or loaded."""


class ExportError(EdgeAVError):
    """Export failed (parity, quantization gate, unsupported precision for a device)."""


class BundleError(EdgeAVError):
    """A bundle is incomplete, tampered with, or does not fit the runtime (exit 2)."""

    exit_code = 2


class DeviceError(EdgeAVError):
    """A device profile cannot do what was asked; the message says what it can do."""

    exit_code = 2


class SensorError(EdgeAVError):
    """A capture source failed (pipeline error, no data, disappeared)."""


class StorageError(EdgeAVError):
    """The detection log or evidence store cannot be written."""
