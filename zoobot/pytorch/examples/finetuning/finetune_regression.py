"""Finetune a pretrained Zoobot encoder to predict one number per galaxy (regression).

The default target is the fraction of volunteers who called a galaxy "smooth" in GZ DECaLS DR5,
a number in [0, 1], so the model squashes its output with a sigmoid (``unit_interval=True``). For
unbounded targets (e.g. a size in arcsec) drop ``--unit-interval`` and consider ``--loss l1``.

Run::

    python finetune_regression.py --data-dir data/gz_decals_5 --save-dir results/regression
    python finetune_regression.py --smoke      # offline: synthetic votes, tiny_cnn, 1 epoch, CPU

Your own data: ``--catalog my.csv --target my_column`` (columns ``id_str``, ``file_loc``, target).
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

DEFAULT_ENCODER = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"
SMOOTH = "smooth-or-featured-dr5_smooth"
ANSWERS = [SMOOTH, "smooth-or-featured-dr5_featured-or-disk", "smooth-or-featured-dr5_artifact"]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--catalog", default=None, help="your catalog (csv/parquet); default: GZ DECaLS DR5")
    parser.add_argument("--target", default="smooth_fraction", help="with --catalog: the column to predict")
    parser.add_argument("--unit-interval", action=argparse.BooleanOptionalAction, default=True,
                        help="targets lie in [0, 1] (sigmoid output)")
    parser.add_argument("--loss", default="mse", choices=["mse", "l1"])
    parser.add_argument("--data-dir", default=None, help="where gz_decals_5 lives / is downloaded to "
                        "(default: data/gz_decals_5, or a temporary folder with --smoke)")
    parser.add_argument("--save-dir", default=None, help="checkpoints, logs and predictions "
                        "(default: results/finetune_regression, or a temporary folder with --smoke)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--n-blocks", type=int, default=0, help="encoder blocks to finetune (0 = head only)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic votes, tiny_cnn, 64 px, 1 epoch, CPU")
    return parser


def _smooth_fraction(catalog):
    """Keep galaxies with votes; target = fraction of 'smooth' answers."""
    totals = catalog[ANSWERS].sum(axis=1)
    catalog = catalog[totals > 0]
    return catalog[["id_str", "file_loc"]].assign(smooth_fraction=catalog[SMOOTH] / totals[totals > 0])


def main(argv=None) -> dict:
    """Finetune, predict the held-out galaxies, report RMSE; returns paths and RMSE."""
    args = get_parser().parse_args(argv)
    if args.smoke:
        args.encoder, args.max_epochs, args.resize, args.accelerator, args.num_workers = "tiny_cnn", 1, 64, "cpu", 0
        args.learning_rate = 1e-3
    data_dir = pathlib.Path(args.data_dir or (tempfile.mkdtemp(prefix="zoobot_smoke_") if args.smoke
                                              else "data/gz_decals_5"))
    save_dir = pathlib.Path(args.save_dir or (data_dir / "results" if args.smoke else "results/finetune_regression"))

    import numpy as np

    from zoobot.pytorch.datasets import GalaxyDataModule
    from zoobot.pytorch.predictions import predict_on_catalog
    from zoobot.pytorch.training import finetune
    from zoobot.shared import datasets
    from zoobot.shared.catalogs import load_catalog, split_catalog

    # 1. one number per galaxy
    if args.catalog:
        target = args.target
        train_catalog, _, test_catalog = split_catalog(load_catalog(args.catalog), 0.8, 0.0, 0.2)
    else:
        target = "smooth_fraction"
        train_catalog = _smooth_fraction(datasets.gz_decals_5(data_dir, download=True, train=True,
                                                              synthetic=args.smoke)[0])
        test_catalog = _smooth_fraction(datasets.gz_decals_5(data_dir, download=True, train=False,
                                                             synthetic=args.smoke)[0])
    datamodule = GalaxyDataModule(label_cols=[target], catalog=train_catalog, train_fraction=0.8, val_fraction=0.2,
                                  test_fraction=0.0, batch_size=args.batch_size, resize_after_crop=args.resize,
                                  num_workers=args.num_workers)

    # 2. pretrained encoder + a one-output head
    model = finetune.FinetuneableZoobotRegressor(name=args.encoder, loss=args.loss, unit_interval=args.unit_interval,
                                                 n_blocks=args.n_blocks, learning_rate=args.learning_rate)
    trainer = finetune.get_trainer(save_dir, accelerator=args.accelerator, max_epochs=args.max_epochs,
                                   patience=args.patience)
    trainer.fit(model, datamodule)
    best = finetune.FinetuneableZoobotRegressor.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)

    # 3. predictions for new galaxies
    save_loc = save_dir / "test_predictions.csv"
    predictions = predict_on_catalog.predict(
        test_catalog, best, label_cols=[target], save_loc=save_loc,
        datamodule_kwargs={"batch_size": args.batch_size, "num_workers": args.num_workers,
                           "resize_after_crop": args.resize},
        trainer_kwargs={"accelerator": args.accelerator})
    rmse = float(np.sqrt(np.mean((predictions[:, 0, 0] - test_catalog[target].to_numpy()) ** 2)))
    print(f"Predictions: {save_loc}")
    print(f"Test RMSE: {rmse:.4f} on {len(test_catalog)} galaxies (target {target!r}, std "
          f"{test_catalog[target].std():.4f})")
    return {"predictions": str(save_loc), "rmse": rmse,
            "best_checkpoint": trainer.checkpoint_callback.best_model_path, "save_dir": str(save_dir)}


if __name__ == "__main__":
    main()
