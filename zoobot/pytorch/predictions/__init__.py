"""Predictions with PyTorch models: :mod:`~zoobot.pytorch.predictions.predict_on_catalog`.

``from zoobot.pytorch.predictions import predict_on_catalog`` then
``predict_on_catalog.predict(catalog, model, n_samples=5, save_loc='preds.parquet')``.
"""
