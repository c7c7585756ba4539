"""Runnable examples of the TensorFlow backend; each has ``main()``, ``--help`` and ``--smoke``."""
