"""Predictions with Keras models (docs/components/predictions_and_representations.md).

- ``predict_on_catalog.predict``: a catalog of images -> predictions file (parquet/csv/hdf5),
  the twin of ``zoobot.pytorch.predictions.predict_on_catalog.predict``;
- ``predict_on_dataset``: upstream (U1) helpers for a ``tf.data.Dataset`` of ``(images, id_str)``.
"""
