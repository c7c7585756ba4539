"""How a model's images were prepared, recorded with the model (docs/components/preprocessing.md).

A model is only right on images prepared the way its training images were: the same side in pixels,
channels, crop and pixel scaling. Both backends store a :class:`Preprocessing` record with every
checkpoint (PyTorch ``.ckpt`` key ``preprocessing``, TensorFlow ``.keras`` config key
``preprocessing``) and read it back on loading; ``predict``, ``get_representations`` and finetuning
then use the recorded values unless told otherwise (:func:`resolve_preprocessing`).

Pixel scaling:

- JPEG/PNG pixels are ``uint8 / 255``, always;
- FITS pixels are scaled per image by a :class:`FitsScaling`: an interval (``astropy.visualization``
  percentile, min/max or manual limits) mapped to [0, 1], then a stretch (linear, asinh, sqrt, log).
  The named presets are in :data:`FITS_SCALINGS`.

This module is framework-free; the backends only store and read the record.

Examples
--------
>>> record = Preprocessing(input_size=64, channels=1, crop_scale_bounds=(0.7, 0.8),
...                        crop_ratio_bounds=(0.9, 1.1), image_formats=('jpg',))
>>> Preprocessing.from_dict(record.to_dict()) == record
True
>>> resolve_preprocessing(record, {})['resize_after_crop']
64
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Iterable, Mapping

import numpy as np

from zoobot.shared.errors import unknown_option_error

__all__ = [
    "FitsScaling",
    "FITS_SCALINGS",
    "Preprocessing",
    "carry_record",
    "RECORD_KEY",
    "image_formats_of",
    "record_of_fit",
    "resolve_preprocessing",
    "restore_record",
    "training_record",
]

#: Key of the record in PyTorch checkpoints and in the config of TensorFlow ``.keras`` files.
RECORD_KEY = "preprocessing"
#: Version of the record's dict layout (:meth:`Preprocessing.to_dict`).
RECORD_VERSION = 1
#: How JPEG and PNG pixels become model input (documented in every record).
UINT8_SCALING = "uint8 / 255"

_INTERVALS = ("percentile", "minmax", "manual", "none")
_STRETCHES = ("linear", "asinh", "sqrt", "log")
_DEFAULT_A = {"asinh": 0.1, "log": 1000.0}
_FITS = ("fits",)
_UINT8 = ("jpg", "png")


# ---------------------------------------------------------------------------------------------
# FITS scaling
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FitsScaling:
    """How the pixels of one FITS image are mapped to [0, 1] (per image, all channels together).

    First an interval of ``astropy.visualization`` maps ``[low, high]`` to [0, 1] and clips; then a
    stretch (``astropy.visualization`` ``LinearStretch``, ``AsinhStretch(a)``, ``SqrtStretch``,
    ``LogStretch(a)``) brightens faint structure. NaN pixels become 0.

    Parameters
    ----------
    interval : {'percentile', 'minmax', 'manual', 'none'}
        'percentile': ``low, high`` = the ``lower_percentile`` and ``upper_percentile`` of the finite
        pixels (``AsymmetricPercentileInterval``); 'minmax': their minimum and maximum; 'manual':
        ``vmin, vmax`` (``ManualInterval``; the same limits for every image, e.g. in nanomaggies);
        'none': the pixels must already be in [0, 1] (E8 otherwise).
    lower_percentile, upper_percentile : float
        For 'percentile' (default 0.5 and 99.5).
    vmin, vmax : float, optional
        For 'manual' (both required).
    stretch : {'linear', 'asinh', 'sqrt', 'log'}
    a : float, optional
        Parameter of 'asinh' (default 0.1) and 'log' (default 1000).

    Examples
    --------
    >>> FitsScaling.from_value('asinh').stretch
    'asinh'
    >>> scaling = FitsScaling(interval='manual', vmin=0.0, vmax=10.0)
    >>> scaling.apply(np.array([[[-1.0], [5.0], [20.0]]])).ravel().tolist()
    [0.0, 0.5, 1.0]
    """

    interval: str = "percentile"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    vmin: float | None = None
    vmax: float | None = None
    stretch: str = "linear"
    a: float | None = None

    def __post_init__(self):
        if self.interval not in _INTERVALS:
            raise unknown_option_error("FITS interval", self.interval, _INTERVALS)
        if self.stretch not in _STRETCHES:
            raise unknown_option_error("FITS stretch", self.stretch, _STRETCHES)
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError(f"FITS percentiles must satisfy 0 <= lower < upper <= 100, got "
                             f"({self.lower_percentile}, {self.upper_percentile})")
        if self.interval == "manual" and (self.vmin is None or self.vmax is None or not self.vmin < self.vmax):
            raise ValueError(f"interval='manual' needs vmin < vmax, got vmin={self.vmin!r}, vmax={self.vmax!r}")
        if self.a is not None and not self.a > 0:
            raise ValueError(f"the stretch parameter a must be > 0, got {self.a!r}")
        for name in ("lower_percentile", "upper_percentile"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.a is None and self.stretch in _DEFAULT_A:
            object.__setattr__(self, "a", _DEFAULT_A[self.stretch])

    @classmethod
    def from_value(cls, value) -> "FitsScaling":
        """A :class:`FitsScaling` from a preset name (:data:`FITS_SCALINGS`), a dict or itself.

        Raises
        ------
        ValueError
            (E13) an unknown preset name or key.
        """
        if isinstance(value, FitsScaling):
            return value
        if isinstance(value, str):
            if value not in FITS_SCALINGS:
                raise unknown_option_error("fits_scaling", value, FITS_SCALINGS)
            return FITS_SCALINGS[value]
        if isinstance(value, Mapping):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise unknown_option_error("fits_scaling key", unknown[0], sorted(fields))
            return cls(**value)
        raise TypeError(f"fits_scaling must be a name ({', '.join(FITS_SCALINGS)}), a dict or a FitsScaling, "
                        f"got {type(value).__name__}: {value!r}")

    def to_dict(self) -> dict:
        """JSON-ready fields (what checkpoints store)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """Short text for messages, e.g. ``"percentile 0.5-99.5, linear stretch"``."""
        for name, preset in FITS_SCALINGS.items():
            if preset == self:
                return repr(name)
        limits = {"percentile": f"percentile {self.lower_percentile:g}-{self.upper_percentile:g}",
                  "minmax": "min-max", "manual": f"manual {self.vmin:g}-{self.vmax:g}", "none": "none"}
        a = f"(a={self.a:g})" if self.a is not None and self.stretch in _DEFAULT_A else ""
        return f"{limits[self.interval]}, {self.stretch}{a} stretch"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Scale an image (any shape, float; NaN allowed) to float64 in [0, 1]; NaN -> 0.

        Call with at least one finite pixel. For ``interval='none'`` the caller checks the range.
        """
        finite = np.isfinite(data)
        if self.interval == "none":
            scaled = np.clip(np.where(finite, data, 0.0), 0.0, 1.0)
        else:
            low, high = self._limits(data[finite])
            scaled = np.zeros_like(data, dtype=np.float64)
            if high > low:
                scaled = np.clip((np.where(finite, data, low) - low) / (high - low), 0.0, 1.0)
        if self.stretch != "linear":
            scaled = self._astropy_stretch()(scaled, clip=True)
        return np.where(finite, scaled, 0.0)

    def _limits(self, values: np.ndarray) -> tuple[float, float]:
        from astropy import visualization as vis

        if self.interval == "percentile":
            interval = vis.AsymmetricPercentileInterval(self.lower_percentile, self.upper_percentile)
        elif self.interval == "minmax":
            interval = vis.MinMaxInterval()
        else:
            interval = vis.ManualInterval(self.vmin, self.vmax)
        low, high = interval.get_limits(values)
        return float(low), float(high)

    def _astropy_stretch(self):
        from astropy import visualization as vis

        if self.stretch == "asinh":
            return vis.AsinhStretch(a=self.a)
        if self.stretch == "log":
            return vis.LogStretch(a=self.a)
        return vis.SqrtStretch()


#: Named FITS scalings accepted wherever ``fits_scaling`` is (``load_image``, the data modules, predict).
FITS_SCALINGS = {
    "percentile": FitsScaling(),
    "minmax": FitsScaling(interval="minmax"),
    "none": FitsScaling(interval="none"),
    "asinh": FitsScaling(stretch="asinh"),
}


# ---------------------------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------------------------


def _pair_or_none(value):
    return None if value is None else tuple(float(v) for v in value)


def _int_or_none(value):
    return None if value is None else int(value)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How the training images of a model were prepared. ``None`` means not recorded (old files).

    Attributes
    ----------
    input_size : int or None
        Side in pixels of the model input (``resize_after_crop``).
    channels : int or None
        1 (greyscale = mean of R, G, B) or 3.
    crop_scale_bounds : (float, float) or None
        Area fraction of the random training crop; evaluation centre-crops keep their mean.
    crop_ratio_bounds : (float, float) or None
        Aspect ratios of the random training crop.
    image_formats : tuple of str or None
        Formats of the training images ('fits', 'jpg', 'png'): JPEG/PNG pixels are ``uint8 / 255``,
        FITS pixels are scaled by ``fits_scaling``.
    fits_scaling : FitsScaling or None
        The FITS scaling used in training (None when it read no FITS file).

    Examples
    --------
    >>> Preprocessing(input_size=64, crop_scale_bounds=(0.7, 0.8)).eval_crop_area_fraction
    0.75
    """

    input_size: int | None = None
    channels: int | None = None
    crop_scale_bounds: tuple | None = None
    crop_ratio_bounds: tuple | None = None
    image_formats: tuple | None = None
    fits_scaling: FitsScaling | None = None

    def __post_init__(self):
        object.__setattr__(self, "input_size", _int_or_none(self.input_size))
        object.__setattr__(self, "channels", _int_or_none(self.channels))
        object.__setattr__(self, "crop_scale_bounds", _pair_or_none(self.crop_scale_bounds))
        object.__setattr__(self, "crop_ratio_bounds", _pair_or_none(self.crop_ratio_bounds))
        if self.image_formats is not None:
            object.__setattr__(self, "image_formats", tuple(sorted(set(self.image_formats))))
        if self.fits_scaling is not None:
            object.__setattr__(self, "fits_scaling", FitsScaling.from_value(self.fits_scaling))

    @classmethod
    def for_training(cls, input_size, channels, crop_scale_bounds, crop_ratio_bounds, file_locs=None,
                     fits_scaling="percentile") -> "Preprocessing":
        """The record of a training run; ``file_locs`` are the training images (their formats are kept).

        Examples
        --------
        >>> Preprocessing.for_training(64, 3, (0.7, 0.8), (0.9, 1.1), ['a.png', 'b.jpg']).image_formats
        ('jpg', 'png')
        """
        formats = image_formats_of(file_locs) if file_locs is not None else None
        uses_fits = formats is None or "fits" in formats
        return cls(input_size, channels, crop_scale_bounds, crop_ratio_bounds, formats,
                   FitsScaling.from_value(fits_scaling) if uses_fits else None)

    @property
    def is_partial(self) -> bool:
        """True for a record restored from a file saved before records existed (no crop, no formats): its
        size, if any, is used by default but not held against explicit values (it was not always the
        training size)."""
        return self.crop_scale_bounds is None and self.image_formats is None

    @property
    def eval_crop_area_fraction(self) -> float | None:
        """Area fraction kept by the deterministic (evaluation) centre crop: mean of ``crop_scale_bounds``."""
        return None if self.crop_scale_bounds is None else sum(self.crop_scale_bounds) / 2

    def to_dict(self) -> dict:
        """JSON primitives (stored in checkpoints; derived fields are informative only)."""
        formats = self.image_formats
        return {
            "record_version": RECORD_VERSION,
            "input_size": self.input_size,
            "channels": self.channels,
            "crop_scale_bounds": None if self.crop_scale_bounds is None else list(self.crop_scale_bounds),
            "crop_ratio_bounds": None if self.crop_ratio_bounds is None else list(self.crop_ratio_bounds),
            "eval_crop_area_fraction": self.eval_crop_area_fraction,
            "image_formats": None if formats is None else list(formats),
            "uint8_scaling": UINT8_SCALING,
            "fits_scaling": None if self.fits_scaling is None else self.fits_scaling.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: Mapping | None) -> "Preprocessing | None":
        """The record stored by :meth:`to_dict` (None stays None; unknown keys are ignored)."""
        if values is None:
            return None
        if not isinstance(values, Mapping):
            raise TypeError(f"a preprocessing record must be a dict, got {type(values).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: values.get(name) for name in fields})

    def describe(self) -> str:
        """One line for messages."""
        formats = "/".join(self.image_formats) if self.image_formats else "unknown"
        text = f"{self.input_size} px, {self.channels} channel(s), crop {self.crop_scale_bounds}, images {formats}"
        return text + (f", FITS scaling {self.fits_scaling.describe()}" if self.fits_scaling is not None else "")


def image_formats_of(file_locs: Iterable) -> tuple:
    """The sorted image formats ('fits', 'jpg', 'png') of some paths, by extension; unknown ones skipped.

    Examples
    --------
    >>> image_formats_of(['a.FITS.gz', 'b.jpeg', 'c.jpg'])
    ('fits', 'jpg')
    """
    formats = set()
    for path in set(map(os.fspath, file_locs)):
        name = path.lower()
        if name.endswith((".fits", ".fit", ".fits.gz", ".fit.gz")):
            formats.add("fits")
        elif name.endswith((".jpg", ".jpeg")):
            formats.add("jpg")
        elif name.endswith(".png"):
            formats.add("png")
    return tuple(sorted(formats))


def training_record(datamodule) -> Preprocessing:
    """The record of a zoobot ``GalaxyDataModule`` (either backend) a model is trained on.

    The size is the evaluation transform's when it is one of zoobot's transforms (possibly wrapped),
    else the data module's ``resize_after_crop``; the formats are the training catalog's.
    """
    transform = getattr(datamodule, "test_transform", None)
    size = getattr(getattr(transform, "transform", transform), "resize_after_crop", None)
    catalogs = [getattr(datamodule, f"{split}_catalog", None) for split in ("train", "val", "test", "predict")]
    catalog = next((c for c in catalogs if c is not None and "file_loc" in c), None)
    return Preprocessing.for_training(
        size or datamodule.resize_after_crop, datamodule.channels, datamodule.crop_scale_bounds,
        datamodule.crop_ratio_bounds, None if catalog is None else catalog["file_loc"],
        getattr(datamodule, "fits_scaling", "percentile"),
    )


def record_of_fit(datamodule) -> Preprocessing | None:
    """The record of the data a model is being fitted on: ``datamodule.preprocessing_record()`` for
    zoobot's data modules, None for other data (nothing is recorded then)."""
    make = getattr(datamodule, "preprocessing_record", None)
    return make() if callable(make) else None


def restore_record(stored, *, input_size=None, channels=None) -> Preprocessing:
    """The record of a loaded model: the stored dict, or, for a file saved before records existed (or by a
    model never fitted on a data module), a *partial* record of what the file does say: the size it kept
    elsewhere (``zoobot_input_size``, the ``.keras`` ``input_size``; None if none) and the channels.

    Examples
    --------
    >>> restore_record(None, input_size=32, channels=3).is_partial
    True
    """
    if stored:
        return Preprocessing.from_dict(stored)
    return Preprocessing(input_size=input_size, channels=channels)


def carry_record(model, record: Preprocessing | None):
    """Give ``model`` (any backend) the record: ``model.preprocessing``, and ``model.input_size`` when the
    record knows the size. Returns ``model``."""
    model.preprocessing = record
    if record is not None and record.input_size is not None:
        model.input_size = record.input_size
    return model


# ---------------------------------------------------------------------------------------------
# recorded values + explicit arguments
# ---------------------------------------------------------------------------------------------

#: Data-module keyword -> record field, in the order messages list them.
_KEYWORDS = {"resize_after_crop": "input_size", "crop_scale_bounds": "crop_scale_bounds",
             "crop_ratio_bounds": "crop_ratio_bounds", "fits_scaling": "fits_scaling"}


def _normalise(keyword: str, value):
    if value is None:
        return None
    if keyword == "fits_scaling":
        return FitsScaling.from_value(value)
    if keyword == "resize_after_crop":
        return value
    return _pair_or_none(value)


def _show(keyword: str, value) -> str:
    return value.describe() if keyword == "fits_scaling" else repr(value)


def resolve_preprocessing(recorded: Preprocessing | None, explicit: Mapping, *, model_name: str = "the model",
                          file_locs: Iterable | None = None, fallback_input_size: int = 224) -> dict:
    """Data-module keywords for applying a model: its recorded preprocessing, explicit arguments on top.

    Parameters
    ----------
    recorded : Preprocessing or None
        The model's record (None: a model built in memory, never trained or loaded; no warnings).
    explicit : mapping
        Keywords the caller gave (e.g. ``datamodule_kwargs``); of these ``resize_after_crop``,
        ``crop_scale_bounds``, ``crop_ratio_bounds`` and ``fits_scaling`` are compared with the record.
    model_name : str
        Named in warnings.
    file_locs : iterable of path, optional
        The images to predict; their formats are compared with the training images'.
    fallback_input_size : int
        Size used when neither the record nor ``explicit`` has one (the model's ``input_size``).

    Returns
    -------
    dict
        ``resize_after_crop`` always; ``crop_scale_bounds``, ``crop_ratio_bounds``, ``fits_scaling``
        (a :class:`FitsScaling`) when recorded or given. Explicit values win.

    Warns
    -----
    UserWarning
        Once per call, naming every explicit value that contradicts the record and the recorded value;
        when FITS images meet a model trained on JPEG/PNG only (or JPEG/PNG a model trained on FITS
        only); when a record has no size and none is given (an old checkpoint: ``fallback_input_size``
        is used).

    Examples
    --------
    >>> record = Preprocessing(input_size=64, crop_scale_bounds=(0.7, 0.8))
    >>> resolve_preprocessing(record, {'batch_size': 8})
    {'resize_after_crop': 64, 'crop_scale_bounds': (0.7, 0.8)}
    """
    resolved, contradictions = {}, []
    for keyword, field in _KEYWORDS.items():
        kept = _normalise(keyword, getattr(recorded, field, None))
        given = _normalise(keyword, explicit.get(keyword))
        if given is not None and kept is not None and given != kept and not recorded.is_partial:
            if keyword != "fits_scaling" or "fits" in (recorded.image_formats or _FITS):
                contradictions.append(f"{keyword}={_show(keyword, given)} (recorded: {_show(keyword, kept)})")
        value = given if given is not None else kept
        if value is not None:
            resolved[keyword] = value
    if contradictions:
        warnings.warn(
            f"{model_name} was trained with other preprocessing than requested: {'; '.join(contradictions)}. "
            "Using the explicit values; predictions may be worse than the model's. Leave these arguments out to "
            "use the recorded preprocessing.",
            UserWarning, stacklevel=3,
        )
    if "resize_after_crop" not in resolved:
        if recorded is not None:
            warnings.warn(
                f"{model_name} records no training image size (saved before zoobot recorded its preprocessing); "
                f"using {fallback_input_size} px. If it was trained at another size, pass it, e.g. "
                f"datamodule_kwargs={{'resize_after_crop': N}} (CLI: --resize-size N).",
                UserWarning, stacklevel=3,
            )
        resolved["resize_after_crop"] = int(fallback_input_size)
    if file_locs is not None and recorded is not None and recorded.image_formats:
        _warn_format_mismatch(recorded, image_formats_of(file_locs), resolved.get("fits_scaling"), model_name)
    return resolved


def _warn_format_mismatch(recorded: Preprocessing, formats: tuple, fits_scaling, model_name: str) -> None:
    trained = set(recorded.image_formats)
    scaling = FitsScaling.from_value(fits_scaling or "percentile").describe()
    if "fits" in formats and not trained & set(_FITS):
        warnings.warn(
            f"{model_name} was trained on {'/'.join(sorted(trained)).upper()} images (pixels {UINT8_SCALING}) but "
            f"the catalog holds FITS images, scaled per image with fits_scaling {scaling}: the pixel values differ "
            "from the training images', so the predictions can be wrong. Predict on JPEG/PNG images made the way "
            "the training images were, or finetune the model on FITS images.",
            UserWarning, stacklevel=4,
        )
    elif set(formats) & set(_UINT8) and trained <= set(_FITS):
        warnings.warn(
            f"{model_name} was trained on FITS images (scaled with fits_scaling {scaling}) but the catalog holds "
            f"{'/'.join(f for f in formats if f != 'fits').upper()} images (pixels {UINT8_SCALING}): the pixel values "
            "differ from the training images', so the predictions can be wrong. Predict on FITS images, or finetune "
            "the model on JPEG/PNG images.",
            UserWarning, stacklevel=4,
        )
