"""Fault injection, TensorFlow backend (issue 8): the twin of ``test_pytorch_faults.py`` - the same broken
inputs give the same catalogue errors (api.md 0.1) naming the galaxy and the file, before any model work
where they can be found early; ``on_bad_image='record'`` predicts every other row and lists the broken ones.

TensorFlow is imported inside the fixtures (torchvision must be imported first; see ``conftest.py``).
"""
import re

import numpy as np
import pandas as pd
import pytest

from zoobot.shared import errors
from zoobot.shared.errors import CatalogError, ImageLoadError

from .helpers import BROKEN, ODD_BUT_READABLE, RINGS

pytestmark = pytest.mark.tf

FAST = {"num_workers": 0, "resize_after_crop": 32, "batch_size": 5}
TRAIN = dict(model_architecture="tiny_cnn", batch_size=4, epochs=1, resize_size=32, gpus=0, num_workers=0,
             color=True)


@pytest.fixture(scope="module")
def tf_modules():
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras
    from zoobot.tensorflow.estimators import define_model
    from zoobot.tensorflow.predictions import predict_on_catalog
    from zoobot.tensorflow.training import finetune, train_with_keras

    return dict(keras=keras, define_model=define_model, predict=predict_on_catalog.predict, finetune=finetune,
                train=train_with_keras.train)


@pytest.fixture(scope="module")
def tree(tf_modules):
    tf_modules["keras"].utils.set_random_seed(0)
    return tf_modules["define_model"].ZoobotTree(RINGS.n_answers, schema=RINGS, architecture_name="tiny_cnn",
                                                 channels=3)


@pytest.fixture
def count_encoder_calls(tree):
    """Counts (Python-level) calls of the model's encoder: any prediction traces or runs it at least once."""
    calls = []
    original = tree.encoder.call

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tree.encoder.call = counting
    yield calls
    tree.encoder.call = original


class ModelBuilt(Exception):
    """Raised instead of building a model: reaching it means validation came too late."""


@pytest.fixture
def no_model_allowed(monkeypatch, tf_modules):
    def explode(*args, **kwargs):
        raise ModelBuilt("a model was built before the bad input was reported")

    monkeypatch.setattr(tf_modules["define_model"], "ZoobotTree", explode)


def names(message: str, *values) -> None:
    for value in values:
        assert str(value) in message, f"{value!r} not named in: {message}"


# ---------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_broken_image_raises_its_catalogue_error_naming_id_and_file(kind, broken_catalog, tree, tf_modules):
    catalog, paths = broken_catalog
    one = catalog[catalog["id_str"].isin([catalog["id_str"].iloc[0], kind])]
    error_name, fragment = BROKEN[kind]
    with pytest.raises(getattr(errors, error_name), match=re.escape(fragment) if fragment else None) as caught:
        tf_modules["predict"](one, tree, check_valid_paths=False, on_bad_image="raise", datamodule_kwargs=FAST)
    names(str(caught.value), repr(kind), paths[kind])


def test_record_mode_predicts_every_other_row_and_lists_the_broken_ones(tmp_path, broken_catalog, tree, tf_modules):
    catalog, paths = broken_catalog
    save_loc = tmp_path / "preds.parquet"
    with pytest.warns(UserWarning, match=rf"{len(BROKEN)} of {len(catalog)} images could not be read"):
        predictions = tf_modules["predict"](catalog, tree, save_loc=save_loc, check_valid_paths=False,
                                            datamodule_kwargs=FAST, test_time_dropout=False)
    broken = catalog["id_str"].isin(list(BROKEN)).to_numpy()
    assert np.isnan(predictions[broken]).all()
    assert np.isfinite(predictions[~broken]).all()

    table = pd.read_parquet(save_loc)
    assert table["id_str"].tolist() == catalog["id_str"].tolist()  # every row once, in catalog order
    failures = pd.read_csv(tmp_path / "preds_failures.csv", dtype=str)
    assert sorted(failures["id_str"]) == sorted(BROKEN)
    for _, row in failures.iterrows():
        assert row["file_loc"] == paths[row["id_str"]]
        assert BROKEN[row["id_str"]][1] in row["error"], row["error"]

    by_id = dict(zip(catalog["id_str"], predictions[..., 0]))
    for odd, twin in ODD_BUT_READABLE.items():  # alpha is dropped, nothing else changes
        np.testing.assert_allclose(by_id[odd], by_id[twin], rtol=1e-6)


