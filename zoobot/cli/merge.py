"""``zoobot merge-predictions``: one predictions file from the parts of a sharded ``zoobot predict``."""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import common_options


@click.command("merge-predictions")
@click.option("--save-loc", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="The file to write, as given to `zoobot predict --shard R/N --save-loc ...`; the parts "
                   "<stem>.part-R-of-N<suffix> are read from next to it.")
@click.option("--world-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Number of parts  [default: read from the part files' names].")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="The predicted catalog: check that the parts hold exactly its id_str.")
@common_options
def merge_predictions_command(save_loc, world_size, catalog):
    """Merge the part files of `zoobot predict --shard R/N` into one file, each id_str exactly once.

    Refuses (and names what to rerun) when a part is missing or unfinished, or parts overlap.
    Runs anywhere the part files are; needs no deep-learning framework.

    \b
    Example:
      zoobot merge-predictions --save-loc predictions.parquet --catalog galaxies.csv
    """
    from zoobot.shared.sharding import find_parts, merge_parts

    frame = None
    if catalog is not None:
        from zoobot.shared.catalogs import load_catalog

        frame = load_catalog(catalog)
    parts = find_parts(save_loc, world_size)
    merge_parts(save_loc, len(parts), catalog=frame)
    click.echo(f"Merged {len(parts)} parts into {save_loc}")


COMMANDS = [merge_predictions_command]
