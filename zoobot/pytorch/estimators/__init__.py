"""PyTorch models: :mod:`~zoobot.pytorch.estimators.define_model` (``ZoobotTree``, encoders, Dirichlet head),
:mod:`~zoobot.pytorch.estimators.custom_layers` (``MCDropout``, ``ScaledSigmoid``) and
:mod:`~zoobot.pytorch.estimators.tiny_cnn` (the small test encoder).

Import the modules you need, e.g. ``from zoobot.pytorch.estimators import define_model``.
"""
