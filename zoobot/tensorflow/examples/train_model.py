"""Train a Zoobot model from scratch on Galaxy Zoo vote counts, with TensorFlow (Keras).

The minimal from-scratch recipe: a catalog with one vote-count column per answer of a decision tree
(a schema), then :func:`zoobot.tensorflow.training.train_with_keras.train`. The PyTorch twin is
``zoobot/pytorch/examples/train_model.py``.

Usage::

    python zoobot/tensorflow/examples/train_model.py --catalog catalog.parquet --save-dir results/run
    python zoobot/tensorflow/examples/train_model.py --smoke --save-dir /tmp/smoke   # synthetic, tiny, CPU

The catalog needs ``id_str``, ``file_loc`` (jpg/png/fits paths) and the schema's ``label_cols``
(``decals_dr5_ortho_schema`` by default; ``--schema`` picks another prebuilt one). The output folder
holds ``checkpoints/`` (best ``epoch=N.keras`` files and ``last.keras``), ``logs/metrics.csv``,
``config.json`` and the split catalogs; predict with ``make_predictions.py``.
"""
from __future__ import annotations

import argparse
import logging
import pathlib


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--catalog", help="catalog (.csv or .parquet) with id_str, file_loc and vote counts")
    parser.add_argument("--save-dir", default="results/train_model_tf", help="output folder")
    parser.add_argument("--schema", default="decals_dr5_ortho", help="prebuilt schema name (zoobot schemas)")
    parser.add_argument("--architecture", default="efficientnet_b0", help="Keras encoder, e.g. efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--resize-size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--color", action="store_true", help="3-channel colour input (default greyscale)")
    parser.add_argument("--gpus", type=int, default=1, help="maximum GPUs to use (0: CPU)")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic galaxies, tiny_cnn, 1 epoch, CPU")
    args = parser.parse_args(argv)
    if args.catalog is None and not args.smoke:
        parser.error("give --catalog, or --smoke for a quick run on synthetic galaxies")
    return args


def main(argv=None):
    """Run the example; returns ``(model, trainer)``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from zoobot.shared import catalogs, schemas
    from zoobot.tensorflow.training import train_with_keras

    schema = schemas.get_schema(args.schema)
    save_dir = pathlib.Path(args.save_dir)
    options = dict(model_architecture=args.architecture, batch_size=args.batch_size, epochs=args.epochs,
                   patience=args.patience, resize_size=args.resize_size, color=args.color, gpus=args.gpus,
                   num_workers=args.num_workers, mixed_precision=args.mixed_precision, random_state=args.seed)
    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        catalog, _ = make_synthetic_catalog(save_dir / "data", n_galaxies=40, schema=schema, image_size=48,
                                            seed=args.seed, progress=False)
        options.update(model_architecture="tiny_cnn", batch_size=8, epochs=1, resize_size=32, gpus=0,
                       num_workers=1, mixed_precision=False)
    else:
        catalog = catalogs.load_catalog(args.catalog)

    model, trainer = train_with_keras.train(save_dir=save_dir, schema=schema, catalog=catalog, **options)
    print(f"Best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    print(f"Metrics: {trainer.metrics_path}")
    return model, trainer


if __name__ == "__main__":
    main()
