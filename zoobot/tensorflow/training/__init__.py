"""Training with Keras (docs/guides/training_from_scratch_tensorflow.md, docs/guides/finetuning.md).

- ``losses``: the Dirichlet-multinomial loss (``get_multiquestion_loss``, seed snippet
  ``from zoobot.tensorflow.training import losses``);
- ``train_with_keras``: ``train`` / ``train_default_zoobot_from_scratch``, training a ``ZoobotTree``
  from scratch on catalogs or TFRecord shards;
- ``representations``: encoder features of a catalog (``ZoobotEncoder``, ``get_representations``);
- ``finetune`` and ``trainer``: finetuning pretrained encoders.

Submodules are imported on use (``from zoobot.tensorflow.training import train_with_keras``).
"""
