"""``zoobot train``: train a decision-tree model from scratch on vote counts (docs/components/training.md)."""
from __future__ import annotations

import glob
import pathlib
import warnings

import click

from zoobot.cli._common import (
    STATE,
    available_gpus,
    backend_module,
    catalog_options,
    common_options,
    num_workers_option,
    publish_best_checkpoint,
    report_test_metrics,
    read_catalogs,
    resolve_schema,
)

_TRAIN_FUNCTION = {
    "pytorch": ("training.train_with_pytorch_lightning", "train"),
    "tensorflow": ("training.train_with_keras", "train"),
}


def _expand_records(patterns) -> list[str] | None:
    """Expand ``--train-records`` globs into a sorted list of files (None when not given)."""
    if not patterns:
        return None
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"No TFRecord files match {pattern!r}.")
        files.extend(matches)
    return files


def _validate(catalogs: dict, schema) -> None:
    """Check the catalogs (E1-E5) before the framework is even imported."""
    from zoobot.shared.catalogs import validate_catalog

    for key, frame in catalogs.items():
        if frame is not None:
            validate_catalog(frame, schema.label_cols, label_kind="counts", check_valid_paths=True, name=key,
                             label_description=f"label column of schema {schema.name!r}")


@click.command("train")
@catalog_options
@click.option("--schema", "schema_name", default=None, metavar="NAME",
              help="Prebuilt decision tree, e.g. decals_dr5_ortho (see `zoobot schemas`).")
@click.option("--schema-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file with keys question_answer_pairs and dependencies (instead of --schema).")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), required=True,
              help="Output folder: checkpoints/, logs/metrics.csv, config.json, split catalogs.")
@click.option("--architecture", default="efficientnet_b0", show_default=True,
              help="Encoder: a timm name (PyTorch), a Keras application name (TensorFlow), or tiny_cnn.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=1000, show_default=True, help="Maximum epochs.")
@click.option("--patience", type=click.IntRange(min=1), default=8, show_default=True,
              help="Early-stopping patience (epochs without a better validation loss).")
@click.option("--color/--greyscale", default=False, show_default=True,
              help="3-channel colour input, or 1-channel greyscale (mean of R, G, B).")
@click.option("--resize-size", type=click.IntRange(min=8), default=224, show_default=True,
              help="Side of the model input in pixels (after the random crop).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--dropout-rate", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True)
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="Maximum GPUs to use  [default: all visible GPUs; 0 on CPU-only machines].")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True)
@num_workers_option(help="Data-loading worker processes (PyTorch) / parallel calls (TensorFlow).")
@click.option("--mixed-precision", is_flag=True, help="Mixed precision on GPU (ignored with a warning on CPU).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seeds everything, including the split.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from save_dir/checkpoints/last.* when present (the arguments must match).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in --save-dir (its checkpoints, logs and config.json).")
@click.option("--train-records", multiple=True, metavar="GLOB",
              help="TensorFlow only: train from TFRecord shards (see `zoobot shard`) instead of catalogs.")
@click.option("--val-records", multiple=True, metavar="GLOB", help="TensorFlow only: validation shards.")
@click.option("--test-records", multiple=True, metavar="GLOB", help="TensorFlow only: test shards.")
@common_options
def train_command(catalog, train_catalog, val_catalog, test_catalog, schema_name, schema_file, save_dir,
                  architecture, batch_size, epochs, patience, color, resize_size, learning_rate, dropout_rate,
                  gpus, nodes, num_workers, mixed_precision, seed, resume, overwrite, train_records, val_records,
                  test_records):
    """Train a decision-tree model from scratch on Galaxy Zoo vote counts.

    \b
    Example (CPU, small):
      zoobot train --catalog catalog.parquet --schema decals_dr5_ortho --save-dir results/run \\
          --architecture tiny_cnn --resize-size 64 --epochs 5
    """
    schema = resolve_schema(schema_name, schema_file)
    uses_records = bool(train_records or val_records or test_records)
    if uses_records and STATE.backend != "tensorflow":
        raise click.UsageError("--train-records/--val-records/--test-records need --backend tensorflow.")
    if uses_records and (catalog or train_catalog or val_catalog or test_catalog):
        raise click.UsageError("Give catalogs or TFRecord shards (--train-records ...), not both.")
    if uses_records and not (train_records and val_records):
        raise click.UsageError("--train-records and --val-records go together.")
    catalogs = read_catalogs(catalog, train_catalog, val_catalog, test_catalog, required=not uses_records)
    _validate(catalogs, schema)

    module_name, function_name = _TRAIN_FUNCTION[STATE.backend]
    train = getattr(backend_module(module_name), function_name)
    kwargs = dict(
        save_dir=str(save_dir),
        schema=schema,
        **catalogs,
        model_architecture=architecture,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        color=color,
        resize_size=resize_size,
        nodes=nodes,
        gpus=available_gpus() if gpus is None else gpus,
        num_workers=num_workers,
        mixed_precision=mixed_precision,
        random_state=seed,
        learning_rate=learning_rate,
        dropout_rate=dropout_rate,
        resume=resume,
        overwrite=overwrite,
    )
    if uses_records:
        kwargs.update(train_records=_expand_records(train_records), val_records=_expand_records(val_records),
                      test_records=_expand_records(test_records))
    with warnings.catch_warnings():
        # shown once already by _validate, before the framework started: not a second time by train()
        warnings.filterwarnings("ignore", message=r".*are not whole numbers", category=UserWarning)
        _, trainer = train(**kwargs)
    best = getattr(getattr(trainer, "checkpoint_callback", None), "best_model_path", None)
    best = publish_best_checkpoint(best, save_dir) or best
    click.echo(f"Training finished. Best checkpoint: {best}")
    click.echo(f"Metrics per epoch: {save_dir / 'logs' / 'metrics.csv'}")
    test_metrics = getattr(trainer, "test_metrics", None) or getattr(trainer, "callback_metrics", None) or {}
    report_test_metrics({k: v for k, v in test_metrics.items() if str(k).startswith("test/")}, save_dir)
    click.echo(f"Predict with: zoobot --backend {STATE.backend} predict --checkpoint {best} --catalog CATALOG "
               "--save-loc predictions.parquet")


COMMANDS = [train_command]