def test_missing_file_is_reported_before_any_model_work(broken_catalog, tree, count_encoder_calls, tf_modules):
    catalog, paths = broken_catalog
    with pytest.raises(FileNotFoundError, match=r"check_valid_paths=False") as caught:
        tf_modules["predict"](catalog, tree, datamodule_kwargs=FAST)
    names(str(caught.value), "missing_png", paths["missing_png"])
    assert count_encoder_calls == []


def test_prediction_catalog_errors_come_before_any_model_work(rings_catalog, tree, count_encoder_calls, tmp_path,
                                                              tf_modules):
    duplicated = pd.concat([rings_catalog, rings_catalog.iloc[[3]]], ignore_index=True)
    with pytest.raises(CatalogError, match=r"1 duplicated id_str") as caught:
        tf_modules["predict"](duplicated, tree, save_loc=tmp_path / "p.parquet", datamodule_kwargs=FAST)
    names(str(caught.value), repr(rings_catalog["id_str"].iloc[3]))
    with pytest.raises(CatalogError, match=r"missing 1 required column.*'file_loc'"):
        tf_modules["predict"](rings_catalog.drop(columns=["file_loc"]), tree, datamodule_kwargs=FAST)
    assert count_encoder_calls == []
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- training catalogs

def _nan(catalog):
    catalog.loc[4, "ring_yes"] = np.nan
    return CatalogError, [r"NaN, inf or negative", "(?i)use 0, not NaN", "'ring_yes'"], 4


def _negative(catalog):
    catalog.loc[7, "ring_no"] = -3
    return CatalogError, [r"NaN, inf or negative", "'ring_no'"], 7


def _duplicate(catalog):
    catalog.loc[9, "id_str"] = catalog.loc[2, "id_str"]
    return CatalogError, [r"1 duplicated id_str"], 2


def _missing_column(catalog):
    del catalog["ring_no"]
    return CatalogError, [r"missing 1 required column", "'ring_no'", "gz_rings"], None


def _missing_file(catalog):
    catalog.loc[5, "file_loc"] = catalog.loc[5, "file_loc"] + ".gone"
    return FileNotFoundError, [r"1 of 20 file_loc", r"check_valid_paths=False", r"\.gone"], 5


@pytest.mark.parametrize("fault", [_nan, _negative, _duplicate, _missing_column, _missing_file],
                         ids=lambda f: f.__name__.strip("_"))
def test_training_catalog_faults_are_reported_before_any_model_is_built(fault, rings_catalog, tmp_path,
                                                                        no_model_allowed, tf_modules):
    catalog = rings_catalog.copy()
    error, patterns, row = fault(catalog)
    with pytest.raises(error) as caught:
        tf_modules["train"](tmp_path / "run", RINGS, catalog=catalog, **TRAIN)
    message = str(caught.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    if row is not None:
        names(message, repr(catalog.loc[row, "id_str"]))
    assert not (tmp_path / "run").exists()


def test_fractional_votes_warn_naming_the_rows_before_any_model_is_built(rings_catalog, tmp_path, no_model_allowed,
                                                                         tf_modules):
    catalog = rings_catalog.copy()
    catalog["ring_yes"] = catalog["ring_yes"].astype(float)
    catalog.loc[3, "ring_yes"] += 0.5
    with pytest.warns(UserWarning, match=rf"not whole numbers \(e\.g\. id_str '{catalog.loc[3, 'id_str']}'"):
        with pytest.raises(ModelBuilt):
            tf_modules["train"](tmp_path / "run", RINGS, catalog=catalog, **TRAIN)


def test_a_corrupt_training_image_stops_training_naming_id_and_file(rings_catalog, tmp_path, tf_modules):
    catalog = rings_catalog.copy()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    train, val = catalog.iloc[:12].copy(), catalog.iloc[12:].copy()
    train.loc[train.index[1], "file_loc"] = str(corrupt)
    with pytest.raises(ImageLoadError) as caught:
        tf_modules["train"](tmp_path / "run", RINGS, train_catalog=train, val_catalog=val, **TRAIN)
    names(str(caught.value), repr(train["id_str"].iloc[1]), str(corrupt))


# ---------------------------------------------------------------------------------------------- finetuning labels

def test_classifier_labels_outside_the_range_fail_before_any_model_work(rings_catalog, tmp_path, tf_modules):
    from zoobot.tensorflow.datasets import GalaxyDataModule

    catalog = rings_catalog.copy()
    catalog["label"] = (catalog["ring_yes"] > catalog["ring_no"]).astype(int)
    catalog.loc[6, "label"] = 2  # num_classes=2: only 0 and 1 are valid
    bad_id = catalog.loc[6, "id_str"]
    tf_modules["keras"].utils.set_random_seed(0)
    finetune = tf_modules["finetune"]
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    calls = []
    original = model.encoder.call
    model.encoder.call = lambda *args, **kwargs: (calls.append(1), original(*args, **kwargs))[1]
    datamodule = GalaxyDataModule(label_cols=["label"], catalog=catalog, batch_size=4, resize_after_crop=32,
                                  num_workers=0)
    trainer = finetune.get_trainer(tmp_path / "finetune", accelerator="cpu", max_epochs=1)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)") as caught:
        trainer.fit(model, datamodule)
    names(str(caught.value), "2", repr(bad_id))
    assert calls == [], "the model ran before the bad label was reported"


