"""TensorFlow models exported to ONNX (tf2onnx) predict what TensorFlow predicts (issue 16): every model kind,
MC dropout, representations, .keras files."""
import gzip
import pathlib
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
import zoobot.tensorflow  # noqa: E402,F401  (sets KERAS_BACKEND before keras is imported)

from zoobot.onnx import OnnxModel, get_representations, predict as onnx_predict  # noqa: E402
from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.preprocessing import Preprocessing, carry_record  # noqa: E402
from zoobot.tensorflow.estimators.define_model import (  # noqa: E402
    ZoobotTree,
    _apply_head,
    get_tensorflow_encoder,
)
from zoobot.tensorflow.onnx_export import export_onnx  # noqa: E402
from zoobot.tensorflow.predictions.predict_on_catalog import predict as tf_predict  # noqa: E402
from zoobot.tensorflow.training import finetune, representations  # noqa: E402

pytestmark = pytest.mark.tf
SCHEMA = schemas.gz_rings_schema
FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
FAST = {"num_workers": 1, "batch_size": 5}
# TensorFlow's antialiased resize and Pillow's (the ONNX path's) differ by ~1e-5 per pixel
RTOL = 1e-4


def _record(model, channels, size=32):
    return carry_record(model, Preprocessing(input_size=size, channels=channels, crop_scale_bounds=(0.6, 0.8),
                                             crop_ratio_bounds=(0.9, 1.1), image_formats=("jpg", "png")))


def _model(kind):
    import keras

    keras.utils.set_random_seed(0)
    if kind == "ZoobotTree":
        return ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1,
                          dropout_rate=0.3)
    if kind == "Classifier":
        return finetune.FinetuneableZoobotClassifier(encoder=get_tensorflow_encoder("tiny_cnn", channels=3),
                                                     num_classes=3)
    if kind == "Regressor":
        return finetune.FinetuneableZoobotRegressor(encoder=get_tensorflow_encoder("tiny_cnn", channels=1),
                                                    unit_interval=True)
    if kind == "FinetuneTree":
        return finetune.FinetuneableZoobotTree(encoder=get_tensorflow_encoder("tiny_cnn", channels=3), schema=SCHEMA)
    return representations.ZoobotEncoder(get_tensorflow_encoder("tiny_cnn", channels=3), channels=3, input_size=32)


@pytest.mark.parametrize("kind", ["ZoobotTree", "Classifier", "Regressor", "FinetuneTree", "Encoder"])
def test_round_trip_predictions_equal_tensorflow(tmp_path, png_catalog, kind):
    """On PNGs: TensorFlow decodes JPEGs with its own decoder (tf.io), whose pixels differ from Pillow's by a
    level here and there, so JPEG predictions of the two differ by ~1e-4 for that reason alone."""
    model = _model(kind)
    channels = 1 if kind in ("ZoobotTree", "Regressor") else 3
    _record(model, channels)
    path = export_onnx(model, tmp_path / "model.onnx")
    want = tf_predict(png_catalog, model, n_samples=2, test_time_dropout=False, datamodule_kwargs=FAST)
    got = onnx_predict(png_catalog, path, n_samples=2, test_time_dropout=False, batch_size=6)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5 * np.abs(want).max())
    meta = OnnxModel(path).metadata
    assert meta["zoobot_backend"] == "tensorflow" and meta["zoobot_input_layout"] == "NHWC"
    assert meta["zoobot_channels"] == channels and meta["zoobot_input_size"] == 32


def test_graph_equals_keras_on_the_same_pixels(tmp_path):
    """With the image pipeline out of the way: ONNX Runtime vs Keras on identical arrays, head by mask."""
    model = _record(_model("ZoobotTree"), 1)
    onnx_model = OnnxModel(export_onnx(model, tmp_path / "tree.onnx"))
    images = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    features = model.encoder(images, training=False)
    np.testing.assert_allclose(onnx_model.run(images)[..., 0], np.asarray(_apply_head(model.head, features, False)),
                               rtol=1e-5)
    np.testing.assert_allclose(onnx_model.features(images), np.asarray(model.encoder(images, training=False)),
                               rtol=1e-5, atol=1e-6)


def test_mc_dropout_samples_match_tensorflow_statistics(tmp_path, png_catalog):
    import keras

    keras.utils.set_random_seed(1)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1, dropout_rate=0.5,
                       test_time_dropout=True)
    _record(model, 1)
    path = export_onnx(model, tmp_path / "mc.onnx")
    catalog = png_catalog.iloc[:3]
    n = 400
    want = tf_predict(catalog, model, n_samples=n, datamodule_kwargs=FAST)
    got = onnx_predict(catalog, path, n_samples=n, seed=0)
    assert np.all(got.std(axis=2) > 0)
    standard_error = want.std(axis=2) * np.sqrt(2 / n)
    assert np.all(np.abs(got.mean(axis=2) - want.mean(axis=2)) < 5 * standard_error)
    np.testing.assert_allclose(got.std(axis=2), want.std(axis=2), rtol=0.2)


def test_representations_equal_tensorflow(tmp_path, png_catalog):
    model = _record(_model("Classifier"), 3)
    path = export_onnx(model, tmp_path / "clf.onnx")
    want = representations.get_representations(png_catalog, model, datamodule_kwargs={"num_workers": 1})
    got = get_representations(png_catalog, path)
    assert got["id_str"].tolist() == want["id_str"].tolist()
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), want.iloc[:, 1:].to_numpy(), rtol=RTOL, atol=1e-5)


def test_export_from_a_keras_file(tmp_path, png_catalog):
    """The call `zoobot export --format onnx` makes: export_onnx(checkpoint_path, out_path)."""
    from zoobot.cli._common import load_model

    checkpoint = tmp_path / "tree.keras"
    with gzip.open(FIXTURES / "tensorflow_zoobot_tree_tiny_cnn_32px.keras.gz", "rb") as src, \
            open(checkpoint, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path = export_onnx(checkpoint, tmp_path / "from_keras.onnx")
    model = load_model(checkpoint, backend="tensorflow")
    want = tf_predict(png_catalog, model, datamodule_kwargs=FAST, test_time_dropout=False)
    got = onnx_predict(png_catalog, path, test_time_dropout=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6)


@pytest.mark.slow
def test_efficientnet_b0_round_trip(tmp_path, png_catalog):
    """A real architecture (batch norm, swish, squeeze-excitation) at 64 px, through tf2onnx."""
    import keras

    keras.utils.set_random_seed(0)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="efficientnet_b0", channels=3)
    _record(model, 3, size=64)
    path = export_onnx(model, tmp_path / "effnet.onnx")
    catalog = png_catalog.iloc[:6]
    want = tf_predict(catalog, model, test_time_dropout=False, datamodule_kwargs=FAST)
    np.testing.assert_allclose(onnx_predict(catalog, path, test_time_dropout=False), want, rtol=1e-4)
