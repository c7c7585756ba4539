"""Alias [U0] of :mod:`zoobot.tensorflow.preprocess` (api.md 6).

``import zoobot.tensorflow.estimators.preprocess`` gives the very module object
``zoobot.tensorflow.preprocess``: every name is identical, not a copy.
"""
import sys

from zoobot.tensorflow import preprocess as _canonical

sys.modules[__name__] = _canonical
