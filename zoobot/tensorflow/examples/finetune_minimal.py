"""Minimal finetuning with TensorFlow: a ring / not-ring classifier from a pretrained Zoobot encoder, no shards.

Steps (each one line below): labelled galaxies (``demo_rings``) -> a ``GalaxyDataModule`` (tf.data
pipelines straight from the jpg files: no TFRecord shards to write) -> a pretrained encoder with a new
2-class head -> train the head (``n_blocks=0``: the encoder stays frozen) -> reload the best
checkpoint -> ``model.predict(pred_dataset)`` on galaxies it has never seen.

Run::

    python zoobot/tensorflow/examples/finetune_minimal.py --checkpoint pretrained/checkpoints/best.keras
    python zoobot/tensorflow/examples/finetune_minimal.py --encoder local-dir:/path/to/folder_with_encoder.keras
    python zoobot/tensorflow/examples/finetune_minimal.py --smoke      # offline: synthetic rings, tiny_cnn, CPU

The encoder: a TensorFlow ZoobotTree (``--checkpoint``, e.g. from ``examples/train_model.py``) or a saved
Keras encoder (``--encoder local-dir:...``). See docs/guides/finetuning.md.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where demo_rings lives / is downloaded to "
                        "(default: data/demo_rings, or a temporary folder with --smoke)")
    parser.add_argument("--save-dir", default=None, help="checkpoints and logs "
                        "(default: results/finetune_minimal_tf, or a temporary folder with --smoke)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="a ZoobotTree .keras file whose encoder to finetune")
    source.add_argument("--encoder", default=None, help="encoder name: local-dir:/folder (with encoder.keras), "
                        "a hub repo with Keras weights, or an architecture (random init, e.g. tiny_cnn)")
    parser.add_argument("--n-blocks", type=int, default=0, help="encoder blocks to finetune (0 = head only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--resize", type=int, default=224, help="image size the encoder sees")
    parser.add_argument("--accelerator", default="auto", help="'auto', 'cpu' or 'gpu'")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic rings, tiny_cnn, 64 px, 1 epoch, CPU")
    return parser


def main(argv=None) -> dict:
    """Run the example; returns paths and the test accuracy (for tests and notebooks)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        if args.checkpoint is None:
            args.encoder = args.encoder or "tiny_cnn"
        args.max_epochs, args.resize, args.accelerator, args.num_workers = 1, 64, "cpu", 0
    if args.encoder is None and args.checkpoint is None:
        parser.error("give --checkpoint (a ZoobotTree .keras file) or --encoder, or --smoke for a quick offline run")
    data_dir = pathlib.Path(args.data_dir or (tempfile.mkdtemp(prefix="zoobot_smoke_") if args.smoke
                                              else "data/demo_rings"))
    save_dir = pathlib.Path(args.save_dir or (data_dir / "results" if args.smoke else "results/finetune_minimal_tf"))

    import numpy as np

    from zoobot.tensorflow.datasets import GalaxyDataModule, demo_rings
    from zoobot.tensorflow.training import finetune

    # 1. a pretrained encoder with a new 2-class head (the encoder decides greyscale or colour)
    model = finetune.FinetuneableZoobotClassifier(name=args.encoder, zoobot_checkpoint_loc=args.checkpoint,
                                                  num_classes=2, n_blocks=args.n_blocks)
    greyscale = model.channels == 1

    # 2. labelled galaxies (id_str, file_loc, ring 0/1), read straight from the image files
    train_catalog, label_cols = demo_rings(root=data_dir, download=True, train=True, synthetic=args.smoke)
    datamodule = GalaxyDataModule(label_cols=label_cols, catalog=train_catalog, batch_size=args.batch_size,
                                  resize_after_crop=args.resize, greyscale=greyscale, num_workers=args.num_workers)

    # 3. train the head; the trainer compiles the model itself
    trainer = finetune.get_trainer(save_dir, accelerator=args.accelerator, max_epochs=args.max_epochs,
                                   patience=args.patience)
    trainer.fit(model, datamodule)

    # 4. the best checkpoint (lowest validation loss), rebuilt offline
    best_checkpoint = trainer.checkpoint_callback.best_model_path
    model = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(best_checkpoint)

    # 5. galaxies the model has never seen: (images, id_str) batches in catalog order
    test_catalog, _ = demo_rings(root=data_dir, download=True, train=False, synthetic=args.smoke)
    pred_datamodule = GalaxyDataModule(label_cols=None, predict_catalog=test_catalog, batch_size=args.batch_size,
                                       resize_after_crop=args.resize, greyscale=greyscale,
                                       num_workers=args.num_workers)
    pred_dataset = pred_datamodule.predict_dataloader()
    predictions = model.predict(pred_dataset)  # (N, 2): probabilities of (not ring, ring)

    accuracy = float(np.mean((predictions[:, 1] > 0.5) == test_catalog["ring"].to_numpy().astype(bool)))
    print(f"Best checkpoint: {best_checkpoint}")
    print(f"Test accuracy: {accuracy:.3f} on {len(test_catalog)} galaxies")
    return {"best_checkpoint": best_checkpoint, "predictions": predictions, "accuracy": accuracy,
            "save_dir": str(save_dir)}


if __name__ == "__main__":
    main()
