"""Train a Zoobot model from scratch on one catalog of Galaxy Zoo vote counts.

This is the same script as ``zoobot/pytorch/examples/train_model_on_catalog.py`` (both paths appear in
the documentation); see there. Run ``python train_model_on_catalog.py --help``.
"""
from zoobot.pytorch.examples.train_model_on_catalog import get_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
