"""PyTorch models, in layers (each module imports only the ones above it in this list):

- :mod:`~zoobot.pytorch.estimators.tiny_cnn`: the small test encoder;
- :mod:`~zoobot.pytorch.estimators.encoders`: builds and describes encoders (``get_encoder``);
- :mod:`~zoobot.pytorch.estimators.pretrained_encoders`: pretrained encoders by name (``create_encoder``);
- :mod:`~zoobot.pytorch.estimators.custom_layers`: the Dirichlet head and its layers;
- :mod:`~zoobot.pytorch.estimators.losses`: the Dirichlet-multinomial loss (documented path: ``training.losses``);
- :mod:`~zoobot.pytorch.estimators.define_model`: ``ZoobotTree``; re-exports the names above.

Import the modules you need, e.g. ``from zoobot.pytorch.estimators import define_model``.
"""
