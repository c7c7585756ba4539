"""Keras models of the TensorFlow backend: encoders, the Dirichlet head and ``ZoobotTree``
(``define_model``), custom layers, and ``preprocess`` (an alias of ``zoobot.tensorflow.preprocess``)."""
