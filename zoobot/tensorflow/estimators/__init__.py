"""Keras models of the TensorFlow backend (the twin of ``zoobot.pytorch.estimators``).

- ``define_model``: encoders (``get_tensorflow_encoder`` / ``create_encoder``), the Dirichlet head,
  ``ZoobotTree`` (a compiled ``keras.Model``), the upstream functional ``get_model`` / ``load_model``
  and ``load_zoobot_model`` for ``.keras`` files;
- ``custom_layers``: ``MCDropout`` (alias ``PermaDropout``), ``ScaledSigmoid``, ``GalaxyAugmentation``;
- ``tiny_cnn``: the 4-convolution test encoder, identical in both backends;
- ``preprocess``: an alias of ``zoobot.tensorflow.preprocess`` (upstream path).

Submodules are imported on use (``from zoobot.tensorflow.estimators import define_model``).
"""
