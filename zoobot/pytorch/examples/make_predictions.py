"""Predict a catalog with a trained Zoobot model and write predictions plus summary tables.

Loads a checkpoint written by training from scratch (``ZoobotTree``) and writes, for every galaxy of
the catalog, the predicted Dirichlet concentrations of each answer (``--n-samples`` Monte Carlo
dropout samples) and the vote fractions, then the friendly table (vote fractions, NaN
where the question was probably not asked) and the advanced table (90% intervals, probability the
question was asked). Images that cannot be read become NaN rows listed in ``<stem>_failures.csv``.

Run::

    python make_predictions.py --checkpoint results/decals/checkpoints/epoch=12.ckpt \\
        --catalog new_galaxies.parquet --save-loc results/predictions.parquet --n-samples 5
    python make_predictions.py --smoke     # offline: trains a tiny model on synthetic data first
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="ZoobotTree checkpoint (.ckpt)")
    parser.add_argument("--catalog", default=None, help="catalog (csv/parquet) with id_str and file_loc")
    parser.add_argument("--save-loc", default=None, help="predictions file: .parquet, .csv or .hdf5")
    parser.add_argument("--n-samples", type=int, default=5, help="MC-dropout samples per galaxy")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--resize-size", type=int, default=None,
                        help="model input size; default: the training run's (its config.json), else 224")
    parser.add_argument("--accelerator", default="auto", help="'auto', 'cpu' or 'gpu'")
    parser.add_argument("--smoke", action="store_true", help="quick offline check on synthetic data")
    return parser


def training_input_size(checkpoint) -> int | None:
    """The ``resize_after_crop`` recorded in the training run's config.json (``<save_dir>/checkpoints/x.ckpt``)."""
    from zoobot.shared.training_config import read_run_config

    config = read_run_config(pathlib.Path(checkpoint).resolve().parent.parent) or {}
    size = config.get("resize_after_crop")
    return int(size) if isinstance(size, int) else None


def main(argv=None) -> dict:
    """Predict; returns the paths of the predictions and summary files."""
    args = get_parser().parse_args(argv)
    workdir = None
    if args.smoke:  # next to --save-loc if given, else a temporary folder
        workdir = pathlib.Path(args.save_loc).parent if args.save_loc else pathlib.Path(
            tempfile.mkdtemp(prefix="zoobot_smoke_"))

    from zoobot.pytorch.estimators.define_model import ZoobotTree
    from zoobot.pytorch.predictions import predict_on_catalog
    from zoobot.shared import load_predictions
    from zoobot.shared.catalogs import load_catalog

    if args.smoke:
        from zoobot.pytorch.training import train_with_pytorch_lightning
        from zoobot.shared import schemas
        from zoobot.shared.synthetic import make_synthetic_catalog

        catalog, _ = make_synthetic_catalog(workdir / "data", n_galaxies=40, image_size=32, progress=False)
        _, trainer = train_with_pytorch_lightning.train(
            workdir / "run", schemas.decals_dr5_ortho_schema, catalog=catalog, model_architecture="tiny_cnn",
            epochs=1, resize_size=32, batch_size=8, gpus=0, num_workers=0)
        args.checkpoint = trainer.checkpoint_callback.best_model_path
        args.num_workers, args.accelerator, args.n_samples = 0, "cpu", 3
        args.save_loc = args.save_loc or str(workdir / "predictions.parquet")
    elif args.checkpoint is None or args.catalog is None:
        raise SystemExit("--checkpoint and --catalog are required (or --smoke for an offline check)")
    else:
        catalog = load_catalog(args.catalog)
    save_loc = pathlib.Path(args.save_loc or "predictions.parquet")

    model = ZoobotTree.load_from_checkpoint(args.checkpoint)
    size = args.resize_size or training_input_size(args.checkpoint) or model.input_size
    predict_on_catalog.predict(
        catalog, model, n_samples=args.n_samples, save_loc=save_loc,
        datamodule_kwargs={"batch_size": args.batch_size, "num_workers": args.num_workers, "resize_after_crop": size},
        trainer_kwargs={"accelerator": args.accelerator},
    )
    friendly, _ = load_predictions.predictions_to_summary(save_loc, model.schema)
    summaries = [str(p) for p in load_predictions.summary_paths(save_loc)]
    print(f"Predictions: {save_loc}")
    print(f"Summary tables: {summaries}")
    print(friendly.iloc[:5, :4])
    return {"predictions": str(save_loc), "summaries": summaries, "checkpoint": str(args.checkpoint)}


if __name__ == "__main__":
    main()
