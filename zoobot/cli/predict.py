"""``zoobot predict`` and ``zoobot representations``: apply a trained model to a catalog
(docs/components/predictions_and_representations.md)."""
from __future__ import annotations

import pathlib

import click

from zoobot.cli._common import (
    backend_module,
    common_options,
    finetune_classes,
    load_model,
    training_input_size,
)

_MODEL_CLASSES = ("tree", "classification", "regression")
_CATALOG = click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)


def _read_catalog(path, skip_missing: bool = False):
    from zoobot.shared.catalogs import load_catalog, validate_catalog

    # id_str and file_loc present, ids unique, files exist (unless --skip-missing): before any model is loaded
    try:
        return validate_catalog(load_catalog(path), label_cols=None, label_kind=None,
                                check_valid_paths=not skip_missing)
    except FileNotFoundError as error:  # E5: the command line's way to go on without the missing files
        raise FileNotFoundError(str(error).replace(
            "pass check_valid_paths=False to skip this check",
            "pass --skip-missing to predict the others (missing files become NaN rows, listed in "
            "<stem>_failures.csv)")) from None


def _check_source(checkpoint, name) -> None:
    if (checkpoint is None) == (name is None):
        raise click.UsageError("Give exactly one of --checkpoint PATH or --name NAME.")


def _datamodule_kwargs(batch_size, num_workers, resize_size, checkpoint, model=None) -> dict:
    kwargs = dict(batch_size=batch_size, num_workers=num_workers)
    recorded = getattr(getattr(model, "preprocessing", None), "input_size", None)
    if resize_size is None and checkpoint is not None and recorded is None:
        # a file saved before models recorded their preprocessing: the training folder's config.json
        resize_size = training_input_size(checkpoint)
    if resize_size is not None:
        kwargs["resize_after_crop"] = resize_size
    return kwargs


