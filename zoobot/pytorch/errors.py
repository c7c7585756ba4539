"""The zoobot error catalogue, re-exported for the PyTorch backend (same objects as :mod:`zoobot.shared.errors`)."""
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
from zoobot.shared.errors import __all__  # noqa: F401
