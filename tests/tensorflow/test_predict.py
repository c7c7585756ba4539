"""Predictions and representations with Keras models (api.md 3.7, 4.4), checked on real image files."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402

from zoobot.shared import load_predictions, schemas  # noqa: E402
from zoobot.shared.errors import ChannelMismatchError, ImageLoadError  # noqa: E402
from zoobot.shared.save_predictions import prediction_columns  # noqa: E402
from zoobot.shared.synthetic import make_synthetic_catalog  # noqa: E402
from zoobot.tensorflow.datasets import GalaxyDataModule  # noqa: E402
from zoobot.tensorflow.estimators.define_model import ZoobotTree, _apply_head, get_model  # noqa: E402
from zoobot.tensorflow.predictions import predict_on_catalog, predict_on_dataset  # noqa: E402
from zoobot.tensorflow.training import representations  # noqa: E402

SCHEMA = schemas.decals_dr5_ortho_schema
FAST = {"batch_size": 4, "num_workers": 1}


@pytest.fixture(scope="module")
def galaxies(tmp_path_factory):
    """10 synthetic 32-pixel jpgs, a corrupt file, and a tiny trained-shape model saved as .keras."""
    root = tmp_path_factory.mktemp("predict")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=10, image_size=32, progress=False)
    catalog = catalog[["id_str", "file_loc"]]
    bad = root / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    keras.utils.set_random_seed(0)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", dropout_rate=0.5)
    model.input_size = 32
    checkpoint = root / "model.keras"
    model.save(checkpoint)
    return {"root": root, "catalog": catalog, "bad": bad, "model": model, "checkpoint": checkpoint}


def with_bad_row(galaxies):
    bad = pd.DataFrame({"id_str": ["broken"], "file_loc": [str(galaxies["bad"])]})
    catalog = galaxies["catalog"]
    return pd.concat([catalog.iloc[:3], bad, catalog.iloc[3:]], ignore_index=True)


def eval_images(catalog, channels=1, size=32):
    datamodule = GalaxyDataModule(label_cols=None, predict_catalog=catalog, greyscale=channels == 1,
                                  resize_after_crop=size, batch_size=64, num_workers=1)
    images, ids = next(iter(datamodule.predict_dataloader()))
    return images.numpy(), [i.decode() for i in ids.numpy()]


def test_tree_predictions_file_layout_and_failures(galaxies, tmp_path):
    catalog = with_bad_row(galaxies)
    save_loc = tmp_path / "preds.parquet"
    with pytest.warns(UserWarning, match="1 of 11 images could not be read"):
        predictions = predict_on_catalog.predict(catalog, galaxies["checkpoint"], n_samples=3, save_loc=save_loc,
                                                 datamodule_kwargs=FAST)
    assert predictions.shape == (11, 34, 3) and predictions.dtype == np.float32
    assert np.isnan(predictions[3]).all() and not np.isnan(np.delete(predictions, 3, axis=0)).any()
    assert np.all((predictions[~np.isnan(predictions)] > 1) & (predictions[~np.isnan(predictions)] < 101))

    table = pd.read_parquet(save_loc)
    assert table.columns.tolist() == ["id_str"] + prediction_columns(SCHEMA.label_cols, 3, kind="tree")
    assert table["id_str"].tolist() == catalog["id_str"].tolist()
    metadata = {k.decode(): v.decode() for k, v in pq.read_schema(save_loc).metadata.items()
                if not k.startswith(b"pandas")}
    for key in ("zoobot_version", "format_version", "model_class", "schema", "n_samples", "test_time_dropout",
                "test_time_augmentation", "backend"):
        assert key in metadata, key
    ids, loaded, label_cols, meta = load_predictions.load(save_loc)
    assert meta["backend"] == "tensorflow" and meta["model_class"] == "ZoobotTree" and meta["n_samples"] == 3
    assert meta["test_time_dropout"] is True and label_cols == SCHEMA.label_cols
    np.testing.assert_array_equal(loaded, predictions)
    failures = pd.read_csv(tmp_path / "preds_failures.csv")
    assert failures.columns.tolist() == ["id_str", "file_loc", "error"]
    assert failures["id_str"].tolist() == ["broken"] and "corrupt.jpg" in failures["file_loc"].iloc[0]
    assert not (tmp_path / "preds.parquet.partial").exists()

    with pytest.raises(ImageLoadError, match=r"'broken'.*corrupt\.jpg"):
        predict_on_catalog.predict(catalog, galaxies["model"], on_bad_image="raise", datamodule_kwargs=FAST)


def test_dropout_augmentation_and_rows_matched_by_id(galaxies, tmp_path):
    catalog, model = galaxies["catalog"], galaxies["model"]
    samples = predict_on_catalog.predict(catalog, model, n_samples=3, datamodule_kwargs=FAST)
    assert np.all(np.std(samples, axis=-1).max(axis=1) > 0)  # MC dropout: the samples differ

    fixed = predict_on_catalog.predict(catalog, model, n_samples=2, datamodule_kwargs=FAST, test_time_dropout=False)
    np.testing.assert_array_equal(fixed[..., 0], fixed[..., 1])
    # the values are the model's outputs (dropout off) on the deterministic eval images, matched by id
    images, ids = eval_images(catalog)
    assert ids == catalog["id_str"].tolist()
    expected = _apply_head(model.head, model.encoder(images, training=False), dropout=False).numpy()
    np.testing.assert_allclose(fixed[..., 0], expected, rtol=1e-5)

    # another row order gives the same prediction per id
    shuffled = catalog.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = predict_on_catalog.predict(shuffled, model, n_samples=1, datamodule_kwargs=FAST, test_time_dropout=False)
    order = [catalog["id_str"].tolist().index(i) for i in shuffled["id_str"]]
    np.testing.assert_allclose(again[..., 0], fixed[order, :, 0], rtol=1e-5)

    # test-time augmentation: new random views per sample even without dropout
    tta = predict_on_catalog.predict(catalog, model, n_samples=2, datamodule_kwargs=FAST, test_time_dropout=False,
                                     test_time_augmentation=True, save_loc=tmp_path / "tta.hdf5")
    assert not np.allclose(tta[..., 0], tta[..., 1])
    _, loaded, _, meta = load_predictions.load(tmp_path / "tta.hdf5")
    assert meta["test_time_augmentation"] is True and meta["test_time_dropout"] is False
    np.testing.assert_array_equal(loaded, tta)


def test_errors_before_any_compute(galaxies, tmp_path):
    catalog, model = galaxies["catalog"], galaxies["model"]
    with pytest.raises(ValueError, match=r"Unknown predictions file extension.*'\.txt'"):
        predict_on_catalog.predict(catalog, model, save_loc=tmp_path / "preds.txt")
    with pytest.raises(ValueError, match="label_cols has width 2 .* expected width 34"):
        predict_on_catalog.predict(catalog, model, label_cols=["a", "b"])
    with pytest.raises(ChannelMismatchError, match="greyscale=False gives 3-channel images but the model"):
        predict_on_catalog.predict(catalog, model, datamodule_kwargs={"greyscale": False})
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict_on_catalog.predict(pd.DataFrame({"id_str": ["x"], "file_loc": [str(tmp_path / "missing.jpg")]}),
                                   model)
    with pytest.raises(NotImplementedError, match="one device per call"):
        predict_on_catalog.predict(catalog, model, trainer_kwargs={"devices": 2})
    assert not list(tmp_path.iterdir())


def test_functional_model_classifier_style_outputs(galaxies):
    """get_model (U1) models have no schema: generic 'answer_i' columns; MC dropout layers follow the flag."""
    model = get_model(34, 32, architecture_name="tiny_cnn", dropout_rate=0.5)
    spec = predict_on_catalog.describe_model(model)
    assert (spec.kind, spec.family, spec.channels, spec.input_size) == ("generic", "tree", 1, 32)
    assert spec.label_cols[:2] == ["answer_0", "answer_1"]
    off = predict_on_catalog.predict(galaxies["catalog"].iloc[:4], model, n_samples=2, test_time_dropout=False,
                                     datamodule_kwargs=FAST)
    np.testing.assert_array_equal(off[..., 0], off[..., 1])


def test_predict_on_dataset_and_paths_in_folder(galaxies, tmp_path):
    root = galaxies["root"]
    paths = predict_on_dataset.paths_in_folder(root / "images", "jpg")
    assert len(paths) == 10 and paths == sorted(paths)
    assert predict_on_dataset.paths_in_folder(root, "jpg") == [str(galaxies["bad"])]
    assert len(predict_on_dataset.paths_in_folder(root, "jpeg", recursive=True)) == 11
    with pytest.raises(ValueError, match="Unknown file_format 'tiff'"):
        predict_on_dataset.paths_in_folder(root, "tiff")

    catalog, model = galaxies["catalog"], galaxies["model"]
    datamodule = GalaxyDataModule(label_cols=None, predict_catalog=catalog, greyscale=True, resize_after_crop=32,
                                  batch_size=4, num_workers=1)
    save_loc = tmp_path / "dataset_preds.csv"
    predictions = predict_on_dataset.predict(datamodule.predict_dataloader(), model, 2, SCHEMA.label_cols, save_loc)
    assert predictions.shape == (10, 34, 2)
    table = pd.read_csv(save_loc)
    assert table["id_str"].tolist() == catalog["id_str"].tolist()
    assert table.columns[1:].tolist() == prediction_columns(SCHEMA.label_cols, 2, kind="tree")
    # the seed's model.predict on the same dataset of (images, id_str)
    assert model.predict(datamodule.predict_dataloader(), verbose=0).shape == (10, 34)


def test_representations_table(galaxies, tmp_path):
    catalog, model = galaxies["catalog"], galaxies["model"]
    save_loc = tmp_path / "reps.parquet"
    table = representations.get_representations(catalog, galaxies["checkpoint"], save_loc=save_loc, batch_size=4,
                                                datamodule_kwargs={"num_workers": 1})
    assert table.columns.tolist() == ["id_str"] + [f"feat_{i}" for i in range(128)]
    assert table["id_str"].tolist() == catalog["id_str"].tolist() and (table.dtypes.iloc[1:] == np.float32).all()
    images, _ = eval_images(catalog)
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), model.encoder(images, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_parquet(save_loc), table)

    encoder = representations.ZoobotEncoder(model.encoder, channels=1, input_size=32)
    encoder.save(tmp_path / "encoder.keras")
    from zoobot.tensorflow.estimators.define_model import load_zoobot_model

    reloaded = load_zoobot_model(tmp_path / "encoder.keras")
    assert isinstance(reloaded, representations.ZoobotEncoder) and reloaded.input_size == 32
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), table.iloc[:, 1:].to_numpy(), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ChannelMismatchError, match="expects C=1 channel.*have C=3"):
        encoder.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    with pytest.raises(ValueError, match="Unknown representations file extension"):
        representations.get_representations(catalog, model, save_loc=tmp_path / "reps.hdf5")


PYTORCH_PREDICT = textwrap.dedent("""
    import sys, json
    import pandas as pd, torch
    torch.set_num_threads(1)
    from zoobot.shared import schemas
    from zoobot.pytorch.estimators.define_model import ZoobotTree
    from zoobot.pytorch.predictions import predict_on_catalog
    catalog = pd.read_parquet(sys.argv[1])
    model = ZoobotTree(34, schema=schemas.decals_dr5_ortho_schema, architecture_name="tiny_cnn")
    model.input_size = 32
    predict_on_catalog.predict(catalog, model, n_samples=3, save_loc=sys.argv[2],
                               datamodule_kwargs={"batch_size": 4, "num_workers": 0})
