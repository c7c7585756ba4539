"""Replicate the GZ DECaLS DR5 model (Walmsley et al. 2022) with PyTorch on the benchmark splits.

The recipe: the GZ DECaLS DR5 vote counts (``decals_dr5_ortho_schema``), the dataset's own test set
and its train set split 90/10 into train/validation (``random_state``), EfficientNetB0 from scratch,
greyscale 224 x 224 input, batch size 128, early stopping with patience 8, dropout 0.2.

Run::

    python replication/pytorch/train_model_on_decals_dr5_splits.py --data-dir data/gz_decals_5 \\
        --save-dir results/dr5_pytorch --gpus 2
    python replication/pytorch/train_model_on_decals_dr5_splits.py --smoke     # offline CI check

The data (about 250k images) is downloaded into ``--data-dir`` on first use if ``--download`` is given.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data/gz_decals_5", help="where the GZ DECaLS DR5 data is")
    parser.add_argument("--download", action="store_true", help="download the data if it is not in --data-dir")
    parser.add_argument("--save-dir", default=None,
                        help="output folder (default: results/dr5_pytorch, or a temporary folder with --smoke)")
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--resize-size", type=int, default=224)
    parser.add_argument("--dropout-rate", type=float, default=0.2)
    parser.add_argument("--color", action="store_true", help="RGB input (the paper used greyscale)")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--random-state", type=int, default=42)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: 60 synthetic galaxies, tiny_cnn, 32 px, 1 epoch, CPU")
    return parser


def main(argv=None) -> dict:
    """Train on the DR5 benchmark splits; returns the paths of the results."""
    args = get_parser().parse_args(argv)

    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import benchmark_datasets

    if args.smoke:
        from zoobot.shared import schemas
        from zoobot.shared.synthetic import make_synthetic_catalog

        save_dir = pathlib.Path(args.save_dir or tempfile.mkdtemp(prefix="zoobot_smoke_"))
        schema = schemas.decals_dr5_ortho_schema
        catalog, _ = make_synthetic_catalog(save_dir / "data", n_galaxies=60, schema=schema, image_size=32,
                                            progress=False)
        train_and_val, test_catalog = benchmark_datasets.sklearn_style_split(catalog, 0.2, args.random_state)
        train_catalog, val_catalog = benchmark_datasets.sklearn_style_split(train_and_val, 0.1, args.random_state)
        args.architecture, args.epochs, args.resize_size, args.batch_size = "tiny_cnn", 1, 32, 8
        args.gpus, args.num_workers = 0, 0
    else:
        schema, (train_catalog, val_catalog, test_catalog) = benchmark_datasets.get_gz_decals_dr5_benchmark_dataset(
            args.data_dir, random_state=args.random_state, download=args.download)
        save_dir = pathlib.Path(args.save_dir or "results/dr5_pytorch")

    model, trainer = train_with_pytorch_lightning.train(
        save_dir=save_dir,
        schema=schema,
        train_catalog=train_catalog,
        val_catalog=val_catalog,
        test_catalog=test_catalog,
        model_architecture=args.architecture,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        color=args.color,
        resize_size=args.resize_size,
        nodes=args.nodes,
        gpus=args.gpus,
        num_workers=args.num_workers,
        mixed_precision=args.mixed_precision,
        random_state=args.random_state,
        dropout_rate=args.dropout_rate,
    )
    best = trainer.checkpoint_callback.best_model_path
    test_loss = trainer.callback_metrics.get("test/supervised_loss")
    print(f"Best checkpoint: {best}")
    if test_loss is not None:
        print(f"Test loss (best checkpoint): {float(test_loss):.4f}")
    return {"save_dir": str(save_dir), "best_checkpoint": best,
            "test_loss": None if test_loss is None else float(test_loss)}


if __name__ == "__main__":
    main()
