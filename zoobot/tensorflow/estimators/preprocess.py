"""The upstream import path of :mod:`zoobot.tensorflow.preprocess`: the same module object, no warning.

Set up by :func:`zoobot.tensorflow._compat.alias_module`. See docs/components/preprocessing.md.
"""
from zoobot.tensorflow._compat import alias_module

alias_module(__name__, "zoobot.tensorflow.preprocess")