""")


@pytest.mark.slow
def test_files_have_the_pytorch_layout(galaxies, tmp_path):
    """Both backends write the same columns, metadata keys and failures file for the same catalog."""
    catalog = with_bad_row(galaxies)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    result = subprocess.run([sys.executable, "-c", PYTORCH_PREDICT, str(tmp_path / "catalog.parquet"),
                             str(tmp_path / "torch.parquet")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.warns(UserWarning, match="could not be read"):
        predict_on_catalog.predict(catalog, galaxies["model"], n_samples=3, save_loc=tmp_path / "tf.parquet",
                                   datamodule_kwargs=FAST)
    torch_table, tf_table = pd.read_parquet(tmp_path / "torch.parquet"), pd.read_parquet(tmp_path / "tf.parquet")
    assert tf_table.columns.tolist() == torch_table.columns.tolist()
    assert tf_table["id_str"].tolist() == torch_table["id_str"].tolist()
    assert (tf_table.isna().any(axis=1) == torch_table.isna().any(axis=1)).all()
    assert (tf_table.dtypes == torch_table.dtypes).all()

    def metadata(path):
        return json.loads(json.dumps({k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}))

    torch_meta, tf_meta = metadata(tmp_path / "torch.parquet"), metadata(tmp_path / "tf.parquet")
    assert sorted(torch_meta) == sorted(tf_meta)
    for key in ("zoobot_version", "format_version", "schema", "n_samples", "test_time_dropout"):
        assert tf_meta[key] == torch_meta[key], key
    torch_failures = pd.read_csv(tmp_path / "torch_failures.csv")
    tf_failures = pd.read_csv(tmp_path / "tf_failures.csv")
    assert tf_failures.columns.tolist() == torch_failures.columns.tolist()
    assert tf_failures[["id_str", "file_loc"]].equals(torch_failures[["id_str", "file_loc"]])


def test_one_pipeline_per_call_and_a_bad_image_mid_stream(galaxies, tmp_path, monkeypatch):
    """Chunks only decide when results are flushed: a clean catalog in chunks of 3 is read by one tf.data
    pipeline; an unreadable image mid-stream is isolated and the rest still predicted (each row once)."""
    catalog, model = galaxies["catalog"], galaxies["model"]
    reference = predict_on_catalog.predict(catalog, model, test_time_dropout=False, datamodule_kwargs=FAST)
    pipelines = []
    original = GalaxyDataModule.predict_dataloader

    def counting(self):
        pipelines.append(len(self.predict_catalog))
        return original(self)

    monkeypatch.setattr(GalaxyDataModule, "predict_dataloader", counting)
    save_loc = tmp_path / "clean.parquet"
    clean = predict_on_catalog.predict(catalog, model, test_time_dropout=False, save_loc=save_loc, chunk_size=3,
                                       datamodule_kwargs={**FAST, "batch_size": 2})
    assert pipelines == [10]
    np.testing.assert_allclose(clean, reference, rtol=1e-5, atol=1e-5)
    assert pq.ParquetFile(save_loc).metadata.num_row_groups == 4

    pipelines.clear()
    save_loc = tmp_path / "bad.parquet"
    with pytest.warns(UserWarning, match="1 of 11 images could not be read"):
        mixed = predict_on_catalog.predict(with_bad_row(galaxies), model, test_time_dropout=False, save_loc=save_loc,
                                           chunk_size=3, datamodule_kwargs={**FAST, "batch_size": 2})
    assert pipelines[0] == 11 and len(pipelines) < 8  # a new pipeline only after the error, not per chunk
    assert np.isnan(mixed[3]).all()
    np.testing.assert_allclose(np.delete(mixed, 3, axis=0), reference, rtol=1e-5, atol=1e-5)
    ids, loaded, _, _ = load_predictions.load(save_loc)
    assert ids["id_str"].tolist() == with_bad_row(galaxies)["id_str"].tolist()
    np.testing.assert_array_equal(loaded, mixed)
    assert pd.read_csv(tmp_path / "bad_failures.csv")["id_str"].tolist() == ["broken"]
