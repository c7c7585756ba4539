"""The shortest way to train Zoobot from scratch with PyTorch: a decision tree (schema) and a catalog.

The schema says which questions volunteers answered and which answer leads to which question; the
catalog has ``id_str``, ``file_loc`` and one vote-count column per answer (``schema.label_cols``).
The same script works with TensorFlow: ``zoobot/tensorflow/examples/train_model.py``.

Run::

    python train_model.py --catalog my_votes.parquet --save-dir results/minimal
    python train_model.py --smoke       # offline: synthetic votes, tiny_cnn, 1 epoch, CPU
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--catalog", default=None, help="catalog (csv/parquet) with GZ DECaLS DR5 vote counts")
    parser.add_argument("--save-dir", default=None, help="output folder (default: a temporary folder with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="quick offline check on synthetic votes")
    return parser


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    if args.catalog is None and not args.smoke:
        raise SystemExit("--catalog is required (or --smoke for an offline check)")
    save_dir = pathlib.Path(args.save_dir or tempfile.mkdtemp(prefix="zoobot_smoke_"))

    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import label_metadata, schemas
    from zoobot.shared.catalogs import load_catalog

    # the GZ DECaLS DR5 decision tree: questions + answers, and which answer leads to each question
    schema = schemas.Schema(label_metadata.decals_dr5_ortho_pairs, label_metadata.decals_ortho_dependencies)

    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        catalog, _ = make_synthetic_catalog(save_dir / "data", n_galaxies=40, schema=schema, image_size=32,
                                            progress=False)
        options = dict(model_architecture="tiny_cnn", epochs=1, resize_size=32, batch_size=8, gpus=0, num_workers=0)
    else:
        catalog = load_catalog(args.catalog)
        options = dict(model_architecture="efficientnet", epochs=1000, resize_size=224, batch_size=256, gpus=2)

    model, trainer = train_with_pytorch_lightning.train(save_dir=save_dir, schema=schema, catalog=catalog, **options)
    print(f"Best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    return {"save_dir": str(save_dir), "best_checkpoint": trainer.checkpoint_callback.best_model_path}


if __name__ == "__main__":
    main()
