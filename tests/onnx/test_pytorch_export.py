"""PyTorch models exported to ONNX predict what PyTorch predicts (issue 16): every model kind, MC dropout,
representations, checkpoint files."""
import contextlib
import gzip
import pathlib
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zoobot.onnx import OnnxModel, get_representations, predict as onnx_predict  # noqa: E402
from zoobot.pytorch.estimators.define_model import ZoobotTree, get_pytorch_encoder  # noqa: E402
from zoobot.pytorch.onnx_export import export_onnx  # noqa: E402
from zoobot.pytorch.predictions.predict_on_catalog import predict as torch_predict  # noqa: E402
from zoobot.pytorch.training import finetune, representations  # noqa: E402
from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.preprocessing import Preprocessing, carry_record  # noqa: E402

pytestmark = pytest.mark.torch
SCHEMA = schemas.gz_rings_schema
FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
FAST = {"num_workers": 0, "batch_size": 5}


def _record(model, channels, size=32):
    return carry_record(model, Preprocessing(input_size=size, channels=channels, crop_scale_bounds=(0.6, 0.8),
                                             crop_ratio_bounds=(0.9, 1.1), image_formats=("jpg", "png")))


def _encoder(channels):
    return get_pytorch_encoder("tiny_cnn", channels=channels)


def _models():
    torch.manual_seed(0)
    return {
        "ZoobotTree": ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1,
                                 dropout_rate=0.3),
        "Classifier": finetune.FinetuneableZoobotClassifier(encoder=_encoder(3), num_classes=3),
        "Regressor": finetune.FinetuneableZoobotRegressor(encoder=_encoder(1), unit_interval=True),
        "FinetuneTree": finetune.FinetuneableZoobotTree(encoder=_encoder(3), schema=SCHEMA),
        "Encoder": representations.ZoobotEncoder(_encoder(3)),
    }


@pytest.mark.parametrize("kind", ["ZoobotTree", "Classifier", "Regressor", "FinetuneTree", "Encoder"])
def test_round_trip_predictions_equal_pytorch(tmp_path, jpg_catalog, kind):
    model = _models()[kind].eval()
    channels = 1 if kind in ("ZoobotTree", "Regressor") else 3
    if kind == "Encoder":
        model.channels = channels
    _record(model, channels)
    path = export_onnx(model, tmp_path / "model.onnx")
    want = torch_predict(jpg_catalog, model, n_samples=2, test_time_dropout=False, datamodule_kwargs=FAST)
    got = onnx_predict(jpg_catalog, path, n_samples=2, test_time_dropout=False, batch_size=6, num_workers=2)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    meta = OnnxModel(path).metadata
    assert meta["zoobot_channels"] == channels and meta["zoobot_input_size"] == 32
    assert meta["zoobot_preprocessing"]["crop_scale_bounds"] == [0.6, 0.8]


def test_tree_file_and_metadata_match_pytorch(tmp_path, png_catalog):
    model = _record(_models()["ZoobotTree"].eval(), 1)
    from zoobot.shared.calibration import calibration_record

    model.calibration = calibration_record(np.array([0.5]), model.question_names, 10)  # a calibrated model
    path = export_onnx(model, tmp_path / "tree.onnx")
    meta = OnnxModel(path).metadata
    assert meta["zoobot_schema"] == SCHEMA.to_dict() and meta["zoobot_calibration"] == [0.5]
    assert meta["zoobot_label_cols"] == SCHEMA.label_cols and meta["zoobot_kind"] == "tree"
    want = torch_predict(png_catalog, model, save_loc=tmp_path / "torch.parquet", datamodule_kwargs=FAST,
                         test_time_dropout=False)
    got = onnx_predict(png_catalog, path, save_loc=tmp_path / "onnx.parquet", test_time_dropout=False)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    from zoobot.shared.load_predictions import load

    ids_t, preds_t, cols_t, meta_t = load(tmp_path / "torch.parquet")
    ids_o, preds_o, cols_o, meta_o = load(tmp_path / "onnx.parquet")
    assert ids_o["id_str"].tolist() == ids_t["id_str"].tolist() and cols_o == cols_t
    np.testing.assert_allclose(preds_o, preds_t, rtol=1e-4)
    assert meta_o["backend"] == "onnx" and meta_o["concentration_scale"] == [0.5]
    # uncalibrated: the raw concentrations, twice the calibrated ones
    raw = onnx_predict(png_catalog, path, calibrate=False, test_time_dropout=False)
    np.testing.assert_allclose(raw * 0.5, got, rtol=1e-5)


