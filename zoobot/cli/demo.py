"""``zoobot demo``: the offline end-to-end demo (:func:`zoobot.demo.run_demo`)."""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import STATE, common_options


@click.command("demo")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default="zoobot_demo",
              show_default=True, help="Output folder (data, models, predictions, report.md, figures/).")
@click.option("--n-galaxies", type=click.IntRange(min=30), default=600, show_default=True,
              help="Labelled ring / no-ring galaxies to finetune on (20 % held out for testing).")
@click.option("--n-pretrain", type=click.IntRange(min=50), default=4000, show_default=True,
              help="Galaxies with GZ DECaLS votes to pretrain the tree model on (cached in --save-dir).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loading worker processes (0: in the main process, fastest for small images).")
@click.option("--quick", is_flag=True, help="Tiny sizes and 1 epoch: a smoke test in well under a minute.")
@click.option("--image-size", type=click.IntRange(min=16), default=None, hidden=True)
@click.option("--pretrain-epochs", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--seed", type=int, default=0, show_default=True)
@common_options
def demo_command(save_dir, n_galaxies, n_pretrain, num_workers, quick, image_size, pretrain_epochs,
                 finetune_epochs, seed):
    """Run zoobot end to end, offline, on synthetic galaxies (a few minutes on a laptop CPU).

    Writes synthetic catalogs, pretrains a small decision-tree model on simulated Galaxy Zoo votes,
    finetunes a ring classifier from it, predicts held-out galaxies and writes report.md with figures.
    """
    from zoobot.demo import run_demo

    settings = dict(seed=seed)
    for key, value in (("image_size", image_size), ("pretrain_epochs", pretrain_epochs),
                       ("finetune_epochs", finetune_epochs)):
        if value is not None:
            settings[key] = value
    if not quick or n_pretrain != 4000:
        settings["n_pretrain"] = n_pretrain
    run_demo(save_dir, n_galaxies=n_galaxies, backend=STATE.backend, quick=quick, num_workers=num_workers,
             echo=click.echo, **settings)


COMMANDS = [demo_command]
