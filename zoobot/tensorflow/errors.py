"""The error catalogue (docs/api/shared/errors.md), re-exported for the TensorFlow backend.

These are the very classes of :mod:`zoobot.shared.errors` (not copies), so
``except zoobot.tensorflow.errors.CatalogError`` also catches errors raised by shared code.
"""
from zoobot.shared.errors import (  # noqa: F401
    CatalogError,
    ChannelMismatchError,
    CheckpointVersionError,
    ImageLoadError,
    MissingDependencyError,
    PixelScaleError,
    check_pixel_range,
    close_matches,
    format_examples,
    missing_dependency,
    unknown_option_error,
)

__all__ = [
    "CatalogError",
    "ImageLoadError",
    "ChannelMismatchError",
    "PixelScaleError",
    "CheckpointVersionError",
    "MissingDependencyError",
    "check_pixel_range",
    "close_matches",
    "format_examples",
    "missing_dependency",
    "unknown_option_error",
]
