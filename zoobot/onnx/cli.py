"""``zoobot predict --model X.onnx``: the command line's ONNX path (docs/guides/onnx.md).

Called by :func:`zoobot.cli.predict.predict_command` when ``--model`` is given; imports no framework.
"""
from __future__ import annotations

import pathlib

import click

__all__ = ["predict_with_onnx"]


def predict_with_onnx(frame, model_path, save_loc, *, n_samples, batch_size, num_workers, no_test_time_dropout,
                      summary, skip_missing, overwrite, shard) -> None:
    """Predict ``frame`` with an ``.onnx`` model and write ``save_loc`` (and the summary tables)."""
    from zoobot.onnx.predict import OnnxModel, predict
    from zoobot.shared.sharding import part_path

    model = OnnxModel(model_path)
    if summary and model.schema is None:
        raise click.UsageError("--summary needs a decision-tree model (ZoobotTree or FinetuneableZoobotTree).")
    target = part_path(save_loc, shard) if shard is not None else pathlib.Path(save_loc)
    if target.exists() and not overwrite:  # never replace earlier predictions silently
        raise FileExistsError(f"{target} already exists. Pass --overwrite to replace it, or choose another "
                              "--save-loc.")
    predictions = predict(frame, model, n_samples=n_samples, save_loc=str(save_loc), batch_size=batch_size,
                          num_workers=num_workers, test_time_dropout=False if no_test_time_dropout else None,
                          check_valid_paths=not skip_missing, shard=shard)
    n_galaxies, n_outputs, n_written = predictions.shape
    click.echo(f"Wrote predictions for {n_galaxies} galaxies ({n_outputs} outputs x {n_written} "
               f"sample{'s' if n_written != 1 else ''}) to {target} (ONNX Runtime, {model_path})")
    if summary:
        from zoobot.shared.load_predictions import predictions_to_summary, summary_paths

        predictions_to_summary(target, model.schema)
        friendly, advanced = summary_paths(target)
        click.echo(f"Summary tables: {friendly} and {advanced}")
