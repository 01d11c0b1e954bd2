"""Errors of the converter.

    ConverterError (an edge.errors.EdgeError, so the CLI reports it in one line)
    ├── SourceModelError     SRC missing, unreadable, not a model, or with a dynamic input shape
    ├── CalibrationError     calibration or evaluation data that cannot be used
    ├── QuantizationError    ops that cannot be quantized as the mode requires
    └── ValidationError      the converted model disagrees with the source more than allowed
"""

from edge.errors import EdgeError


class ConverterError(EdgeError):
    """Root of every error the converter raises on purpose."""


class SourceModelError(ConverterError):
    """SRC is missing, unreadable, not a model, or needs --input-shape."""


class CalibrationError(ConverterError):
    """Calibration or evaluation data that cannot be used."""


class QuantizationError(ConverterError):
    """Ops that cannot be quantized as the chosen mode requires."""


class ValidationError(ConverterError):
    """The converted model disagrees with the source more than --min-agreement allows."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
