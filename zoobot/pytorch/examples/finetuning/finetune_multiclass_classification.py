"""Finetune a pretrained Zoobot encoder to sort galaxies into more than two classes.

The default data is Galaxy MNIST (four classes: smooth round, smooth cigar, edge-on disk, unbarred
spiral; column ``label`` = 0..3). Labels must be integer class ids 0..num_classes-1; with unbalanced
classes pass ``--class-weights`` (e.g. inverse class frequencies).

Run::

    python finetune_multiclass_classification.py --data-dir data/galaxy_mnist --save-dir results/multiclass
    python finetune_multiclass_classification.py --smoke   # offline: synthetic galaxies, tiny_cnn, 1 epoch, CPU

``--smoke`` makes a 3-class task from synthetic volunteer votes (the majority answer to
"smooth or featured?": smooth / featured-or-disk / artifact).
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

DEFAULT_ENCODER = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where galaxy_mnist lives / is downloaded to "
                        "(default: data/galaxy_mnist, or a temporary folder with --smoke)")
    parser.add_argument("--save-dir", default=None, help="checkpoints, logs and predictions "
                        "(default: results/finetune_multiclass, or a temporary folder with --smoke)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--n-blocks", type=int, default=0, help="encoder blocks to finetune (0 = head only)")
    parser.add_argument("--class-weights", type=float, nargs="+", default=None, help="one weight per class")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic 3-class task, tiny_cnn, 64 px, 1 epoch, CPU")
    return parser


def _synthetic_classes(data_dir, train: bool):
    """Three classes from synthetic votes: the majority answer to smooth-or-featured."""
    from zoobot.shared import datasets

    catalog, _ = datasets.gz_decals_5(data_dir, download=False, train=train, synthetic=True)
    answers = ["smooth-or-featured-dr5_smooth", "smooth-or-featured-dr5_featured-or-disk",
               "smooth-or-featured-dr5_artifact"]
    catalog = catalog[["id_str", "file_loc"]].assign(label=catalog[answers].to_numpy().argmax(axis=1))
    return catalog, ["label"], len(answers)


def main(argv=None) -> dict:
    """Finetune, predict the held-out galaxies, report accuracy; returns paths and accuracy."""
    args = get_parser().parse_args(argv)
    if args.smoke:
        args.encoder, args.max_epochs, args.resize, args.accelerator, args.num_workers = "tiny_cnn", 1, 64, "cpu", 0
        args.learning_rate = 1e-3
    data_dir = pathlib.Path(args.data_dir or (tempfile.mkdtemp(prefix="zoobot_smoke_") if args.smoke
                                              else "data/galaxy_mnist"))
    save_dir = pathlib.Path(args.save_dir or (data_dir / "results" if args.smoke else "results/finetune_multiclass"))

    import numpy as np

    from zoobot.pytorch.datasets import GalaxyDataModule
    from zoobot.pytorch.predictions import predict_on_catalog
    from zoobot.pytorch.training import finetune
    from zoobot.shared import datasets

    # 1. galaxies with integer class labels
    if args.smoke:
        train_catalog, label_cols, num_classes = _synthetic_classes(data_dir, train=True)
        test_catalog, _, _ = _synthetic_classes(data_dir, train=False)
    else:
        train_catalog, label_cols = datasets.galaxy_mnist(data_dir, download=True, train=True)
        test_catalog, _ = datasets.galaxy_mnist(data_dir, download=True, train=False)
        num_classes = 4
    datamodule = GalaxyDataModule(label_cols=label_cols, catalog=train_catalog, batch_size=args.batch_size,
                                  resize_after_crop=args.resize, num_workers=args.num_workers)

    # 2. pretrained encoder + a num_classes head, trained with (optionally weighted) cross-entropy
    model = finetune.FinetuneableZoobotClassifier(name=args.encoder, num_classes=num_classes, n_blocks=args.n_blocks,
                                                  class_weights=args.class_weights, learning_rate=args.learning_rate)
    trainer = finetune.get_trainer(save_dir, accelerator=args.accelerator, max_epochs=args.max_epochs,
                                   patience=args.patience)
    trainer.fit(model, datamodule)
    best = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)

    # 3. class probabilities for new galaxies
    save_loc = save_dir / "test_predictions.csv"
    predictions = predict_on_catalog.predict(
        test_catalog, best, save_loc=save_loc,
        datamodule_kwargs={"batch_size": args.batch_size, "num_workers": args.num_workers,
                           "resize_after_crop": args.resize},
        trainer_kwargs={"accelerator": args.accelerator})
    predicted_class = predictions[:, :, 0].argmax(axis=1)
    accuracy = float(np.mean(predicted_class == test_catalog[label_cols[0]].to_numpy()))
    print(f"Predictions: {save_loc}")
    print(f"Test accuracy: {accuracy:.3f} on {len(test_catalog)} galaxies ({num_classes} classes)")
    return {"predictions": str(save_loc), "accuracy": accuracy, "num_classes": num_classes,
            "best_checkpoint": trainer.checkpoint_callback.best_model_path, "save_dir": str(save_dir)}


if __name__ == "__main__":
    main()
