"""Predict a catalog of galaxy images with a trained TensorFlow (Keras) Zoobot model.

Loads a ``.keras`` file written by ``train_with_keras.train`` (e.g. ``results/run/checkpoints/last.keras``
or the best ``epoch=N.keras``), predicts every galaxy of a catalog ``--n-samples`` times (Monte Carlo
dropout) and writes the predictions file of docs/components/predictions_and_representations.md, plus
with ``--summary`` the ``_friendly`` / ``_advanced`` tables. Twin: ``zoobot/pytorch/examples/make_predictions.py``.

Usage::

    python zoobot/tensorflow/examples/make_predictions.py --checkpoint results/run/checkpoints/last.keras \\
        --catalog catalog.parquet --save-loc predictions.parquet --n-samples 5 --summary
    python zoobot/tensorflow/examples/make_predictions.py --smoke --save-dir /tmp/smoke   # synthetic, tiny, CPU
Rows are keyed by ``id_str``; unreadable images get NaN rows, listed in ``<stem>_failures.csv``.
"""
from __future__ import annotations

import argparse
import logging
import pathlib


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", help=".keras file of a trained model")
    parser.add_argument("--catalog", help="catalog (.csv or .parquet) with id_str and file_loc")
    parser.add_argument("--save-loc", help="output file (.parquet, .csv, .hdf5)")
    parser.add_argument("--n-samples", type=int, default=5, help="Monte Carlo dropout samples per galaxy")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--summary", action="store_true", help="also write the friendly/advanced tables")
    parser.add_argument("--save-dir", default="results/make_predictions_tf", help="folder for --smoke")
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic galaxies, a tiny_cnn model trained 1 epoch, CPU")
    args = parser.parse_args(argv)
    if not args.smoke and (args.checkpoint is None or args.catalog is None or args.save_loc is None):
        parser.error("give --checkpoint, --catalog and --save-loc, or --smoke")
    return args


def main(argv=None):
    """Run the example; returns the predictions array (galaxies, answers, samples)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from zoobot.shared import catalogs
    from zoobot.tensorflow.predictions import predict_on_catalog

    options = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    if args.smoke:
        save_dir = pathlib.Path(args.save_dir)
        checkpoint, catalog = _smoke_setup(save_dir)
        save_loc = save_dir / "predictions.parquet"
        options = dict(batch_size=16, num_workers=1)
        n_samples = 3
    else:
        checkpoint, catalog = args.checkpoint, catalogs.load_catalog(args.catalog)
        save_loc, n_samples = pathlib.Path(args.save_loc), args.n_samples

    from zoobot.tensorflow.estimators.define_model import load_zoobot_model

    model = load_zoobot_model(checkpoint)
    predictions = predict_on_catalog.predict(catalog, model, n_samples=n_samples, save_loc=save_loc,
                                             datamodule_kwargs=options)
    print(f"Predictions {predictions.shape} written to {save_loc}")
    if args.summary or args.smoke:
        schema = getattr(model, "schema", None)
        if schema is None:
            print("The model has no schema: no summary tables.")
        else:
            from zoobot.shared.load_predictions import predictions_to_summary

            predictions_to_summary(save_loc, schema, save_loc)
            print(f"Summary tables next to {save_loc}")
    return predictions


def _smoke_setup(save_dir: pathlib.Path):
    """A tiny model trained 1 epoch on synthetic galaxies, saved as .keras, and a catalog to predict."""
    from zoobot.shared import schemas
    from zoobot.shared.synthetic import make_synthetic_catalog
    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    schema = schemas.decals_dr5_ortho_schema
    catalog, label_cols = make_synthetic_catalog(save_dir / "data", n_galaxies=24, schema=schema, image_size=32,
                                                 progress=False)
    import numpy as np
    from PIL import Image

    images = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32)[..., None] / 255.0
                       for p in catalog["file_loc"]])
    model = ZoobotTree(schema.n_answers, schema=schema, architecture_name="tiny_cnn", channels=1)
    model.input_size = 32
    model.fit(images, catalog[label_cols].to_numpy(np.float32), batch_size=8, epochs=1, verbose=0)
    checkpoint = save_dir / "model.keras"
    model.save(checkpoint)
    return checkpoint, catalog[["id_str", "file_loc"]]


if __name__ == "__main__":
    main()
