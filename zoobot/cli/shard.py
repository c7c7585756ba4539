"""``zoobot shard``: write TFRecord shards for the TensorFlow backend (docs/components/loading_data.md)."""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import STATE, backend_module, common_options, split_label_cols

_CATALOG = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)


@click.command("shard")
@click.option("--catalog", type=_CATALOG, required=True,
              help="Labelled galaxies (.csv/.parquet: id_str, file_loc, label columns).")
@click.option("--unlabelled-catalog", type=_CATALOG, default=None,
              help="Galaxies without labels, written to unlabelled shards (image + id_str).")
@click.option("--shard-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), required=True,
              help="Output folder (shard_config.json, {train,val,test,unlabelled}_shards/, split catalogs).")
@click.option("--size", type=click.IntRange(min=8), default=300, show_default=True,
              help="Images are stored size x size pixels.")
@click.option("--columns", multiple=True, required=True, metavar="COL",
              help="Label column(s) to store (repeat or comma-separate).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True)
@click.option("--shard-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Galaxies per shard file.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="3: RGB; 1: greyscale (mean of R, G, B).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the train/val/test split.")
@click.option("--overwrite", is_flag=True, help="Replace the contents of a non-empty --shard-dir.")
@common_options
def shard_command(catalog, unlabelled_catalog, shard_dir, size, columns, val_fraction, test_fraction, shard_size,
                  channels, seed, overwrite):
    """Write a catalog's images and labels into TFRecord shards (TensorFlow backend only).

    \b
    Example:
      zoobot --backend tensorflow shard --catalog rings.csv --shard-dir shards --size 128 --columns ring
    """
    if STATE.backend != "tensorflow":
        raise click.UsageError(
            "`zoobot shard` writes TFRecord shards, which only the TensorFlow backend reads. Run it as "
            "`zoobot --backend tensorflow shard ...`; with PyTorch, train directly from the catalog "
            "(`zoobot train --catalog ...`)."
        )
    from zoobot.shared.catalogs import load_catalog

    labelled = load_catalog(catalog)
    unlabelled = load_catalog(unlabelled_catalog) if unlabelled_catalog is not None else None
    create_shards = backend_module("data_utils.create_shards")
    config = create_shards.ShardConfig(shard_dir=str(shard_dir), size=size, shard_size=shard_size,
                                       channels=int(channels))
    config.prepare_shards(labelled, unlabelled, columns_to_save=split_label_cols(columns),
                          val_fraction=val_fraction, test_fraction=test_fraction, overwrite=overwrite, seed=seed)
    click.echo(f"Wrote shards to {shard_dir} (config: {config.config_save_loc})")
    for split, locs in (("train", config.train_tfrecord_locs()), ("val", config.val_tfrecord_locs()),
                        ("test", config.test_tfrecord_locs())):
        click.echo(f"  {split}: {len(locs)} shard file(s)")
    if unlabelled is not None:
        click.echo(f"  unlabelled: {len(config.unlabelled_tfrecord_locs())} shard file(s)")


COMMANDS = [shard_command]
