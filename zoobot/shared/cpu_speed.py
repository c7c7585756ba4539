"""A warning when ``train()`` starts on a CPU with settings sized for a GPU (issue 17).

EfficientNet-B0 at 224 px with batches of 256 takes minutes per batch on a laptop CPU, and nothing said so.
Before fitting on a CPU, each backend times one forward and backward pass of the encoder on
:data:`PROBE_IMAGES` images at the training size (eval mode, gradients returned rather than stored, so no
weight, statistic or random state changes) and hands the seconds to :func:`warn_if_gpu_sized`, which scales
them to a batch, an epoch and the run, and warns once, in one line, when a batch takes longer than
:data:`SLOW_BATCH_SECONDS` or the run longer than :data:`SLOW_RUN_SECONDS`. Settings whose batches hold
fewer than :data:`PROBE_PIXELS` pixels (tiny_cnn at 32-64 px, the tests' and the demo's) are never timed.
The estimate is rough (a linear scaling from a few images); see docs/guides/training_from_scratch_pytorch.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

__all__ = ["PROBE_IMAGES", "PROBE_PIXELS", "SLOW_BATCH_SECONDS", "SLOW_RUN_SECONDS", "estimate_cpu_time",
           "slow_cpu_message", "warn_if_gpu_sized"]

#: Images in the timed forward + backward pass.
PROBE_IMAGES = 2
#: Batches with fewer pixels (``min(batch_size, n_train) * size**2``) are not timed: e.g. 64 images of 64 x 64.
PROBE_PIXELS = 64 * 64 * 64
#: Warn when one batch is estimated to take longer than this ...
SLOW_BATCH_SECONDS = 10.0
#: ... or the whole run (``epochs`` epochs) longer than this.
SLOW_RUN_SECONDS = 2 * 3600.0


def estimate_cpu_time(probe_seconds: float, probe_images: int, batch_size: int, n_train: int,
                      epochs: int) -> dict:
    """Seconds per batch, per epoch and for the run, scaled linearly per image from a timed pass over
    ``probe_images``. A batch holds ``min(batch_size, n_train)`` images; an epoch ``n_train``.

    Examples
    --------
    >>> estimate_cpu_time(1.0, 2, batch_size=256, n_train=1000, epochs=10)
    {'batch': 128.0, 'epoch': 500.0, 'run': 5000.0, 'epochs': 10}
    >>> estimate_cpu_time(1.0, 2, batch_size=256, n_train=26, epochs=10)['batch']
    13.0
    """
    per_image = float(probe_seconds) / int(probe_images)
    epoch = per_image * int(n_train)
    return {"batch": per_image * min(int(batch_size), int(n_train)), "epoch": epoch, "run": epoch * int(epochs),
            "epochs": int(epochs)}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def slow_cpu_message(estimate: dict, architecture_name: str, image_size: int, batch_size: int) -> str | None:
    """The one-line warning for an :func:`estimate_cpu_time` result, or None when it is fast enough.

    Examples
    --------
    >>> slow_cpu_message({'batch': 0.5, 'epoch': 10.0, 'run': 100.0, 'epochs': 10}, 'tiny_cnn', 64, 32) is None
    True
    >>> m = slow_cpu_message({'batch': 128.0, 'epoch': 512.0, 'run': 5120.0, 'epochs': 10}, 'efficientnet_b0', 224,
    ...                      256)
    >>> m[m.index('about'):m.index(' (estimated')]
    'about 2 min per batch, 9 min per epoch, 85 min for 10 epochs'
    """
    if estimate["batch"] <= SLOW_BATCH_SECONDS and estimate["run"] <= SLOW_RUN_SECONDS:
        return None
    return (
        f"Training on the CPU with {architecture_name} at {image_size} px and batch_size={batch_size}: about "
        f"{_duration(estimate['batch'])} per batch, {_duration(estimate['epoch'])} per epoch, "
        f"{_duration(estimate['run'])} for {estimate['epochs']} epochs (estimated from one timed pass). These settings are sized for "
        f"a GPU; on a CPU use e.g. architecture_name='tiny_cnn' (--architecture tiny_cnn), a smaller "
        f"resize_after_crop (--resize-size 64) and batch_size (--batch-size 32), or train on a GPU."
    )


def warn_if_gpu_sized(time_probe: Callable[[int], float], *, architecture_name: str, image_size: int,
                      batch_size: int, n_train: int, epochs: int, stacklevel: int = 3) -> str | None:
    """Time ``time_probe(PROBE_IMAGES)`` (seconds of one forward + backward pass) unless the batches are tiny,
    and warn (``UserWarning``) if the run looks too slow for a CPU. Returns the message, or None.

    Examples
    --------
    >>> warn_if_gpu_sized(lambda n: 1 / 0, architecture_name='tiny_cnn', image_size=32, batch_size=8,
    ...                   n_train=100, epochs=3) is None   # tiny: the probe is never called
    True
    """
    if min(int(batch_size), int(n_train)) * int(image_size) ** 2 < PROBE_PIXELS:
        return None
    estimate = estimate_cpu_time(time_probe(PROBE_IMAGES), PROBE_IMAGES, batch_size, n_train, epochs)
    message = slow_cpu_message(estimate, architecture_name, image_size, batch_size)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
    return message
