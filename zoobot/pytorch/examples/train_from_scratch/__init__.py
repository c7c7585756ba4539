"""Training from scratch: ``train_model_on_catalog.py`` (the same script as ``examples/train_model_on_catalog.py``)."""
