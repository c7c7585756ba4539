"""``zoobot evaluate``: score tree predictions against volunteer votes and, where known, the truth.

The numbers come from :func:`zoobot.shared.metrics.evaluate_predictions` (docs/guides/evaluating.md);
this module reads the files, prints the table and draws the reliability plot. No deep-learning
framework is imported.
"""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import common_options

_FILE = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
_HEADERS = {
    "n_galaxies": "galaxies",
    "n_votes": "votes",
    "nll_dirichlet_multinomial": "NLL DirMult",
    "nll_multinomial": "NLL mult",
    "vote_coverage": "vote cov",
    "truth_mae": "truth MAE",
    "truth_coverage": "truth cov",
}


def format_table(table) -> str:
    """The tidy metrics table as aligned text: one block of rows per question, '-' where n/a."""
    shown = table.rename(columns=_HEADERS).copy()
    shown["votes"] = shown["votes"].round().astype("int64")
    for column in ("NLL DirMult", "NLL mult", "vote cov", "truth MAE", "truth cov"):
        shown[column] = shown[column].map(lambda v: "-" if v != v else f"{v:.3f}")
    if shown["truth MAE"].eq("-").all():
        shown = shown.drop(columns=["truth MAE", "truth cov"])
    return shown.to_string(index=False)


@click.command("evaluate")
@click.option("--catalog", type=_FILE, required=True,
              help="The predicted galaxies with their vote counts (.csv/.parquet: id_str and the label columns; "
                   "synthetic catalogs also give the truth).")
@click.option("--predictions", type=_FILE, required=True,
              help="Tree predictions from `zoobot predict` (.parquet, .csv or .hdf5).")
@click.option("--train-catalog", type=_FILE, default=None,
              help="Training votes: adds the train-mean and constant-Dirichlet baselines.")
@click.option("--schema", "schema_name", default=None, metavar="NAME",
              help="Decision tree of the predictions  [default: the one recorded in the predictions file].")
@click.option("--interval-width", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True, help="Nominal coverage of the intervals.")
@click.option("--plot", "plot_loc", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Also draw the reliability plot (predicted vs observed fraction; coverage vs nominal) here.")
@click.option("--save-table", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Also write the table (.csv or .parquet).")
@common_options
def evaluate_command(catalog, predictions, train_catalog, schema_name, interval_width, plot_loc, save_table):
    """Score tree predictions per question: vote NLL and interval coverage against the volunteers'
    votes, and (for synthetic catalogs) reach-weighted MAE and coverage of the true probabilities,
    next to image-blind baselines fitted to --train-catalog.

    Lower NLL and MAE are better; a calibrated model's coverage is close to --interval-width (vote
    intervals cover a little more, since counts are whole numbers).
    """
    from zoobot.shared import metrics
    from zoobot.shared.catalogs import load_catalog

    if save_table is not None and save_table.suffix.lower() not in (".csv", ".parquet"):
        raise click.BadParameter("must end in .csv or .parquet", param_hint="--save-table")
    evaluated, concentrations, schema = metrics.load_evaluation_inputs(catalog, predictions, schema_name)
    train = load_catalog(train_catalog) if train_catalog is not None else None
    table = metrics.evaluate_predictions(evaluated, concentrations, schema, train_catalog=train,
                                         interval_width=interval_width)
    click.echo(f"{len(evaluated)} galaxies, schema {schema.name}, {concentrations.shape[2]} sample(s) per galaxy; "
               f"NLL in nats per vote, {interval_width:.0%} intervals")
    click.echo(format_table(table))
    if save_table is not None:
        save_table.parent.mkdir(parents=True, exist_ok=True)
        if save_table.suffix.lower() == ".csv":
            table.to_csv(save_table, index=False)
        else:
            table.to_parquet(save_table, index=False)
        click.echo(f"Table: {save_table}")
    if plot_loc is not None:
        click.echo(f"Reliability plot: {_plot(evaluated, concentrations, schema, plot_loc)}")


def _plot(catalog, concentrations, schema, plot_loc):
    from zoobot.shared import metrics, plots, stats

    counts = metrics.vote_counts(catalog, schema)
    truth = metrics.true_probabilities(catalog, schema) if all(
        f"{c}{metrics.TRUE_PROB_SUFFIX}" in catalog.columns for c in schema.label_cols) else None
    reliability = metrics.reliability_table(stats.vote_fractions(concentrations, schema), counts, schema)
    coverage = metrics.coverage_curve(concentrations, counts, schema, true_probs=truth)
    return plots.plot_reliability(reliability, coverage, plot_loc, title=f"{schema.name}: {len(catalog)} galaxies")


COMMANDS = [evaluate_command]
