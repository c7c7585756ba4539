"""Finetune a pretrained Zoobot encoder on volunteer vote counts of a whole decision tree, with TensorFlow.

The twin of ``zoobot/pytorch/examples/finetuning/finetune_counts_full_tree.py``, for labels that are
Galaxy Zoo votes (one count column per answer): ``FinetuneableZoobotTree`` learns a Dirichlet head for
every question, then the script writes predictions and the friendly/advanced summary tables.

Run::

    python finetune_counts_full_tree.py --checkpoint pretrained/checkpoints/best.keras --save-dir results/tree
    python finetune_counts_full_tree.py --smoke      # offline: synthetic votes, tiny_cnn, 1 epoch, CPU

The encoder: a TensorFlow ZoobotTree (``--checkpoint``) or a saved Keras encoder (``--encoder
local-dir:/folder``). Your data: ``--catalog`` (``id_str``, ``file_loc``, one count column per answer of
``--schema``; 0, never blank). See docs/guides/finetuning.md.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--catalog", default=None, help="your catalog (csv/parquet); default: GZ DECaLS DR5 votes")
    parser.add_argument("--schema", default="decals_dr5_ortho_schema", help="with --catalog: prebuilt schema name "
                        "of its vote columns (see `zoobot schemas`)")
    parser.add_argument("--data-dir", default=None, help="where gz_decals_5 lives / is downloaded to "
                        "(default: data/gz_decals_5, or a temporary folder with --smoke)")
    parser.add_argument("--save-dir", default=None, help="checkpoints, logs, predictions and summaries "
                        "(default: results/finetune_tree_tf, or a temporary folder with --smoke)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="a ZoobotTree .keras file whose encoder to finetune")
    source.add_argument("--encoder", default=None, help="encoder name: local-dir:/folder (with encoder.keras), "
                        "a hub repo with Keras weights, or an architecture (random init, e.g. tiny_cnn)")
    parser.add_argument("--n-blocks", type=int, default=0, help="encoder blocks to finetune (0 = head only)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: 120 synthetic galaxies with votes, tiny_cnn, 64 px, 1 epoch, CPU")
    return parser


def main(argv=None) -> dict:
    """Finetune, predict the held-out galaxies, write predictions and summary tables; returns the paths."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        if args.checkpoint is None:
            args.encoder = args.encoder or "tiny_cnn"
        args.max_epochs, args.resize, args.accelerator, args.num_workers = 1, 64, "cpu", 0
        args.learning_rate = 1e-3
    if args.encoder is None and args.checkpoint is None:
        parser.error("give --checkpoint (a ZoobotTree .keras file) or --encoder, or --smoke for a quick offline run")
    data_dir = pathlib.Path(args.data_dir or (tempfile.mkdtemp(prefix="zoobot_smoke_") if args.smoke
                                              else "data/gz_decals_5"))
    save_dir = pathlib.Path(args.save_dir or (data_dir / "results" if args.smoke else "results/finetune_tree_tf"))

    from zoobot.shared import datasets, load_predictions, schemas
    from zoobot.shared.catalogs import load_catalog, split_catalog
    from zoobot.tensorflow.datasets import GalaxyDataModule
    from zoobot.tensorflow.predictions import predict_on_catalog
    from zoobot.tensorflow.training import finetune

    # 1. the vote counts and their decision tree
    if args.catalog:
        schema = schemas.get_schema(args.schema)
        train_catalog, val_catalog, test_catalog = split_catalog(load_catalog(args.catalog), 0.7, 0.1, 0.2)
    elif args.smoke:  # a small synthetic stand-in for GZ DECaLS DR5, generated offline
        from zoobot.shared.synthetic import make_synthetic_catalog

        schema = schemas.decals_dr5_ortho_schema
        catalog, _ = make_synthetic_catalog(data_dir / "votes", n_galaxies=120, schema=schema, image_size=64,
                                            seed=0, progress=False)
        train_catalog, val_catalog, test_catalog = split_catalog(catalog, 0.6, 0.2, 0.2)
    else:
        schema = schemas.decals_dr5_ortho_schema
        catalog, _ = datasets.gz_decals_5(data_dir, download=True, train=True)
        train_catalog, val_catalog, _ = split_catalog(catalog, 0.8, 0.2, 0.0)
        test_catalog, _ = datasets.gz_decals_5(data_dir, download=True, train=False)

    # 2. a pretrained encoder with a Dirichlet head for every question of the tree
    model = finetune.FinetuneableZoobotTree(schema=schema, name=args.encoder, zoobot_checkpoint_loc=args.checkpoint,
                                            n_blocks=args.n_blocks, learning_rate=args.learning_rate)
    datamodule = GalaxyDataModule(label_cols=schema.label_cols, train_catalog=train_catalog, val_catalog=val_catalog,
                                  batch_size=args.batch_size, resize_after_crop=args.resize,
                                  greyscale=model.channels == 1, num_workers=args.num_workers)
    trainer = finetune.get_trainer(save_dir, accelerator=args.accelerator, max_epochs=args.max_epochs,
                                   patience=args.patience)
    trainer.fit(model, datamodule)
    best = finetune.FinetuneableZoobotTree.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)

    # 3. predictions (concentrations) for new galaxies, then the summary tables
    save_loc = save_dir / "test_predictions.parquet"
    predict_on_catalog.predict(
        test_catalog, best, n_samples=1, save_loc=save_loc,
        datamodule_kwargs={"batch_size": args.batch_size, "num_workers": args.num_workers,
                           "resize_after_crop": args.resize},
        trainer_kwargs={"accelerator": args.accelerator})
    friendly, advanced = load_predictions.predictions_to_summary(save_loc, schema)
    print(f"Predictions: {save_loc}")
    print(f"Summary tables: {load_predictions.summary_paths(save_loc)}")
    print(friendly.head())
    return {"predictions": str(save_loc), "summaries": [str(p) for p in load_predictions.summary_paths(save_loc)],
            "best_checkpoint": trainer.checkpoint_callback.best_model_path, "save_dir": str(save_dir)}


if __name__ == "__main__":
    main()