@pytest.mark.parametrize("on_bad_image", ["raise", "record"])
def test_a_model_error_is_never_reported_as_an_unreadable_image(on_bad_image, rings_catalog, tree, tf_modules,
                                                                tmp_path):
    """Issue 12: 8 px images are too small for tiny_cnn - the model's error, with its own message, in both modes;
    no image is blamed and no row is recorded as failed."""
    save_loc = tmp_path / "preds.parquet"
    with pytest.raises(RuntimeError, match="not an unreadable image") as caught:
        tf_modules["predict"](rings_catalog, tree, save_loc=save_loc, on_bad_image=on_bad_image,
                              datamodule_kwargs={**FAST, "resize_after_crop": 8})
    assert not isinstance(caught.value, ImageLoadError)
    assert "could not be read" not in str(caught.value)
    assert not (tmp_path / "preds_failures.csv").exists()


def test_a_model_error_stops_prediction_and_the_finished_chunks_stay_resumable(rings_catalog, tmp_path, tf_modules,
                                                                               monkeypatch):
    """Issue 12.3, TensorFlow twin of the PyTorch test: a model that fails on its third batch (a Python error
    inside the compiled step, as an out-of-memory error would be) stops the run with its own error; the two
    finished chunks are kept and the rerun computes only the rest."""
    import keras
    import tensorflow as tf

    from zoobot.shared import prediction_runner

    from .helpers import use_chunk_size

    calls = []

    def count(features):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated by the test model)")
        return features

    class FailsOnThirdBatch(keras.layers.Layer):
        def call(self, x):
            out = tf.py_function(count, [x], tf.float32)
            out.set_shape(x.shape)
            return out

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, FailsOnThirdBatch()(pooled))
    seen = []
    monkeypatch.setattr(prediction_runner, "run_chunked_prediction", use_chunk_size(prediction_runner, 4, seen))
    save_loc = tmp_path / "features.parquet"
    options = {**FAST, "batch_size": 4}
    with pytest.raises(RuntimeError, match="out of memory"):
        tf_modules["predict"](rings_catalog, model, save_loc=save_loc, datamodule_kwargs=options)
    assert not save_loc.exists() and not (tmp_path / "features_failures.csv").exists()
    tf_modules["predict"](rings_catalog, model, save_loc=save_loc, datamodule_kwargs=options)
    assert seen[1] == rings_catalog["id_str"].tolist()[8:]
    assert pd.read_parquet(save_loc)["id_str"].tolist() == rings_catalog["id_str"].tolist()


def test_bad_images_in_prediction_print_no_traceback(broken_catalog, release_models, tmp_path):
    """Issue 12.9: the TensorFlow API reports bad images in one summary warning, never with a traceback per image
    (checked in a child process with TensorFlow's own logging at its default level, as a user runs it)."""
    import os
    import subprocess
    import sys

    from .helpers import subprocess_env

    catalog, _ = broken_catalog
    path = tmp_path / "catalog.csv"
    catalog[catalog["id_str"] != "missing_png"].to_csv(path, index=False)
    script = (
        "import pandas as pd, zoobot.tensorflow\n"
        "from zoobot.tensorflow.estimators.define_model import ZoobotTree\n"
        "from zoobot.tensorflow.predictions.predict_on_catalog import predict\n"
        f"predict(pd.read_csv({str(path)!r}), ZoobotTree.load_from_checkpoint({str(release_models['tensorflow'])!r}), "
        f"save_loc={str(tmp_path / 'p.parquet')!r}, on_bad_image='record', "
        "datamodule_kwargs=dict(batch_size=5, num_workers=0))\n"
    )
    env = subprocess_env(PYTHONWARNINGS="default")
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            cwd=os.fspath(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("could not be read; their predictions are NaN") == 1, result.stderr[-3000:]
