"""Compute encoder representations (features) of every galaxy in a catalog, optionally compressed with PCA.

A pretrained Zoobot encoder maps each image to a vector that sums up its morphology: use them for
similarity search, clustering, anomaly detection, or as inputs to a simple model. The table has
``id_str`` then ``feat_0 .. feat_{d-1}``; with ``--pca N`` a second table ``<stem>_pca.parquet`` holds
``feat_pca_0 .. feat_pca_{N-1}``.

Run::

    python get_representations.py --catalog galaxies.parquet --encoder hf-hub:mwalmsley/zoobot-encoder-convnext_nano \\
        --save-loc results/representations.parquet --pca 10
    python get_representations.py --catalog galaxies.parquet --checkpoint results/decals/checkpoints/last.ckpt
    python get_representations.py --smoke      # offline: synthetic images, random tiny_cnn encoder
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

DEFAULT_ENCODER = "hf-hub:mwalmsley/zoobot-encoder-convnext_nano"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--catalog", default=None, help="catalog (csv/parquet) with id_str and file_loc")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--encoder", default=None, help=f"pretrained encoder name (default {DEFAULT_ENCODER})")
    source.add_argument("--checkpoint", default=None, help="a ZoobotTree or finetuned checkpoint (.ckpt)")
    parser.add_argument("--save-loc", default=None, help="representations table: .parquet or .csv")
    parser.add_argument("--pca", type=int, default=0, help="also write the first N principal components")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--resize-size", type=int, default=None, help="input size (default: the encoder's)")
    parser.add_argument("--smoke", action="store_true", help="quick offline check: synthetic images, tiny_cnn")
    return parser


def main(argv=None) -> dict:
    """Compute (and compress) representations; returns the paths written."""
    args = get_parser().parse_args(argv)

    from zoobot.pytorch.training import representations
    from zoobot.shared.catalogs import load_catalog
    from zoobot.shared.compress_representations import create_pca_dataframe

    if args.smoke:
        from zoobot.shared.synthetic import make_synthetic_catalog

        workdir = pathlib.Path(args.save_loc).parent if args.save_loc else pathlib.Path(
            tempfile.mkdtemp(prefix="zoobot_smoke_"))
        catalog, _ = make_synthetic_catalog(workdir / "data", n_galaxies=24, image_size=32, progress=False)
        model = representations.ZoobotEncoder.load_from_name("tiny_cnn")  # random weights: a pipeline check only
        args.num_workers, args.resize_size, args.pca = 0, 32, args.pca or 3
        args.save_loc = args.save_loc or str(workdir / "representations.parquet")
    elif args.catalog is None:
        raise SystemExit("--catalog is required (or --smoke for an offline check)")
    else:
        catalog = load_catalog(args.catalog)
        model = args.checkpoint or args.encoder or DEFAULT_ENCODER
    save_loc = pathlib.Path(args.save_loc or "representations.parquet")

    datamodule_kwargs = {"num_workers": args.num_workers}
    if args.resize_size:
        datamodule_kwargs["resize_after_crop"] = args.resize_size
    table = representations.get_representations(catalog, model, save_loc=save_loc, batch_size=args.batch_size,
                                                datamodule_kwargs=datamodule_kwargs)
    print(f"Representations ({len(table)} galaxies x {table.shape[1] - 1} features): {save_loc}")
    out = {"representations": str(save_loc)}
    if args.pca:
        pca_loc = save_loc.with_name(save_loc.stem + "_pca.parquet")
        create_pca_dataframe(table, args.pca).to_parquet(pca_loc, index=False)
        print(f"PCA ({args.pca} components): {pca_loc}")
        out["pca"] = str(pca_loc)
    return out


if __name__ == "__main__":
    main()
