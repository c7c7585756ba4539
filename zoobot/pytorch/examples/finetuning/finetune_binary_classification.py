"""Finetune a pretrained Zoobot encoder to find ringed galaxies: the documentation's walkthrough.

Steps (each one line below): get labelled galaxies (``demo_rings``) -> wrap them in a
``GalaxyDataModule`` -> load a pretrained encoder with a new 2-class head -> train the head
(``n_blocks=0``: the encoder stays frozen, which works well for a few hundred galaxies on a laptop)
-> reload the best checkpoint -> predict new galaxies.

Run::

    python finetune_binary_classification.py --data-dir data/demo_rings --save-dir results/rings
    python finetune_binary_classification.py --smoke      # offline: synthetic rings, tiny_cnn, 1 epoch, CPU

The pretrained encoder is downloaded once from the Hugging Face Hub and cached; afterwards (or with
``HF_HUB_OFFLINE=1`` and the files cached) nothing touches the network.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

DEFAULT_ENCODER = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where demo_rings lives / is downloaded to "
                        "(default: data/demo_rings, or a temporary folder with --smoke)")
    parser.add_argument("--save-dir", default=None, help="checkpoints, logs and predictions "
                        "(default: results/finetune_binary, or a temporary folder with --smoke)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="pretrained encoder name (registry, hf_hub:, "
                        "local-dir: or timm)")
    parser.add_argument("--n-blocks", type=int, default=0, help="encoder blocks to finetune (0 = head only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--resize", type=int, default=224, help="image size the encoder sees")
    parser.add_argument("--accelerator", default="auto", help="'auto', 'cpu', 'gpu', ...")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="quick offline check: synthetic rings, tiny_cnn, 64 px, 1 epoch, CPU")
    return parser


def main(argv=None) -> dict:
    """Run the walkthrough; returns paths and the test accuracy (for tests and notebooks)."""
    args = get_parser().parse_args(argv)
    if args.smoke:
        args.encoder, args.max_epochs, args.resize, args.accelerator, args.num_workers = "tiny_cnn", 1, 64, "cpu", 0
    data_dir = pathlib.Path(args.data_dir or (tempfile.mkdtemp(prefix="zoobot_smoke_") if args.smoke
                                              else "data/demo_rings"))
    save_dir = pathlib.Path(args.save_dir or (data_dir / "results" if args.smoke else "results/finetune_binary"))

    import numpy as np

    from zoobot.pytorch.datasets import GalaxyDataModule, demo_rings
    from zoobot.pytorch.predictions import predict_on_catalog
    from zoobot.pytorch.training import finetune

    # 1. labelled galaxies: id_str, file_loc, ring (0/1)
    train_catalog, label_cols = demo_rings(root=data_dir, download=True, train=True, synthetic=args.smoke)
    datamodule = GalaxyDataModule(label_cols=label_cols, catalog=train_catalog, batch_size=args.batch_size,
                                  resize_after_crop=args.resize, num_workers=args.num_workers)

    # 2. pretrained encoder + new head; 3. train the head
    model = finetune.FinetuneableZoobotClassifier(name=args.encoder, num_classes=2, n_blocks=args.n_blocks)
    trainer = finetune.get_trainer(save_dir, accelerator=args.accelerator, max_epochs=args.max_epochs,
                                   patience=args.patience)
    trainer.fit(model, datamodule)

    # 4. the best checkpoint (lowest validation loss), rebuilt offline
    best_checkpoint = trainer.checkpoint_callback.best_model_path
    finetuned_model = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(best_checkpoint)

    # 5. predict galaxies the model has never seen: probabilities of (not ring, ring) per galaxy
    test_catalog, _ = demo_rings(root=data_dir, download=True, train=False, synthetic=args.smoke)
    save_loc = save_dir / "test_predictions.csv"
    predictions = predict_on_catalog.predict(
        test_catalog, finetuned_model, n_samples=1, label_cols=["not_ring", "ring"], save_loc=save_loc,
        datamodule_kwargs={"batch_size": args.batch_size, "num_workers": args.num_workers,
                           "resize_after_crop": args.resize},
        trainer_kwargs={"accelerator": args.accelerator})
    ring_probability = predictions[:, 1, 0]
    accuracy = float(np.mean((ring_probability > 0.5) == test_catalog["ring"].to_numpy().astype(bool)))
    print(f"Best checkpoint: {best_checkpoint}")
    print(f"Predictions: {save_loc}")
    print(f"Test accuracy: {accuracy:.3f} on {len(test_catalog)} galaxies")
    return {"best_checkpoint": best_checkpoint, "predictions": str(save_loc), "accuracy": accuracy,
            "save_dir": str(save_dir)}


if __name__ == "__main__":
    main()
