"""The TensorFlow backend of zoobot (TensorFlow 2.16+ with Keras 3 on its TensorFlow backend).

Subpackages: ``data_utils`` (datasets from image files or TFRecord shards, shard writing; TF only),
``preprocess`` (raw uint8 datasets -> model input; TF only), ``datasets`` (``GalaxyDataModule``, twin of
the PyTorch one), ``estimators``, ``training``, ``predictions``. Old names live in ``_compat``.

Importing this package checks the environment (:func:`_check_environment`: ``KERAS_BACKEND`` is set to
``'tensorflow'``, or an ``ImportError`` says how to fix it), imports torchvision first if installed
(:func:`_import_torchvision_first`; ``ZOOBOT_SKIP_TORCHVISION_PREIMPORT=1`` skips it) and imports
TensorFlow with its C++ start-up lines hidden (``--log-level DEBUG`` or ``ZOOBOT_SHOW_NATIVE_LOGS=1``
shows them). See docs/how_the_code_fits_together.md.
"""
import importlib.util
import os
import sys

from zoobot.shared.errors import missing_dependency

_REQUIRED_KERAS_BACKEND = "tensorflow"


def _check_environment() -> None:
    """Set ``KERAS_BACKEND`` and fail early, with a fix, if the environment cannot work."""
    for package in ("tensorflow", "keras"):
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            raise missing_dependency(package, "The TensorFlow backend (zoobot.tensorflow)", "tensorflow")

    requested = os.environ.setdefault("KERAS_BACKEND", _REQUIRED_KERAS_BACKEND)
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend") and hasattr(keras.backend, "backend"):
        active = keras.backend.backend()
        if active != _REQUIRED_KERAS_BACKEND:
            raise ImportError(
                f"Keras was already imported with the {active!r} backend, but zoobot.tensorflow needs Keras on "
                f"TensorFlow. Import zoobot.tensorflow before anything that imports keras, or set the environment "
                f"variable KERAS_BACKEND=tensorflow before starting Python (use zoobot.pytorch for PyTorch)."
            )
    elif requested != _REQUIRED_KERAS_BACKEND:
        raise ImportError(
            f"The environment variable KERAS_BACKEND is {requested!r}, but zoobot.tensorflow needs Keras on "
            f"TensorFlow. Unset it or set KERAS_BACKEND=tensorflow (use zoobot.pytorch for PyTorch)."
        )


def _import_torchvision_first() -> None:
    """Import torchvision now if it is installed and TensorFlow has not started yet.

    Importing torchvision *after* TensorFlow has run an op crashes the process (segfault seen with
    TensorFlow 2.21 and torchvision 0.29). Users who have both backends installed often use both in
    one notebook, so the safe order is fixed here, at the cost of a second of import time.
    """
    if "torchvision" in sys.modules or "tensorflow" in sys.modules:
        return
    if os.environ.get("ZOOBOT_SKIP_TORCHVISION_PREIMPORT") == "1":  # a TensorFlow-only process
        return
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401
        except Exception:  # a broken torchvision must not stop the TensorFlow backend
            pass


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow now, hiding the oneDNN / CPU-feature / absl lines its C++ libraries print on load.

    TensorFlow 2.21 writes them through absl before ``TF_CPP_MIN_LOG_LEVEL`` is consulted, so that
    variable alone (set before the import, as here) no longer silences them.
    """
    if "tensorflow" in sys.modules:
        return
    from zoobot.shared.console import quiet_native_startup

    with quiet_native_startup():
        import tensorflow

        # the full (GPU-capable) wheel, which keras-hub's tensorflow-text pulls in, probes CUDA at the first
        # device query and logs "failed call to cuInit" on machines without a GPU: probe inside the block
        tensorflow.config.list_physical_devices("GPU")


_check_environment()
_import_torchvision_first()
_import_tensorflow_quietly()

from zoobot.tensorflow.errors import (  # noqa: E402  (the environment must be checked first)
    CatalogError,
    ChannelMismatchError,
    CheckpointVersionError,
    ImageLoadError,
    MissingDependencyError,
    PixelScaleError,
)

__all__ = [
    "CatalogError",
    "ImageLoadError",
    "ChannelMismatchError",
    "PixelScaleError",
    "CheckpointVersionError",
    "MissingDependencyError",
]
