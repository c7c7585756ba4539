"""Replicate the GZ DECaLS DR5 model (Walmsley et al. 2022) with the TensorFlow backend.

The recipe of the paper: the DR5 benchmark splits (the dataset's train set split 90/10 into train and
validation with ``--seed``, and its test set), an EfficientNet-B0 trained from scratch on greyscale
224 x 224 images, batch 128, dropout 0.2, early stopping with patience 8, Dirichlet-multinomial loss
on the ``decals_dr5_ortho_schema`` vote counts. The PyTorch twin is
``replication/pytorch/train_model_on_decals_dr5_splits.py``.

Usage::

    python replication/tensorflow/train_model_on_decals_dr5_splits.py --data-dir data/gz_decals_5 \\
        --save-dir results/dr5_tf --gpus 1 [--download]
    python replication/tensorflow/train_model_on_decals_dr5_splits.py --smoke --save-dir /tmp/smoke

``--data-dir``: the GZ DECaLS DR5 catalogs and images (:func:`zoobot.shared.datasets.gz_decals_5`;
``--download`` fetches them, several GB). ``--smoke``: synthetic galaxies, ``tiny_cnn``, 1 epoch, CPU.
"""
from __future__ import annotations

import argparse
import logging
import pathlib


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data-dir", help="folder of the GZ DECaLS DR5 data (catalogs and images)")
    parser.add_argument("--download", action="store_true", help="download the data into --data-dir if missing")
    parser.add_argument("--save-dir", default="results/replication_dr5_tf", help="output folder")
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--resize-size", type=int, default=224)
    parser.add_argument("--dropout-rate", type=float, default=0.2)
    parser.add_argument("--color", action="store_true", help="colour input (the paper used greyscale)")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true",
                        help="offline check on synthetic galaxies: tiny_cnn, 1 epoch, CPU")
    args = parser.parse_args(argv)
    if args.data_dir is None and not args.smoke:
        parser.error("give --data-dir (with --download to fetch the data), or --smoke")
    return args


def main(argv=None):
    """Run the recipe; returns ``(model, trainer)``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from zoobot.shared import schemas
    from zoobot.tensorflow.training import train_with_keras

    save_dir = pathlib.Path(args.save_dir)
    options = dict(architecture_name=args.architecture, batch_size=args.batch_size, epochs=args.epochs,
                   patience=args.patience, resize_after_crop=args.resize_size, dropout_rate=args.dropout_rate,
                   color=args.color, gpus=args.gpus, num_workers=args.num_workers,
                   mixed_precision=args.mixed_precision, random_state=args.seed)
    if args.smoke:
        schema, (train_catalog, val_catalog, test_catalog) = _smoke_splits(save_dir / "data", args.seed)
        options.update(architecture_name="tiny_cnn", batch_size=8, epochs=1, resize_after_crop=32, gpus=0,
                       num_workers=1, prefetch_factor=1, mixed_precision=False)
    else:
        from zoobot.shared.benchmark_datasets import get_gz_decals_dr5_benchmark_dataset

        schema, (train_catalog, val_catalog, test_catalog) = get_gz_decals_dr5_benchmark_dataset(
            args.data_dir, random_state=args.seed, download=args.download)
    if schema != schemas.decals_dr5_ortho_schema:
        raise ValueError(f"Expected the decals_dr5_ortho schema for the DR5 benchmark, got {schema.name!r}.")

    model, trainer = train_with_keras.train_default_zoobot_from_scratch(
        save_dir=save_dir, schema=schema, train_catalog=train_catalog, val_catalog=val_catalog,
        test_catalog=test_catalog, **options)
    print(f"Best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    if trainer.test_metrics:
        print(f"Test loss: {trainer.test_metrics['test/supervised_loss']:.3f}")
    return model, trainer


def _smoke_splits(data_dir: pathlib.Path, seed: int):
    """A few dozen synthetic DR5-like galaxies split like the benchmark (train 90/10 train/val, plus test)."""
    from zoobot.shared import schemas
    from zoobot.shared.benchmark_datasets import sklearn_style_split
    from zoobot.shared.synthetic import make_synthetic_catalog

    schema = schemas.decals_dr5_ortho_schema
    catalog, _ = make_synthetic_catalog(data_dir, n_galaxies=48, schema=schema, image_size=48, seed=seed,
                                        progress=False)
    train_and_val, test = sklearn_style_split(catalog, test_size=0.2, random_state=seed)
    train, val = sklearn_style_split(train_and_val, test_size=0.1, random_state=seed)
    return schema, (train, val, test)


if __name__ == "__main__":
    main()