@click.command("predict")
@click.option("--catalog", type=_CATALOG, required=True, help="Galaxies to predict (.csv/.parquet: id_str, file_loc).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="Model saved by `zoobot train` / `zoobot finetune` (.ckpt PyTorch, .keras TensorFlow).")
@click.option("--name", default=None, metavar="NAME",
              help="Finetuned model on the Hugging Face hub (hf-hub:owner/repo; needs network once).")
@click.option("--model-class", type=click.Choice(_MODEL_CLASSES), default="tree", show_default=True,
              help="With --name: which finetuned model the hub repository holds.")
@click.option("--model", "onnx_model", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              default=None, help="Exported .onnx model (`zoobot export --format onnx`): predicts with ONNX Runtime, "
                                 "no deep-learning framework needed (docs/guides/onnx.md).")
@click.option("--save-loc", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Output file; .parquet (recommended), .csv or .hdf5.")
@click.option("--n-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Forward passes per galaxy (MC dropout samples for tree models).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--resize-size", type=click.IntRange(min=8), default=None,
              help="Model input size  [default: the size the model records, else its training folder's "
                   "config.json, else 224].")
@click.option("--tta", is_flag=True, help="Test-time augmentation (random rotations/crops per sample).")
@click.option("--no-test-time-dropout", is_flag=True, help="Switch MC dropout off (deterministic predictions).")
@click.option("--summary", is_flag=True,
              help="Tree models: also write <stem>_friendly.parquet and <stem>_advanced.parquet.")
@click.option("--skip-missing", is_flag=True,
              help="Go on when image files are missing: their rows are NaN, listed in <stem>_failures.csv.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --save-loc file.")
@click.option("--shard", default=None, metavar="R/N|auto",
              help="Predict only part R of N (a stable hash of id_str) into <stem>.part-R-of-N<suffix>; 'auto' "
                   "reads R and N from torchrun/SLURM/TF_CONFIG. Then `zoobot merge-predictions`.")
@common_options
def predict_command(catalog, checkpoint, name, model_class, onnx_model, save_loc, n_samples, batch_size, num_workers,
                    resize_size, tta, no_test_time_dropout, summary, skip_missing, overwrite, shard):
    """Predict every galaxy of a catalog and write one row per id_str.

    \b
    Example:
      zoobot predict --catalog galaxies.csv --checkpoint results/run/checkpoints/last.ckpt \\
          --save-loc predictions.parquet --n-samples 5 --summary
    """
    if onnx_model is not None:  # ONNX Runtime: no framework is imported on this path
        return _predict_onnx(catalog, checkpoint, name, onnx_model, save_loc, n_samples, batch_size, num_workers,
                             resize_size, tta, no_test_time_dropout, summary, skip_missing, overwrite, shard)
    _check_source(checkpoint, name)
    from zoobot.shared.save_predictions import prediction_format
    from zoobot.shared.sharding import parse_shard, part_path

    prediction_format(save_loc)  # unknown extension: E13 before any work
    try:
        shard = parse_shard(shard)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--shard") from None
    frame = _read_catalog(catalog, skip_missing)
    if checkpoint is not None:
        model = load_model(checkpoint)
    else:
        model = finetune_classes()[model_class].load_from_name(name)
    schema = getattr(model, "schema", None)
    if summary and schema is None:
        raise click.UsageError("--summary needs a decision-tree model (ZoobotTree or FinetuneableZoobotTree).")
    target = part_path(save_loc, shard) if shard is not None else save_loc  # a shard writes its own part file
    if target.exists() and not overwrite:  # never replace earlier predictions silently
        raise FileExistsError(f"{target} already exists. Pass --overwrite to replace it, or choose another "
                              "--save-loc.")

    predict = backend_module("predictions.predict_on_catalog").predict
    predictions = predict(
        frame, model, n_samples=n_samples, save_loc=str(save_loc),
        datamodule_kwargs=_datamodule_kwargs(batch_size, num_workers, resize_size, checkpoint, model),
        test_time_dropout=False if no_test_time_dropout else None, test_time_augmentation=tta,
        check_valid_paths=not skip_missing, shard=shard,
    )
    save_loc = target
    n_galaxies, n_outputs, n_samples_written = predictions.shape
    click.echo(f"Wrote predictions for {n_galaxies} galaxies ({n_outputs} outputs x {n_samples_written} "
               f"sample{'s' if n_samples_written != 1 else ''}) to {save_loc}")
    if summary:
        from zoobot.shared.load_predictions import predictions_to_summary, summary_paths

        predictions_to_summary(save_loc, schema)
        friendly, advanced = summary_paths(save_loc)
        click.echo(f"Summary tables: {friendly} and {advanced}")


def _predict_onnx(catalog, checkpoint, name, onnx_model, save_loc, n_samples, batch_size, num_workers, resize_size,
                  tta, no_test_time_dropout, summary, skip_missing, overwrite, shard):
    if checkpoint is not None or name is not None:
        raise click.UsageError("Give one of --checkpoint PATH, --name NAME or --model X.onnx.")
    if tta or resize_size is not None:
        raise click.UsageError("--tta and --resize-size do not apply to an .onnx model (its input size is fixed).")
    from zoobot.onnx.cli import predict_with_onnx
    from zoobot.shared.save_predictions import prediction_format
    from zoobot.shared.sharding import parse_shard

    prediction_format(save_loc)  # unknown extension: E13 before any work
    try:
        shard = parse_shard(shard)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--shard") from None
    predict_with_onnx(_read_catalog(catalog, skip_missing), onnx_model, save_loc, n_samples=n_samples,
                      batch_size=batch_size, num_workers=num_workers, no_test_time_dropout=no_test_time_dropout,
                      summary=summary, skip_missing=skip_missing, overwrite=overwrite, shard=shard)


@click.command("representations")
@click.option("--catalog", type=_CATALOG, required=True, help="Galaxies (.csv/.parquet: id_str, file_loc).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), default=None,
              help="Model saved by `zoobot train` / `zoobot finetune`; its encoder is used.")
@click.option("--name", default=None, metavar="NAME",
              help="Pretrained encoder, e.g. hf-hub:mwalmsley/zoobot-encoder-convnext_nano (needs network once).")
@click.option("--model", "onnx_model", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              default=None, help="Exported .onnx model (`zoobot export --format onnx`): its encoder's features, "
                                 "with ONNX Runtime and no deep-learning framework (docs/guides/onnx.md).")
@click.option("--save-loc", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True,
              help="Output .parquet: id_str, feat_0 .. feat_{d-1}.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--resize-size", type=click.IntRange(min=8), default=None,
              help="Model input size  [default: the size recorded next to the checkpoint, else the model's].")
@click.option("--pca", "pca_components", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also write the first N principal components to <stem>_pca.parquet (needs scikit-learn).")
@common_options
def representations_command(catalog, checkpoint, name, onnx_model, save_loc, batch_size, num_workers, resize_size,
                            pca_components):
    """Encoder features ("representations") of every galaxy, for similarity search, clustering, etc.

    \b
    Example:
      zoobot representations --catalog galaxies.csv --checkpoint results/run/checkpoints/last.ckpt \\
          --save-loc representations.parquet --pca 10
    """
    if onnx_model is not None and (checkpoint is not None or name is not None):
        raise click.UsageError("Give one of --checkpoint PATH, --name NAME or --model X.onnx.")
    if onnx_model is None:
        _check_source(checkpoint, name)
    if pathlib.Path(save_loc).suffix.lower() != ".parquet":
        raise click.BadParameter("representations are written as .parquet", param_hint="--save-loc")
    frame = _read_catalog(catalog)
    if onnx_model is not None:
        if resize_size is not None:
            raise click.UsageError("--resize-size does not apply to an .onnx model (its input size is fixed).")
        from zoobot.onnx import get_representations

        table = get_representations(frame, onnx_model, save_loc=str(save_loc), batch_size=batch_size,
                                    num_workers=num_workers)
    else:
        representations = backend_module("training.representations")
        model = load_model(checkpoint) if checkpoint is not None else name
        table = representations.get_representations(
            frame, model, save_loc=str(save_loc), batch_size=batch_size,
            datamodule_kwargs=_datamodule_kwargs(batch_size, num_workers, resize_size, checkpoint, model),
        )
    n_features = sum(1 for c in table.columns if str(c).startswith("feat_"))
    click.echo(f"Wrote {n_features} features for {len(table)} galaxies to {save_loc}")
    if pca_components is not None:
        from zoobot.shared.compress_representations import create_pca_dataframe

        pca_loc = pathlib.Path(save_loc).with_name(pathlib.Path(save_loc).stem + "_pca.parquet")
        create_pca_dataframe(table, pca_components).to_parquet(pca_loc, index=False)
        click.echo(f"Wrote {pca_components} principal components to {pca_loc}")


COMMANDS = [predict_command, representations_command]
