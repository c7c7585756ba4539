"""A model carries its preprocessing (issue 12 items 1 and 2; docs/reliability.md), in both backends.

End to end on files the tests write: a classifier finetuned at 64 px predicts at 64 px with no size given
(in process, after the checkpoint is copied away from its ``save_dir``, and through ``zoobot predict``);
``ZoobotTree.load_from_checkpoint`` reports the trained size; an explicit contradicting size warns once,
naming both; FITS and PNG files of the same pixels give the same predictions when the scaling matches,
and a model trained on PNGs warns when given FITS.

TensorFlow is imported inside the backend helpers (torchvision must come first; see ``conftest.py``).
"""
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from .helpers import RINGS, TRAIN_RUN, make_catalog, subprocess_env

SIZE = 64  # the finetuning size; predictions at 224 px differ
BACKENDS = [pytest.param("pytorch", marks=pytest.mark.torch), pytest.param("tensorflow", marks=pytest.mark.tf)]
CONTRADICTION = r"trained with other preprocessing than requested: resize_after_crop=224 \(recorded: 64\)"
FITS_WITH_PNG_MODEL = r"was trained on PNG images \(pixels uint8 / 255\) but the catalog holds FITS images"


# ---------------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def class_catalog(tmp_path_factory):
    """12 synthetic 80 px RGB pngs with a 0/1 ``label`` (alternating, so both classes occur)."""
    catalog = make_catalog(tmp_path_factory.mktemp("prep_pngs"), n_galaxies=12, image_size=80)
    catalog["label"] = np.arange(len(catalog)) % 2
    return catalog


