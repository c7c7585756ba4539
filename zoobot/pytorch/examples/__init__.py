"""Runnable examples of the PyTorch backend (docs/getting_started.md). Each script has ``main()``, ``--help`` and an offline
``--smoke`` mode (synthetic data, ``tiny_cnn``, 1 epoch, CPU, a temporary folder):

- ``train_model_on_catalog.py``: train from scratch on one catalog (split 70/10/20), from the command line;
- ``train_model.py``: the shortest from-scratch training with a decision tree (schema);
- ``make_predictions.py``: load a checkpoint, predict a catalog, write predictions and summary tables;
- ``representations/get_representations.py``: encoder features per galaxy, optionally compressed with PCA;
- ``finetuning/``: finetune pretrained encoders (binary, multi-class, regression, full tree).
"""
