"""Keras models of the TensorFlow backend (the twin of ``zoobot.pytorch.estimators``), in layers:

- ``tiny_cnn``: the 4-convolution test encoder, identical in both backends;
- ``encoders``: builds Keras encoders (``get_encoder``, ``ENCODER_NAMES``);
- ``custom_layers``: the Dirichlet head and its layers (``MCDropout``, ``ScaledSigmoid``, ``GalaxyAugmentation``);
- ``losses``: the Dirichlet-multinomial loss (documented path: ``zoobot.tensorflow.training.losses``);
- ``model_io`` (TF only): ``.keras`` loading with a version check, first-batch checks for ``predict``;
- ``define_model``: ``ZoobotTree`` and ``create_encoder``; re-exports the names above and the upstream
  functional API (``get_model``, ``load_model``) of :mod:`zoobot.tensorflow._compat`;
- ``preprocess``: the upstream path of ``zoobot.tensorflow.preprocess`` (same module).

Submodules are imported on use (``from zoobot.tensorflow.estimators import define_model``).
"""