def test_mc_dropout_samples_match_pytorch_statistics(tmp_path, png_catalog):
    torch.manual_seed(1)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1, dropout_rate=0.5,
                       test_time_dropout=True)
    _record(model.eval(), 1)
    path = export_onnx(model, tmp_path / "mc.onnx")
    catalog = png_catalog.iloc[:3]
    n = 400
    want = torch_predict(catalog, model, n_samples=n, datamodule_kwargs=FAST)
    got = onnx_predict(catalog, path, n_samples=n, seed=0)
    assert got.shape == want.shape == (3, 2, n)
    assert np.all(got.std(axis=2) > 0)  # the samples differ: dropout is on, by default as in the model
    # same distribution: means within 5 standard errors, spreads within 20 %
    standard_error = want.std(axis=2) * np.sqrt(2 / n)
    assert np.all(np.abs(got.mean(axis=2) - want.mean(axis=2)) < 5 * standard_error)
    np.testing.assert_allclose(got.std(axis=2), want.std(axis=2), rtol=0.2)
    # the same seed gives the same samples; test_time_dropout=False gives equal samples
    np.testing.assert_array_equal(onnx_predict(catalog, path, n_samples=n, seed=0), got)
    off = onnx_predict(catalog, path, n_samples=3, test_time_dropout=False)
    assert np.all(np.ptp(off, axis=2) == 0)
    np.testing.assert_allclose(off, torch_predict(catalog, model, n_samples=3, test_time_dropout=False,
                                                  datamodule_kwargs=FAST), rtol=1e-4)


def test_one_mask_gives_the_pytorch_head_on_those_features(tmp_path):
    """The graph's head on features * mask is exactly PyTorch's head with that dropout mask."""
    model = _models()["ZoobotTree"].eval()
    path = export_onnx(_record(model, 1), tmp_path / "m.onnx")
    onnx_model = OnnxModel(path)
    images = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    mask = (np.random.default_rng(1).random((4, 3, onnx_model.encoder_dim)) > 0.3).astype(np.float32) / 0.7
    got = onnx_model.session.run(["predictions"], {"image": images, "dropout_mask": mask})[0]
    with torch.no_grad():
        features = model.encoder(torch.from_numpy(images))
        want = torch.stack([model.head[1:](features * torch.from_numpy(m)) for m in mask], dim=-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_representations_equal_pytorch(tmp_path, jpg_catalog):
    model = _models()["Classifier"].eval()
    path = export_onnx(_record(model, 3), tmp_path / "clf.onnx")
    want = representations.get_representations(jpg_catalog, model, datamodule_kwargs={"num_workers": 0})
    got = get_representations(jpg_catalog, path, save_loc=tmp_path / "reps.parquet")
    assert got.columns.tolist() == want.columns.tolist()
    assert got["id_str"].tolist() == want["id_str"].tolist()
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), want.iloc[:, 1:].to_numpy(), rtol=1e-4, atol=1e-6)
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "reps.parquet"), got)


@pytest.mark.parametrize("fixture", ["pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz",
                                     "pytorch_finetuned_classifier_tiny_cnn_32px.ckpt.gz"])
