"""Zoobot: deep learning for Galaxy Zoo morphology, with PyTorch and TensorFlow backends.

Importing ``zoobot`` imports no deep-learning framework. Pick a backend explicitly:

>>> from zoobot.shared import schemas          # framework-free
>>> schemas.decals_dr5_ortho_schema.n_answers
34

``zoobot.pytorch`` needs ``pip install "zoobot[pytorch]"``; ``zoobot.tensorflow`` needs
``pip install "zoobot[tensorflow]"``.
"""

__version__ = "0.1.0"

#: Integer version of the on-disk formats (checkpoints, prediction files, shard configs).
#: Bump it when a file written by this release can no longer be read by the previous one.
FORMAT_VERSION = 1

__all__ = ["__version__", "FORMAT_VERSION"]
