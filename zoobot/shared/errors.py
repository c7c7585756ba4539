"""The error catalogue: every zoobot-specific exception, shared by both backends.

Each class subclasses the built-in exception a user would naturally catch (``except ValueError``
still catches :class:`CatalogError`), and is re-exported by ``zoobot.pytorch.errors`` and
``zoobot.tensorflow.errors``. The helpers at the bottom build the messages, so that both backends
word the same problem the same way. The codes E1-E14 quoted in docstrings are listed, with when each
is raised, in docs/api/shared/errors.md.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence

__all__ = [
    "CatalogError",
    "ImageLoadError",
    "ChannelMismatchError",
    "PixelScaleError",
    "CheckpointVersionError",
    "MissingDependencyError",
    "close_matches",
    "unknown_option_error",
    "missing_dependency",
    "check_pixel_range",
    "format_examples",
]


class CatalogError(ValueError):
    """A catalog is unusable: missing columns (E1), bad labels (E2), duplicate ids (E3), empty (E4)."""


class ImageLoadError(OSError):
    """An image file could not be read (E6). The message names the ``id_str`` and ``file_loc``."""


class ChannelMismatchError(ValueError):
    """Image channels differ from what the model expects, or are not 1/3 (E7)."""


class PixelScaleError(ValueError):
    """Pixel values are not floats in [0, 1] (E8)."""


class CheckpointVersionError(RuntimeError):
    """A checkpoint was written by an incompatible on-disk format version (E11)."""


class MissingDependencyError(ImportError):
    """An optional package needed by this feature is not installed (E12)."""


# ---------------------------------------------------------------------------------------------
# message helpers shared by both backends
# ---------------------------------------------------------------------------------------------

def format_examples(values: Iterable, limit: int = 5) -> str:
    """Format up to ``limit`` values for an error message: ``'a', 'b', ... (12 in all)``."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} in all)"
    return shown


def close_matches(word: str, possibilities: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` entries of ``possibilities`` that look like ``word`` (difflib)."""
    return difflib.get_close_matches(str(word), [str(p) for p in possibilities], n=n, cutoff=0.5)


def unknown_option_error(what: str, value, accepted: Sequence[str]) -> ValueError:
    """E13: build (not raise) the error for an unknown option value.

    Examples
    --------
    >>> err = unknown_option_error('architecture', 'efficentnet_b0', ['efficientnet_b0', 'tiny_cnn'])
    >>> "Did you mean" in str(err)
    True
    """
    accepted = list(accepted)
    matches = close_matches(value, accepted)
    hint = f" Did you mean {format_examples(matches)}?" if matches else ""
    return ValueError(f"Unknown {what} {value!r}.{hint} Accepted values: {format_examples(accepted, limit=60)}.")


def missing_dependency(package: str, feature: str, extra: str) -> MissingDependencyError:
    """E12: build the error for a missing optional package.

    Examples
    --------
    >>> str(missing_dependency('astropy', 'reading FITS images', 'fits'))
    'reading FITS images needs the optional package astropy, which is not installed. Install it with: pip install "zoobot[fits]"'
    """
    return MissingDependencyError(
        f"{feature} needs the optional package {package}, which is not installed. "
        f'Install it with: pip install "zoobot[{extra}]"'
    )


def check_pixel_range(minimum: float, maximum: float, layout: str = "") -> None:
    """E8 check shared by both backends on the first batch of images.

    Raises :class:`PixelScaleError` when ``minimum < -1e-3`` or ``maximum > 1 + 1e-3``; warns
    (``UserWarning``) when ``maximum <= 1.5/255`` (images that look divided by 255 twice).
    """
    import warnings

    minimum, maximum = float(minimum), float(maximum)
    if minimum < -1e-3 or maximum > 1 + 1e-3:
        hint = (
            "divide uint8 images by 255 (TensorFlow: PreprocessingConfig(normalise_from_uint8=True))"
            if maximum > 1.5
            else "rescale them into [0, 1]"
        )
        raise PixelScaleError(
            f"Images have values in [{minimum:.4g}, {maximum:.4g}] but zoobot models expect floats in [0, 1]"
            f"{' (' + layout + ')' if layout else ''}. Fix: {hint}."
        )
    if maximum <= 1.5 / 255 and maximum > 0:
        warnings.warn(
            f"Images have maximum {maximum:.3g}: they look divided by 255 twice. "
            "zoobot models expect floats in [0, 1].",
            UserWarning,
            stacklevel=3,
        )