def test_export_from_a_checkpoint_file(tmp_path, png_catalog, fixture):
    """The call `zoobot export --format onnx` makes: export_onnx(checkpoint_path, out_path)."""
    from zoobot.cli._common import load_model

    checkpoint = tmp_path / fixture[:-3]
    with gzip.open(FIXTURES / fixture, "rb") as src, open(checkpoint, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path = export_onnx(checkpoint, tmp_path / "from_ckpt.onnx")
    model = load_model(checkpoint, backend="pytorch")
    old = model.preprocessing.input_size is None  # the classifier fixture predates preprocessing records
    with pytest.warns(UserWarning, match="records no training image size") if old else contextlib.nullcontext():
        want = torch_predict(png_catalog, model, datamodule_kwargs=FAST, test_time_dropout=False)
    with pytest.warns(UserWarning, match="records no training image size") if old else contextlib.nullcontext():
        got = onnx_predict(png_catalog, path, test_time_dropout=False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_export_refuses_what_it_cannot_export(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module or a .ckpt path"):
        export_onnx(42, tmp_path / "x.onnx")


def test_committed_fixture_is_the_export_of_the_checkpoint_fixture(tmp_path, jpg_catalog):
    """tests/fixtures/onnx_zoobot_tree_tiny_cnn_32px.onnx (used without torch) = export of the .ckpt fixture."""
    checkpoint = tmp_path / "tree.ckpt"
    with gzip.open(FIXTURES / "pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz", "rb") as src, open(checkpoint, "wb") as dst:
        shutil.copyfileobj(src, dst)
    fresh = export_onnx(checkpoint, tmp_path / "fresh.onnx")
    committed = onnx_predict(jpg_catalog, FIXTURES / "onnx_zoobot_tree_tiny_cnn_32px.onnx", test_time_dropout=False)
    np.testing.assert_allclose(committed, onnx_predict(jpg_catalog, fresh, test_time_dropout=False), rtol=1e-6)


def test_large_jpegs_decoded_at_reduced_scale_match_pytorch(tmp_path):
    """300 px jpgs for a 32 px model: both paths decode at 1/4 scale (Pillow draft) and agree."""
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        path = tmp_path / f"big_{i}.jpg"
        smooth = np.kron(rng.integers(0, 255, (30, 30, 3)), np.ones((10, 10, 1))).astype(np.uint8)
        Image.fromarray(smooth).save(path, quality=90)
        rows.append({"id_str": f"big_{i}", "file_loc": str(path)})
    catalog = pd.DataFrame(rows)
    from zoobot.onnx.images import ImagePlan, prepare_image

    plan = ImagePlan(3, 32, (0.6, 0.8))
    assert plan.min_source_size == 39  # > 300 / 8, <= 300 / 4: decoded at 1/4 scale, 75 px
    with Image.open(rows[0]["file_loc"]) as img:
        img.draft("RGB", (plan.min_source_size, plan.min_source_size))
        assert img.size == (75, 75)
    assert prepare_image(rows[0]["file_loc"], ImagePlan(3, 32, (0.6, 0.8))).shape == (3, 32, 32)
    model = _record(_models()["Classifier"].eval(), 3)
    path = export_onnx(model, tmp_path / "clf.onnx")
    want = torch_predict(catalog, model, datamodule_kwargs=FAST)
    np.testing.assert_allclose(onnx_predict(catalog, path), want, rtol=1e-4, atol=1e-7)


def test_fits_images_match_pytorch(tmp_path):
    """FITS cutouts (float pixels, percentile scaling) take the same path: crop, then resize in float."""
    import pandas as pd
    from astropy.io import fits

    rng = np.random.default_rng(2)
    rows = []
    for i in range(3):
        path = tmp_path / f"cutout_{i}.fits"
        fits.PrimaryHDU(rng.normal(10, 3, (3, 50, 50)).astype(np.float32)).writeto(path)
        rows.append({"id_str": f"cutout_{i}", "file_loc": str(path)})
    catalog = pd.DataFrame(rows)
    model = _models()["FinetuneTree"].eval()
    carry_record(model, Preprocessing(input_size=32, channels=3, crop_scale_bounds=(0.7, 0.8),
                                      crop_ratio_bounds=(0.9, 1.1), image_formats=("fits",), fits_scaling="asinh"))
    path = export_onnx(model, tmp_path / "fits.onnx")
    want = torch_predict(catalog, model, datamodule_kwargs=FAST)
    np.testing.assert_allclose(onnx_predict(catalog, path), want, rtol=1e-4)


@pytest.mark.slow
def test_efficientnet_b0_round_trip(tmp_path, jpg_catalog):
    """A real architecture (batch norm, SiLU, squeeze-excitation) at 64 px."""
    torch.manual_seed(0)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="efficientnet_b0", channels=3)
    _record(model.eval(), 3, size=64)
    path = export_onnx(model, tmp_path / "effnet.onnx")
    catalog = jpg_catalog.iloc[:6]
    want = torch_predict(catalog, model, test_time_dropout=False, datamodule_kwargs=FAST)
    np.testing.assert_allclose(onnx_predict(catalog, path, test_time_dropout=False), want, rtol=1e-4)