def write_fits_twins(catalog, folder) -> pd.DataFrame:
    """The same pixels as FITS: each PNG's uint8 values / 255 as a float32 (3, H, W) cube."""
    from astropy.io import fits
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for id_str, path in zip(catalog["id_str"], catalog["file_loc"]):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        fits_path = folder / f"{id_str}.fits"
        fits.PrimaryHDU(np.moveaxis(pixels, -1, 0)).writeto(fits_path)
        rows.append({"id_str": id_str, "file_loc": str(fits_path)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- backends


class Backend:
    """The same steps in either backend: finetune at 64 px, load a checkpoint, predict."""

    def __init__(self, name):
        self.name = name
        self.suffix = ".ckpt" if name == "pytorch" else ".keras"
        if name == "tensorflow":
            import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
        import importlib

        root = f"zoobot.{name}"
        self.datasets = importlib.import_module(f"{root}.datasets")
        self.finetune_module = importlib.import_module(f"{root}.training.finetune")
        self.define_model = importlib.import_module(f"{root}.estimators.define_model")
        self.predict_module = importlib.import_module(f"{root}.predictions.predict_on_catalog")

    def finetune(self, catalog, save_dir):
        """A tiny_cnn classifier finetuned for one epoch at 64 px; returns ``last`` checkpoint path."""
        datamodule = self.datasets.GalaxyDataModule(
            ["label"], train_catalog=catalog, val_catalog=catalog, resize_after_crop=SIZE, batch_size=4,
            num_workers=0)
        model = self.finetune_module.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=-1,
                                                                  learning_rate=1e-2, seed=0)
        kwargs = dict(logger=False, enable_model_summary=False) if self.name == "pytorch" else {}
        trainer = self.finetune_module.get_trainer(save_dir, max_epochs=1, accelerator="cpu",
                                                   enable_progress_bar=False, **kwargs)
        trainer.fit(model, datamodule)
        return save_dir / "checkpoints" / f"last{self.suffix}"

    def load_classifier(self, path):
        return self.finetune_module.FinetuneableZoobotClassifier.load_from_checkpoint(path)

    def predict(self, catalog, model, **options):
        return self.predict_module.predict(catalog[["id_str", "file_loc"]], model, datamodule_kwargs={
            "num_workers": 0, "batch_size": 4, **options})[..., 0]


@pytest.fixture(scope="module", params=BACKENDS)
def finetuned(request, class_catalog, tmp_path_factory):
    """(backend, checkpoint copied away from its save_dir) of a classifier finetuned at 64 px."""
    backend = Backend(request.param)
    save_dir = tmp_path_factory.mktemp(f"finetuned_{backend.name}")
    last = backend.finetune(class_catalog, save_dir)
    elsewhere = tmp_path_factory.mktemp(f"copied_{backend.name}") / f"model{backend.suffix}"
    shutil.copy(last, elsewhere)
    shutil.rmtree(save_dir)  # nothing of the training folder is left
    return backend, elsewhere


# ---------------------------------------------------------------------------------------------- size


def test_finetuned_model_predicts_at_its_trained_size_with_no_size_given(finetuned, class_catalog):
    backend, path = finetuned
    model = backend.load_classifier(path)
    assert model.input_size == SIZE
    assert model.preprocessing.input_size == SIZE and model.preprocessing.image_formats == ("png",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recorded size agrees with the explicit one: no warning
        default = backend.predict(class_catalog, model)
        explicit = backend.predict(class_catalog, model, resize_after_crop=SIZE)
    np.testing.assert_allclose(default, explicit, rtol=1e-6, atol=1e-7)
    with pytest.warns(UserWarning, match=CONTRADICTION) as record:
        at_224 = backend.predict(class_catalog, model, resize_after_crop=224)
    assert sum("other preprocessing" in str(w.message) for w in record) == 1  # once per call
    assert np.abs(default - at_224).max() > 1e-4


def test_copied_checkpoint_predicts_at_its_trained_size_through_the_cli(finetuned, class_catalog, tmp_path):
    backend, path = finetuned
    catalog_path = tmp_path / "catalog.csv"
    class_catalog[["id_str", "file_loc"]].to_csv(catalog_path, index=False)
    out = tmp_path / "predictions.parquet"
    subprocess.run([sys.executable, "-m", "zoobot", "--backend", backend.name, "predict", "--catalog",
                    str(catalog_path), "--checkpoint", str(path), "--save-loc", str(out), "--num-workers", "0",
                    "--batch-size", "4"],
                   check=True, env=subprocess_env(), capture_output=True, timeout=300)
    written = pd.read_parquet(out)
    expected = backend.predict(class_catalog, backend.load_classifier(path), resize_after_crop=SIZE)
    columns = [c for c in written.columns if c.endswith("_pred_mean")]  # named after the label (issue 17)
    assert len(columns) == 2, written.columns
    np.testing.assert_allclose(written[columns].to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_zoobot_tree_checkpoint_reports_its_trained_size(backend_name, rings_catalog, tmp_path):
    backend = Backend(backend_name)
    if backend_name == "pytorch":
        from zoobot.pytorch.training.train_with_pytorch_lightning import train
    else:
        from zoobot.tensorflow.training.train_with_keras import train
    train(tmp_path / "run", RINGS, catalog=rings_catalog, **{**TRAIN_RUN, "epochs": 1})
    copied = tmp_path / f"copied{backend.suffix}"
    shutil.copy(tmp_path / "run" / "checkpoints" / f"last{backend.suffix}", copied)
    model = backend.define_model.ZoobotTree.load_from_checkpoint(copied)
    assert model.input_size == 32 and model.preprocessing.input_size == 32
    assert model.preprocessing.crop_scale_bounds == (0.7, 0.8) and model.preprocessing.channels == 1
    # finetuning starts from the pretrained model's preprocessing (until fitted on new data)
    finetuned = backend.finetune_module.FinetuneableZoobotClassifier(zoobot_checkpoint_loc=str(copied), num_classes=2)
    assert finetuned.input_size == 32 and finetuned.preprocessing == model.preprocessing


def test_representations_use_the_recorded_size(finetuned, class_catalog):
    import importlib

    backend, path = finetuned
    representations = importlib.import_module(f"zoobot.{backend.name}.training.representations")
    catalog = class_catalog[["id_str", "file_loc"]]

    def features(**options):
        table = representations.get_representations(catalog, str(path), batch_size=4,
                                                    datamodule_kwargs={"num_workers": 0, **options})
        return table.drop(columns="id_str").to_numpy()

    default = features()
    np.testing.assert_allclose(default, features(resize_after_crop=SIZE), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match=CONTRADICTION):
        at_224 = features(resize_after_crop=224)
    assert np.abs(default - at_224).max() > 1e-4


# ---------------------------------------------------------------------------------------------- FITS vs PNG


def test_fits_and_png_of_the_same_pixels_agree_when_the_scaling_matches(finetuned, class_catalog, tmp_path):
    """Tolerance: 1e-5 (float32 resampling of identical [0, 1] pixels); the default percentile stretch of
    the same FITS files changes the pixels and the predictions (> 1e-3)."""
    backend, path = finetuned
    model = backend.load_classifier(path)
    fits_catalog = write_fits_twins(class_catalog, tmp_path / "fits")
    from_png = backend.predict(class_catalog, model)
    with pytest.warns(UserWarning, match=FITS_WITH_PNG_MODEL):
        from_fits = backend.predict(fits_catalog, model, fits_scaling="none")
    np.testing.assert_allclose(from_fits, from_png, atol=1e-5)
    with pytest.warns(UserWarning, match=FITS_WITH_PNG_MODEL + ".*'percentile'"):
        stretched = backend.predict(fits_catalog, model)
    assert np.abs(stretched - from_png).max() > 1e-3


def test_old_checkpoint_without_a_record_warns_that_its_size_is_unknown(finetuned, class_catalog, tmp_path):
    """A file saved before records existed keeps loading and predicting as before, with a warning."""
    backend, path = finetuned
    old = tmp_path / f"old{backend.suffix}"
    _strip_record(backend.name, path, old)
    model = backend.load_classifier(old)
    assert model.preprocessing.input_size is None
    with pytest.warns(UserWarning, match="records no training image size .* using 224 px"):
        backend.predict(class_catalog.iloc[:2], model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend.predict(class_catalog.iloc[:2], model, resize_after_crop=SIZE)  # given: silent


def _strip_record(backend_name, path, out):
    if backend_name == "pytorch":
        import torch

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint.pop("preprocessing")
        torch.save(checkpoint, out)
        return
    import zipfile

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"].pop("preprocessing")
                data = json.dumps(config).encode()
            target.writestr(item, data)
