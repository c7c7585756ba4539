"""Post-hoc calibration of finetuned trees in the TensorFlow backend, the twin of the PyTorch test
``test_finetuned_tree_is_calibrated_per_checkpoint``: every epoch of ``fit`` refits a per-question concentration
scale on the validation votes; each ``.keras`` checkpoint stores the scale of its own weights (config key
``zoobot_calibration``); ``load_from_checkpoint`` restores it; ``predict`` applies it unless ``calibrate=False``.
The expected scale is an independent fit (``zoobot.shared.calibration.fit_concentration_scale``) to
``model.predict`` on the validation images."""
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import tensorflow as tf  # noqa: E402

from tests.calibration_checks import check_predict_switch, check_scale_maximises_the_likelihood  # noqa: E402
from zoobot.shared import calibration, schemas  # noqa: E402
from zoobot.tensorflow.datasets import GalaxyDataModule  # noqa: E402
from zoobot.tensorflow.datasets.transforms import EvalTransform  # noqa: E402
from zoobot.tensorflow.predictions.predict_on_catalog import predict  # noqa: E402
from zoobot.tensorflow.training import finetune  # noqa: E402

pytestmark = pytest.mark.tf
SCHEMA = schemas.gz_rings_schema
SIZE = 32


def _stored_record(path):
    """The calibration record in a .keras file's config, read from the zip (no zoobot code involved)."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))["config"].get(calibration.CHECKPOINT_KEY)


def _images_and_votes(n=24, seed=0):
    rng = np.random.default_rng(seed)
    # images as the PNG files below will hold them (uint8 / 255), so that files and arrays agree
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype("float32") / 255.0
    votes = rng.integers(0, 9, (n, 2)).astype("float32")
    return images, votes


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    images, votes = _images_and_votes()
    train = tf.data.Dataset.from_tensor_slices((images[:16], votes[:16])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((images[16:], votes[16:])).batch(8)
    model = finetune.FinetuneableZoobotTree(schema=SCHEMA, name="tiny_cnn", learning_rate=0.01)
    save_dir = tmp_path_factory.mktemp("finetuned_tree")
    trainer = finetune.get_trainer(save_dir, accelerator="cpu", max_epochs=2, enable_progress_bar=False)
    trainer.fit(model, (train, val))
    return model, trainer, save_dir, images[16:], votes[16:]


def test_fit_calibrates_the_model_on_the_validation_votes(finetuned):
    model, _, _, images, votes = finetuned
    expected = calibration.fit_concentration_scale(votes, model.predict(images, verbose=0), SCHEMA)
    np.testing.assert_allclose(model.concentration_scale, expected, rtol=1e-4)
    assert model.calibration["n_galaxies"] == 8
    assert sorted(model.calibration["concentration_scale"]) == [q.text for q in SCHEMA.questions]


def test_each_checkpoint_stores_the_scale_of_its_own_weights_and_round_trips(finetuned):
    model, trainer, save_dir, images, votes = finetuned
    last = save_dir / "checkpoints" / "last.keras"
    assert _stored_record(last) == model.calibration  # last.keras holds the final weights
    for path in (trainer.checkpoint_callback.best_model_path, last):
        loaded = finetune.FinetuneableZoobotTree.load_from_checkpoint(path)
        expected = calibration.fit_concentration_scale(votes, loaded.predict(images, verbose=0), SCHEMA)
        assert _stored_record(path) == loaded.calibration
        np.testing.assert_allclose(loaded.concentration_scale, expected, rtol=1e-4)
        rebuilt = finetune.FinetuneableZoobotTree.load_from_checkpoint(path, learning_rate=0.001)  # via from_config
        assert rebuilt.calibration == loaded.calibration


def test_predict_applies_the_scale_unless_switched_off(finetuned, tmp_path):
    model, _, _, images, votes = finetuned
    catalog = _png_catalog(tmp_path, images, votes)

    def raw(catalog, model, **kwargs):
        return predict(catalog, model, test_time_dropout=False, **kwargs)[..., 0]

    check_predict_switch(raw, model, catalog, SCHEMA, tmp_path / "p.hdf5")
    check_scale_maximises_the_likelihood(raw, model, catalog, SCHEMA)


def test_replayed_features_are_calibrated_like_images(tmp_path):
    """Frozen encoder + deterministic transform: the Trainer replays features, and the scale is fitted on the
    head's output for them; it equals the fit to the raw predictions on the validation image files."""
    images, votes = _images_and_votes(seed=1)
    catalog = _png_catalog(tmp_path, images, votes)
    dm = GalaxyDataModule(SCHEMA.label_cols, train_catalog=catalog.iloc[:16], val_catalog=catalog.iloc[16:],
                          batch_size=8, resize_after_crop=SIZE, num_workers=1,
                          train_transform=EvalTransform(channels=3, resize_after_crop=SIZE))
    model = finetune.FinetuneableZoobotTree(schema=SCHEMA, name="tiny_cnn", n_blocks=0, learning_rate=0.01)
    trainer = finetune.get_trainer(tmp_path / "run", accelerator="cpu", max_epochs=1, enable_progress_bar=False)
    trainer.fit(model, dm)
    assert trainer.feature_replay is not None  # the fast path was taken
    alpha = predict(catalog.iloc[16:], model, test_time_dropout=False, calibrate=False)[..., 0]
    expected = calibration.fit_concentration_scale(votes[16:], alpha, SCHEMA)
    np.testing.assert_allclose(model.concentration_scale, expected, rtol=1e-4)


def test_without_validation_data_the_model_stays_uncalibrated():
    images, votes = _images_and_votes(n=8)
    model = finetune.FinetuneableZoobotTree(schema=SCHEMA, name="tiny_cnn")
    model.compile()
    model.fit(images, votes, epochs=1, batch_size=8, verbose=0)
    assert model.calibration is None and model.concentration_scale is None


def _png_catalog(root, images, votes) -> pd.DataFrame:
    rows = []
    for i, (image, vote) in enumerate(zip(images, votes)):
        path = root / f"g{i}.png"
        Image.fromarray(np.round(image * 255).astype("uint8")).save(path)
        rows.append({"id_str": f"g{i}", "file_loc": str(path), **dict(zip(SCHEMA.label_cols, vote.astype(int)))})
    return pd.DataFrame(rows)
