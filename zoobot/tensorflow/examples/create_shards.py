"""Write a catalog of galaxy images into TFRecord shards, then read one batch back (the seed TFRecord flow).

Shards store every image already resized (PNG, lossless) with its ``id_str`` and label columns, so
training reads a few large files instead of many small images. Next step:
``zoobot/tensorflow/examples/train_model_on_shards.py``.

Usage::

    python -m zoobot.tensorflow.examples.create_shards --catalog labelled.parquet --shard-dir shards \\
        --size 300 --columns ring --train-test-fraction 0.8
    python -m zoobot.tensorflow.examples.create_shards --smoke      # synthetic galaxies, a few seconds

The catalog (csv or parquet) needs ``id_str``, ``file_loc`` and the ``--columns``. With
``--train-test-fraction f`` the galaxies are split f / 1-f into train and val shards (the seed's form);
otherwise ``--val-fraction`` and ``--test-fraction`` give train/val/test shards.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile

logger = logging.getLogger("zoobot.examples.create_shards")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m zoobot.tensorflow.examples.create_shards",
        description="Write a galaxy catalog into TFRecord shards (zoobot TensorFlow backend).",
    )
    parser.add_argument("--catalog", help="labelled catalog (.csv/.parquet) with id_str, file_loc and --columns")
    parser.add_argument("--unlabelled-catalog", help="optional catalog of galaxies without labels (id_str, file_loc)")
    parser.add_argument("--shard-dir", help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--size", type=int, default=300, help="stored image size in pixels (default 300)")
    parser.add_argument("--columns", nargs="*", default=None, help="label columns to store, e.g. --columns ring")
    parser.add_argument("--train-test-fraction", type=float, default=None,
                        help="train fraction; the rest becomes val shards (no test shards)")
    parser.add_argument("--val-fraction", type=float, default=None, help="val fraction (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=None, help="test fraction (default 0.2)")
    parser.add_argument("--shard-size", type=int, default=4096, help="galaxies per shard file (default 4096)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="3 = RGB, 1 = greyscale")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/val/test split")
    parser.add_argument("--overwrite", action="store_true", help="replace the shards in an existing --shard-dir")
    parser.add_argument("--smoke", action="store_true",
                        help="quick self-check on 24 synthetic galaxies (no other arguments needed)")
    args = parser.parse_args(argv)
    if not args.smoke and (args.catalog is None or args.shard_dir is None or args.columns is None):
        parser.error("--catalog, --shard-dir and --columns are required (or use --smoke)")
    return args


def main(argv=None) -> int:
    """Run the example; returns 0 on success."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from zoobot.shared.catalogs import load_catalog
    from zoobot.tensorflow.data_utils import tfrecord_datasets
    from zoobot.tensorflow.data_utils.create_shards import ShardConfig

    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        root = tempfile.mkdtemp(prefix="zoobot_shards_smoke_")
        labelled, columns = make_synthetic_catalog(root, n_galaxies=24, image_size=48, label="ring",
                                                   file_format="jpg", progress=False)
        unlabelled, _ = make_synthetic_catalog(f"{root}/unlabelled", n_galaxies=6, image_size=48, label="ring",
                                               seed=1, file_format="png", progress=False)
        unlabelled = unlabelled[["id_str", "file_loc"]].assign(id_str=lambda df: "unlabelled-" + df["id_str"])
        shard_dir = args.shard_dir or f"{root}/shards"
        size, shard_size, train_test_fraction = 32, 8, 0.8
        fractions = {}
    else:
        labelled = load_catalog(args.catalog)
        unlabelled = load_catalog(args.unlabelled_catalog) if args.unlabelled_catalog else None
        columns, shard_dir, size, shard_size = args.columns, args.shard_dir, args.size, args.shard_size
        train_test_fraction = args.train_test_fraction
        fractions = {k: v for k, v in (("val_fraction", args.val_fraction), ("test_fraction", args.test_fraction))
                     if v is not None}

    shard_config = ShardConfig(shard_dir=shard_dir, size=size, shard_size=shard_size, channels=args.channels)
    shard_config.prepare_shards(labelled, unlabelled, columns_to_save=columns, train_test_fraction=train_test_fraction,
                                overwrite=args.overwrite, seed=args.seed, **fractions)
    print(f"Shards written to {shard_config.shard_dir}: {shard_config.row_counts} galaxies per split")
    print(f"Config: {shard_config.config_save_loc}")

    # read one batch back, as training would
    batch = next(iter(tfrecord_datasets.get_dataset(shard_config.train_tfrecord_locs(), columns, batch_size=8,
                                                    shuffle=True)))
    print(f"First train batch: matrix {tuple(batch['matrix'].shape)} {batch['matrix'].dtype.name}, "
          + ", ".join(f"{col} {batch[col].numpy()[:4].tolist()}" for col in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
