"""Errors of the device runtime.

Every error a user can cause is an ``EdgeError``: its message says what was wrong (with the value)
and what to do. Third-party errors (PIL, the interpreter, zipfile, json) are translated where they
enter, with ``raise ... from exc``.

    EdgeError
    ├── ModelError          a model file or package that cannot be read or used
    │   └── PackageError    a model package that is malformed, tampered with or fails verification
    ├── BackendError        no interpreter available, or an accelerator that cannot be used
    ├── InputError          one input (image, array, path) that cannot be used; the run goes on
    ├── SourceError         a source (stream, camera, video file) that cannot be opened or read
    └── ConfigError         a configuration value or command-line option that is not allowed
"""


class EdgeError(Exception):
    """Root of every error the device runtime raises on purpose."""


class ModelError(EdgeError):
    """A model file or package that cannot be read or used."""


class PackageError(ModelError):
    """A model package that is malformed, tampered with or fails verification."""


class BackendError(EdgeError):
    """No interpreter available, or an accelerator that cannot be used."""


class InputError(EdgeError):
    """One input that cannot be used; only that input fails."""


class SourceError(EdgeError):
    """A source that cannot be opened or read; live ones are retried, the other sources go on."""


class ConfigError(EdgeError):
    """A configuration value or option that is not allowed."""
