"""Fault injection, PyTorch backend (issue 8): every bad input gets its catalogue error (api.md 0.1) naming
the galaxy and the file, before any model work where it can be found early; prediction in
``on_bad_image='record'`` mode predicts every other row and lists the broken ones in the failures file.

"Before any model work" is checked directly: model construction is replaced by one that fails loudly,
or the encoder's forward calls are counted.
"""
import re

import numpy as np
import pandas as pd
import pytest
import torch

from zoobot.pytorch.datasets import GalaxyDataModule
from zoobot.pytorch.estimators import define_model
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.pytorch.training import finetune
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.shared import errors
from zoobot.shared.errors import CatalogError, ImageLoadError

from .helpers import BROKEN, ODD_BUT_READABLE, RINGS

pytestmark = pytest.mark.torch
torch.set_num_threads(1)

FAST = {"num_workers": 0, "resize_after_crop": 32, "batch_size": 5}
TRAIN = dict(model_architecture="tiny_cnn", batch_size=4, epochs=1, resize_size=32, gpus=0, num_workers=0,
             color=True)


@pytest.fixture(scope="module")
def tree():
    torch.manual_seed(0)
    return define_model.ZoobotTree(RINGS.n_answers, schema=RINGS, architecture_name="tiny_cnn", channels=3).eval()


@pytest.fixture
def count_encoder_calls(tree):
    """Counts forward calls of the model's encoder (every prediction path runs it)."""
    calls = []
    handle = tree.encoder.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    yield calls
    handle.remove()


class ModelBuilt(Exception):
    """Raised instead of building a model: reaching it means validation came too late."""


@pytest.fixture
def no_model_allowed(monkeypatch):
    def explode(*args, **kwargs):
        raise ModelBuilt("a model was built before the bad input was reported")

    monkeypatch.setattr(define_model, "ZoobotTree", explode)


def names(message_part: str, *values) -> None:
    for value in values:
        assert str(value) in message_part, f"{value!r} not named in: {message_part}"


# ---------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_broken_image_raises_its_catalogue_error_naming_id_and_file(kind, broken_catalog, tree):
    catalog, paths = broken_catalog
    one = catalog[catalog["id_str"].isin([catalog["id_str"].iloc[0], kind])]
    error_name, fragment = BROKEN[kind]
    with pytest.raises(getattr(errors, error_name), match=re.escape(fragment) if fragment else None) as caught:
        predict(one, tree, check_valid_paths=False, on_bad_image="raise", datamodule_kwargs=FAST)
    names(str(caught.value), repr(kind), paths[kind])


def test_record_mode_predicts_every_other_row_and_lists_the_broken_ones(tmp_path, broken_catalog, tree):
    catalog, paths = broken_catalog
    save_loc = tmp_path / "preds.parquet"
    with pytest.warns(UserWarning, match=rf"{len(BROKEN)} of {len(catalog)} images could not be read"):
        predictions = predict(catalog, tree, save_loc=save_loc, check_valid_paths=False, datamodule_kwargs=FAST,
                              test_time_dropout=False)
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

    # readable oddities: alpha is dropped, nothing else changes
    by_id = dict(zip(catalog["id_str"], predictions[..., 0]))
    for odd, twin in ODD_BUT_READABLE.items():
        np.testing.assert_array_equal(by_id[odd], by_id[twin])


def test_missing_file_is_reported_before_any_model_work(broken_catalog, tree, count_encoder_calls):
    catalog, paths = broken_catalog
    with pytest.raises(FileNotFoundError, match=r"check_valid_paths=False") as caught:
        predict(catalog, tree, datamodule_kwargs=FAST)
    names(str(caught.value), "missing_png", paths["missing_png"])
    assert count_encoder_calls == []


