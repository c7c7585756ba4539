"""Train a Zoobot model from scratch on TFRecord shards, with TensorFlow (docs/guides/training_from_scratch_tensorflow.md).

Shards pack resized images and labels into a few large files, which read fast from network disks.
First write them (``create_shards.py`` or ``zoobot shard``), then train::

    python zoobot/tensorflow/examples/train_model_on_shards.py --shard-dir data/shards --save-dir results/run
    python zoobot/tensorflow/examples/train_model_on_shards.py --smoke --save-dir /tmp/smoke  # synthetic, tiny, CPU

``--shard-dir`` is a folder written by
:meth:`zoobot.tensorflow.data_utils.create_shards.ShardConfig.prepare_shards` with the schema's label
columns saved (``shard_config.json``, ``train_shards/``, ``val_shards/``, optional ``test_shards/``);
with ``--catalog`` the shards are written there first. Training itself is
:func:`zoobot.tensorflow.training.train_with_keras.train` with ``train_records``/``val_records``.
"""
from __future__ import annotations

import argparse
import logging
import pathlib


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--shard-dir", help="folder of shards (shard_config.json); written first with --catalog")
    parser.add_argument("--catalog", help="catalog to write shards from (id_str, file_loc, vote counts)")
    parser.add_argument("--shard-size-px", type=int, default=300, help="image side stored in new shards")
    parser.add_argument("--save-dir", default="results/train_model_on_shards_tf", help="output folder")
    parser.add_argument("--schema", default="decals_dr5_ortho", help="prebuilt schema name")
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--resize-size", type=int, default=224)
    parser.add_argument("--color", action="store_true")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic galaxies -> shards -> tiny_cnn, 1 epoch, CPU")
    args = parser.parse_args(argv)
    if args.shard_dir is None and not args.smoke:
        parser.error("give --shard-dir (and --catalog to write new shards), or --smoke")
    return args


def main(argv=None):
    """Run the example; returns ``(model, trainer)``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from zoobot.shared import catalogs, schemas
    from zoobot.tensorflow.data_utils.create_shards import ShardConfig, load_shard_config
    from zoobot.tensorflow.training import train_with_keras

    schema = schemas.get_schema(args.schema)
    save_dir = pathlib.Path(args.save_dir)
    options = dict(model_architecture=args.architecture, batch_size=args.batch_size, epochs=args.epochs,
                   patience=args.patience, resize_size=args.resize_size, color=args.color, gpus=args.gpus,
                   random_state=args.seed)
    shard_dir = pathlib.Path(args.shard_dir) if args.shard_dir else save_dir / "shards"
    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        catalog, _ = make_synthetic_catalog(save_dir / "data", n_galaxies=40, schema=schema, image_size=48,
                                            seed=args.seed, progress=False)
        ShardConfig(shard_dir, size=48, shard_size=16).prepare_shards(
            catalog, columns_to_save=list(schema.label_cols), overwrite=True, seed=args.seed, num_workers=1)
        options.update(model_architecture="tiny_cnn", batch_size=8, epochs=1, resize_size=32, gpus=0,
                       num_workers=1, prefetch_factor=1)
    elif args.catalog is not None:
        ShardConfig(shard_dir, size=args.shard_size_px).prepare_shards(
            catalogs.load_catalog(args.catalog), columns_to_save=list(schema.label_cols), seed=args.seed)

    config = load_shard_config(shard_dir)
    test_records = config.test_tfrecord_locs() or None
    model, trainer = train_with_keras.train(
        save_dir=save_dir, schema=schema, train_records=config.train_tfrecord_locs(),
        val_records=config.val_tfrecord_locs(), test_records=test_records, **options)
    print(f"Best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    return model, trainer


if __name__ == "__main__":
    main()
