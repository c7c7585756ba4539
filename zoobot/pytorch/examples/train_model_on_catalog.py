"""Train a Zoobot model from scratch on one catalog of Galaxy Zoo vote counts.

The catalog (csv or parquet) needs ``id_str``, ``file_loc`` (image paths) and one integer vote-count
column per answer of the decision tree (0, never blank, for answers nobody chose). It is split
70/10/20 into train/validation/test by a hash of ``id_str``. Everything lands in ``--save-dir``:
``checkpoints/`` (best and ``last.ckpt``), ``logs/metrics.csv``, ``config.json`` and the split catalogs.
Rerunning the same command resumes from ``last.ckpt``.

Run::

    python train_model_on_catalog.py --catalog gz_decals.parquet --schema decals_dr5_ortho_schema \\
        --save-dir results/decals --architecture efficientnet_b0 --gpus 2
    python train_model_on_catalog.py --smoke     # offline: synthetic votes, tiny_cnn, 1 epoch, CPU
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--catalog", default=None, help="catalog (csv/parquet) with id_str, file_loc and vote counts")
    parser.add_argument("--schema", default="decals_dr5_ortho_schema",
                        help="prebuilt schema of the vote columns (see `zoobot schemas`)")
    parser.add_argument("--save-dir", default=None, help="output folder (default: a temporary folder with --smoke)")
    parser.add_argument("--architecture", default="efficientnet",
                        help="'efficientnet' (= efficientnet_b0), any timm name, or tiny_cnn")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--color", action="store_true", help="RGB input (default: greyscale)")
    parser.add_argument("--resize-size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--gpus", type=int, default=2, help="maximum GPUs (fewer available: those, with a warning)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--prefetch-factor", type=int, default=4)
    parser.add_argument("--mixed-precision", action="store_true", help="'16-mixed' on GPU")
    parser.add_argument("--seed", type=int, default=42, help="random_state: split, initialisation, augmentation")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if save-dir has last.ckpt")
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: 48 synthetic galaxies, tiny_cnn, 32 px, 1 epoch, CPU")
    return parser


def main(argv=None) -> dict:
    """Train; returns the paths of the results (``save_dir``, ``best_checkpoint``, ``metrics``)."""
    args = get_parser().parse_args(argv)
    if args.smoke:
        args.architecture, args.epochs, args.resize_size, args.gpus = "tiny_cnn", 1, 32, 0
        args.batch_size, args.num_workers = 8, 0
    elif args.catalog is None:
        raise SystemExit("--catalog is required (or --smoke for an offline check)")
    save_dir = pathlib.Path(args.save_dir or tempfile.mkdtemp(prefix="zoobot_smoke_"))

    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import schemas
    from zoobot.shared.catalogs import load_catalog

    schema = schemas.get_schema(args.schema)
    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        catalog, _ = make_synthetic_catalog(save_dir / "data", n_galaxies=48, schema=schema, image_size=32,
                                            progress=False)
    else:
        catalog = load_catalog(args.catalog)

    model, trainer = train_with_pytorch_lightning.train(
        save_dir=save_dir,
        schema=schema,
        catalog=catalog,
        model_architecture=args.architecture,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        color=args.color,
        resize_size=args.resize_size,
        nodes=args.nodes,
        gpus=args.gpus,
        num_workers=args.num_workers,
        prefetch_factor=args.prefetch_factor,
        mixed_precision=args.mixed_precision,
        random_state=args.seed,
        resume=not args.no_resume,
    )
    best = trainer.checkpoint_callback.best_model_path
    print(f"Best checkpoint: {best}")
    print(f"Metrics: {save_dir / 'logs' / 'metrics.csv'}")
    return {"save_dir": str(save_dir), "best_checkpoint": best, "metrics": str(save_dir / "logs" / "metrics.csv")}


if __name__ == "__main__":
    main()