def test_prediction_catalog_errors_come_before_any_model_work(rings_catalog, tree, count_encoder_calls, tmp_path):
    duplicated = pd.concat([rings_catalog, rings_catalog.iloc[[3]]], ignore_index=True)
    with pytest.raises(CatalogError, match=r"1 duplicated id_str") as caught:
        predict(duplicated, tree, save_loc=tmp_path / "p.parquet", datamodule_kwargs=FAST)
    names(str(caught.value), repr(rings_catalog["id_str"].iloc[3]))
    with pytest.raises(CatalogError, match=r"missing 1 required column.*'file_loc'"):
        predict(rings_catalog.drop(columns=["file_loc"]), tree, datamodule_kwargs=FAST)
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
                                                                        no_model_allowed):
    catalog = rings_catalog.copy()
    error, patterns, row = fault(catalog)
    with pytest.raises(error) as caught:
        twpl.train(tmp_path / "run", RINGS, catalog=catalog, **TRAIN)
    message = str(caught.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    if row is not None:
        names(message, repr(catalog.loc[row, "id_str"]))
    assert not (tmp_path / "run").exists()


def test_fractional_votes_warn_naming_the_rows_before_any_model_is_built(rings_catalog, tmp_path, no_model_allowed):
    catalog = rings_catalog.copy()
    catalog["ring_yes"] = catalog["ring_yes"].astype(float)
    catalog.loc[3, "ring_yes"] += 0.5
    with pytest.warns(UserWarning, match=rf"not whole numbers \(e\.g\. id_str '{catalog.loc[3, 'id_str']}'"):
        with pytest.raises(ModelBuilt):
            twpl.train(tmp_path / "run", RINGS, catalog=catalog, **TRAIN)


def test_a_corrupt_training_image_stops_training_naming_id_and_file(rings_catalog, tmp_path):
    catalog = rings_catalog.copy()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    train, val = catalog.iloc[:12].copy(), catalog.iloc[12:].copy()
    train.loc[train.index[1], "file_loc"] = str(corrupt)
    with pytest.raises(ImageLoadError) as caught:
        twpl.train(tmp_path / "run", RINGS, train_catalog=train, val_catalog=val, **TRAIN)
    names(str(caught.value), repr(train["id_str"].iloc[1]), str(corrupt))


# ---------------------------------------------------------------------------------------------- finetuning labels

def test_classifier_labels_outside_the_range_fail_before_any_model_work(rings_catalog, tmp_path):
    catalog = rings_catalog.copy()
    catalog["label"] = (catalog["ring_yes"] > catalog["ring_no"]).astype(int)
    catalog.loc[6, "label"] = 2  # num_classes=2: only 0 and 1 are valid
    bad_id = catalog.loc[6, "id_str"]
    torch.manual_seed(0)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    datamodule = GalaxyDataModule(label_cols=["label"], catalog=catalog, batch_size=4, resize_after_crop=32,
                                  num_workers=0)
    trainer = finetune.get_trainer(tmp_path / "finetune", accelerator="cpu", max_epochs=1, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)") as caught:
        trainer.fit(model, datamodule)
    names(str(caught.value), "2", repr(bad_id))
    assert calls == [], "the model ran before the bad label was reported"


class _FailsOnThirdBatch(torch.nn.Module):  # its first call is predict's probe of the feature width
    """A user's encoder that works for two batches, then fails as a model does (e.g. out of memory on a big batch)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("CUDA out of memory (simulated by the test model)")
        return self.conv(x).mean(dim=(2, 3))


def test_a_model_error_stops_prediction_and_the_finished_chunks_stay_resumable(rings_catalog, tmp_path,
                                                                               monkeypatch):
    """Issue 12.3, PyTorch: the model's own error stops the run (no row recorded as failed); a rerun computes
    only the rows of unfinished chunks."""
    from zoobot.shared import prediction_runner

    from .helpers import use_chunk_size

    seen = []
    monkeypatch.setattr(prediction_runner, "run_chunked_prediction", use_chunk_size(prediction_runner, 4, seen))
    model, save_loc = _FailsOnThirdBatch(), tmp_path / "features.parquet"
    options = {**FAST, "batch_size": 4, "greyscale": False}
    with pytest.raises(RuntimeError, match="out of memory"):
        predict(rings_catalog, model, save_loc=save_loc, datamodule_kwargs=options)
    assert not save_loc.exists() and not (tmp_path / "features_failures.csv").exists()
    predict(rings_catalog, model, save_loc=save_loc, datamodule_kwargs=options)  # calls 4, 5, ...: it works now
    assert seen[1] == rings_catalog["id_str"].tolist()[8:]  # the two finished chunks were kept
    assert pd.read_parquet(save_loc)["id_str"].tolist() == rings_catalog["id_str"].tolist()
