"""``zoobot finetune``: adapt a pretrained encoder to new labels (docs/guides/finetuning.md)."""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import (
    STATE,
    backend_module,
    catalog_options,
    common_options,
    num_workers_option,
    publish_best_checkpoint,
    report_test_metrics,
    finetune_classes,
    read_catalogs,
    resolve_schema,
    split_label_cols,
    training_input_size,
)

TASKS = ("classification", "regression", "tree")
#: Arguments that may change when a killed finetuning run is resumed.
_RESUMABLE_CHANGES = ("max_epochs", "patience")
_LABEL_KIND = {"classification": "class", "regression": "regression", "tree": "counts"}


@click.command("finetune")
@catalog_options
@click.option("--label-cols", multiple=True, metavar="COL",
              help="Label column(s), e.g. ring (repeat or comma-separate). Not needed for --task tree.")
@click.option("--task", type=click.Choice(TASKS), default="classification", show_default=True,
              help="classification: integer class ids; regression: numbers; tree: vote counts of --schema.")
@click.option("--num-classes", type=click.IntRange(min=2), default=2, show_default=True,
              help="Classes for --task classification (labels 0 .. num_classes-1).")
@click.option("--unit-interval", is_flag=True, help="Regression targets in [0, 1] (sigmoid output).")
@click.option("--schema", "schema_name", default=None, metavar="NAME", help="Decision tree for --task tree.")
@click.option("--schema-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON decision tree for --task tree (keys question_answer_pairs, dependencies).")
@click.option("--name", default=None, metavar="NAME",
              help="Pretrained encoder, e.g. hf-hub:mwalmsley/zoobot-encoder-convnext_nano (downloads once).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="Encoder of a model saved by `zoobot train` (instead of --name).")
@click.option("--n-blocks", type=click.IntRange(min=-1), default=0, show_default=True,
              help="Encoder blocks to train, from the top (0: head only; -1: all).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), required=True,
              help="Output folder: checkpoints/, metrics, config.json, test_predictions.parquet.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--accelerator", default="auto", show_default=True, help="auto, cpu or gpu.")
@click.option("--resize-size", type=click.IntRange(min=8), default=None,
              help="Model input size  [default: the size the encoder was trained at].")
@num_workers_option()
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in --save-dir (otherwise it is resumed when the arguments match).")
@common_options
def finetune_command(catalog, train_catalog, val_catalog, test_catalog, label_cols, task, num_classes,
                     unit_interval, schema_name, schema_file, name, checkpoint, n_blocks, learning_rate, batch_size,
                     save_dir, max_epochs, patience, accelerator, resize_size, num_workers, seed, overwrite):
    """Finetune a pretrained encoder (or a `zoobot train` checkpoint) on new labels.

    \b
    Example:
      zoobot finetune --catalog rings.csv --label-cols ring --task classification \\
          --checkpoint results/run/checkpoints/last.ckpt --save-dir results/rings --max-epochs 10
    """
    if (name is None) == (checkpoint is None):
        raise click.UsageError("Give exactly one of --name (pretrained encoder) or --checkpoint (zoobot checkpoint).")
    label_cols, schema = _task_labels(task, label_cols, schema_name, schema_file)

    catalogs = read_catalogs(catalog, train_catalog, val_catalog, test_catalog)
    splits = _validated_splits(catalogs, label_cols, task, num_classes, seed)

    cls = finetune_classes()[task]
    finetune = backend_module("training.finetune")
    model = _build_model(cls, task, name, checkpoint, dict(n_blocks=n_blocks, learning_rate=learning_rate, seed=seed),
                         num_classes, unit_interval, schema)

    channels = int(getattr(model, "channels", 3))
    if resize_size is None:
        default = int(getattr(model, "input_size", 224))
        recorded = getattr(getattr(model, "preprocessing", None), "input_size", None)  # the checkpoint's own record
        resize_size = training_input_size(checkpoint, default) if checkpoint is not None and recorded is None \
            else default
    from zoobot.shared.run_dir import claim_save_dir
    from zoobot.shared.training_config import write_run_config

    config = dict(
        task=task, label_cols=label_cols, num_classes=num_classes if task == "classification" else None,
        schema=schema, name=name, checkpoint=str(checkpoint) if checkpoint else None, n_blocks=n_blocks,
        learning_rate=learning_rate, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
        resize_after_crop=resize_size, channels=channels, seed=seed, model_class=cls.__name__,
    )
    # one run per save_dir: a killed run with the same arguments resumes, another is refused
    last = pathlib.Path(save_dir) / "checkpoints" / ("last.ckpt" if STATE.backend == "pytorch" else "last.keras")
    resuming = claim_save_dir(save_dir, config, resume=True, overwrite=overwrite, resumable=last.is_file(),
                              ignore=_RESUMABLE_CHANGES)

    datamodule = backend_module("datasets").GalaxyDataModule(
        label_cols=label_cols, **splits, batch_size=batch_size, resize_after_crop=resize_size,
        greyscale=channels == 1, num_workers=num_workers, seed=seed,
    )
    trainer = finetune.get_trainer(str(save_dir), max_epochs=max_epochs, patience=patience, accelerator=accelerator)
    write_run_config(save_dir, config, STATE.backend)  # when training starts: a failed set-up leaves no record
    if resuming:
        click.echo(f"Resuming the run in {save_dir} from {last}")
        trainer.fit(model, datamodule, ckpt_path=str(last))
    else:
        trainer.fit(model, datamodule)
    best = publish_best_checkpoint(trainer.checkpoint_callback.best_model_path, save_dir) or \
        trainer.checkpoint_callback.best_model_path
    click.echo(f"Finetuning finished. Best checkpoint: {best}")

    if splits.get("test_catalog") is not None and best:
        _evaluate_on_test(cls, best, trainer, datamodule, splits["test_catalog"], save_dir, task, label_cols,
                          num_classes, dict(batch_size=batch_size, num_workers=num_workers,
                                            resize_after_crop=resize_size))

def _task_labels(task: str, label_cols, schema_name, schema_file):
    """``(label_cols, schema)`` of a finetuning task: a tree's from its schema, otherwise one label column."""
    label_cols = split_label_cols(label_cols)
    schema = resolve_schema(schema_name, schema_file, required=task == "tree")
    if task == "tree":
        if label_cols and label_cols != list(schema.label_cols):
            raise click.UsageError("--task tree takes its label columns from --schema; leave out --label-cols.")
        label_cols = list(schema.label_cols)
    elif schema is not None:
        raise click.UsageError("--schema/--schema-file are for --task tree only.")
    elif not label_cols:
        raise click.UsageError("Missing option '--label-cols' (the column(s) holding the labels).")
    elif len(label_cols) != 1:
        raise click.UsageError(f"--task {task} takes one label column, got {label_cols}.")
    return label_cols, schema


def _build_model(cls, task: str, name, checkpoint, kwargs: dict, num_classes, unit_interval, schema):
    """The finetuneable model of ``task`` on the encoder of ``--name`` or ``--checkpoint``."""
    if task == "classification":
        kwargs["num_classes"] = num_classes
    elif task == "regression":
        kwargs["unit_interval"] = unit_interval
    else:
        kwargs["schema"] = schema
    source = {"name": name} if name is not None else {"zoobot_checkpoint_loc": str(checkpoint)}
    return cls(**source, **kwargs)


def _evaluate_on_test(cls, best, trainer, datamodule, test_catalog, save_dir, task, label_cols, num_classes,
                      datamodule_kwargs: dict) -> None:
    """Test metrics of the best checkpoint, and its predictions for the test galaxies."""
    best_model = cls.load_from_checkpoint(best)
    results = trainer.test(best_model, datamodule=datamodule, verbose=False)
    report_test_metrics(results[0] if results else {}, save_dir)
    predict = backend_module("predictions.predict_on_catalog").predict
    save_loc = pathlib.Path(save_dir) / "test_predictions.parquet"
    predict(test_catalog, best_model, label_cols=_output_names(task, label_cols, num_classes),
            save_loc=str(save_loc), datamodule_kwargs=datamodule_kwargs)
    click.echo(f"Predictions for the {len(test_catalog)} test galaxies: {save_loc}")


def _validated_splits(catalogs: dict, label_cols, task: str, num_classes: int, seed: int) -> dict:
    """Check labels before any model work (E1-E5, E14) and split one catalog 70/10/20."""
    from zoobot.shared.catalogs import split_catalog, validate_catalog

    checked = {}
    for key, frame in catalogs.items():
        if frame is not None:
            checked[key] = validate_catalog(
                frame, label_cols, label_kind=_LABEL_KIND[task], check_valid_paths=True, name=key,
                num_classes=num_classes if task == "classification" else None,
            )
    training = checked.get("catalog", checked.get("train_catalog"))
    if task == "classification" and training is not None:
        _warn_single_class(training, label_cols[0], num_classes)
    if "catalog" in checked:
        train, val, test = split_catalog(checked.pop("catalog"), seed=seed)
        return {"train_catalog": train, "val_catalog": val, "test_catalog": test}
    return checked


def _warn_single_class(catalog, label_col: str, num_classes: int) -> None:
    """A classifier trained on one class learns nothing: say so before any model work."""
    import warnings

    classes = sorted(catalog[label_col].dropna().unique().tolist())
    if len(classes) == 1:
        warnings.warn(f"Every training label in column {label_col!r} is {classes[0]!r}: a classifier of "
                      f"{num_classes} classes cannot learn from one class. Check the label column.", UserWarning,
                      stacklevel=2)


def _output_names(task: str, label_cols: list[str], num_classes: int) -> list[str]:
    """Column stems of the test predictions: one per class, the label column, or the schema's answers."""
    if task == "classification":
        from zoobot.shared.save_predictions import classifier_output_names

        return classifier_output_names(num_classes, label_cols)
    return list(label_cols)


COMMANDS = [finetune_command]
