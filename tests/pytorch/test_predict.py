"""predict_on_catalog.predict (api.md 2.6, 4.4): rows matched by id, the three file formats, failed images,
MC dropout, every model kind, and real sky images (the Hubble eXtreme Deep Field)."""
import numpy as np
import pandas as pd
import pytest
import torch

from zoobot.pytorch.datasets import GalaxyDataModule
from zoobot.pytorch.estimators.define_model import ZoobotTree
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.shared import schemas
from zoobot.shared.errors import ChannelMismatchError, ImageLoadError
from zoobot.shared.load_predictions import load

SCHEMA = schemas.decals_dr5_ortho_schema
FAST = {"num_workers": 0, "resize_after_crop": 32, "batch_size": 7}


@pytest.fixture(scope="module")
def tree():
    torch.manual_seed(0)
    return ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1,
                      dropout_rate=0.5).eval()


def eval_images(catalog, channels=1, size=32):
    """The images exactly as predict preprocesses them (deterministic eval transform), in catalog order."""
    datamodule = GalaxyDataModule(None, predict_catalog=catalog, greyscale=channels == 1, resize_after_crop=size,
                                  num_workers=0)
    datamodule.setup("predict")
    return torch.stack([datamodule.predict_dataset[i] for i in range(len(catalog))])


def test_rows_follow_catalog_order_matched_by_id(votes_catalog, tree):
    catalog, _ = votes_catalog
    shuffled = catalog.sample(frac=1, random_state=3).reset_index(drop=True)
    assert shuffled["id_str"].tolist() != catalog["id_str"].tolist()
    predictions = predict(shuffled, tree, test_time_dropout=False, datamodule_kwargs=FAST)
    assert predictions.shape == (len(catalog), SCHEMA.n_answers, 1) and predictions.dtype == np.float32
    with torch.no_grad(), tree._mc_dropout(False):
        expected = tree(eval_images(shuffled)).numpy()
    np.testing.assert_allclose(predictions[..., 0], expected, rtol=1e-5, atol=1e-4)
    # the same galaxies in the original order give the same rows, permuted by id
    original = predict(catalog, tree, test_time_dropout=False, datamodule_kwargs=FAST)
    by_id = dict(zip(catalog["id_str"], original[..., 0]))
    for id_str, row in zip(shuffled["id_str"], predictions[..., 0]):
        np.testing.assert_allclose(row, by_id[id_str], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".hdf5"])
def test_three_file_formats_hold_the_returned_predictions(tmp_path, votes_catalog, tree, suffix):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:12]
    save_loc = tmp_path / f"preds{suffix}"
    predictions = predict(catalog, tree, n_samples=2, save_loc=save_loc, datamodule_kwargs=FAST)
    ids, loaded, label_cols, metadata = load(save_loc)
    assert ids["id_str"].tolist() == catalog["id_str"].tolist()
    assert label_cols == SCHEMA.label_cols
    np.testing.assert_allclose(loaded, predictions, rtol=1e-6)
    assert not (tmp_path / f"preds{suffix}.partial").exists()
    if suffix != ".csv":  # csv carries no metadata
        assert metadata["model_class"] == "ZoobotTree" and metadata["backend"] == "pytorch"
        assert metadata["n_samples"] == 2 and metadata["test_time_dropout"] is True
        assert metadata["test_time_augmentation"] is False
    if suffix == ".parquet":
        table = pd.read_parquet(save_loc)
        col = "smooth-or-featured-dr5_smooth"
        assert table.columns[:4].tolist() == ["id_str", f"{col}_concentration_0", f"{col}_concentration_1",
                                              f"{col}_fraction"]
        # vote fraction = mean over samples of alpha / sum of the question's alphas
        alphas = predictions[:, 0:3, :]
        np.testing.assert_allclose(table[f"{col}_fraction"], (alphas[:, 0] / alphas.sum(axis=1)).mean(axis=1),
                                   rtol=1e-5)


def test_bad_images_become_nan_rows_listed_in_the_failures_file(tmp_path, votes_catalog, tree):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:9].copy()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    catalog.loc[2, "file_loc"] = str(corrupt)
    catalog.loc[5, "file_loc"] = str(tmp_path / "missing.jpg")
    bad_ids = catalog["id_str"].iloc[[2, 5]].tolist()

    with pytest.raises(FileNotFoundError, match=r"check_valid_paths=False"):
        predict(catalog, tree, datamodule_kwargs=FAST)
    with pytest.raises(ImageLoadError, match=bad_ids[0]):
        predict(catalog, tree, check_valid_paths=False, on_bad_image="raise", datamodule_kwargs=FAST)

    save_loc = tmp_path / "preds.parquet"
    with pytest.warns(UserWarning, match=r"2 of 9 images could not be read.*preds_failures\.csv"):
        predictions = predict(catalog, tree, save_loc=save_loc, check_valid_paths=False, datamodule_kwargs=FAST)
    assert np.isnan(predictions[[2, 5]]).all()
    assert np.isfinite(np.delete(predictions, [2, 5], axis=0)).all()
    failures = pd.read_csv(tmp_path / "preds_failures.csv")
    assert sorted(failures["id_str"]) == sorted(bad_ids)
    assert set(failures["file_loc"]) == {str(corrupt), str(tmp_path / "missing.jpg")}
    assert failures["error"].str.len().min() > 10
    table = pd.read_parquet(save_loc)
    assert table.set_index("id_str").loc[bad_ids].drop(columns=[]).isna().all(axis=None)


def test_mc_dropout_samples_differ_and_match_full_forward_passes(votes_catalog, tree):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:6]
    options = {**FAST, "batch_size": 64}  # one batch: dropout masks are drawn in a known order
    torch.manual_seed(11)
    samples = predict(catalog, tree, n_samples=5, datamodule_kwargs=options)
    assert samples.shape == (6, SCHEMA.n_answers, 5)
    assert (samples.std(axis=2) > 0).all()  # MC dropout: every galaxy's samples spread
    # the fast path (encoder once, head five times) equals five full forward passes with the same masks
    images = eval_images(catalog)
    torch.manual_seed(11)
    with torch.no_grad():
        expected = torch.stack([tree(images) for _ in range(5)], dim=-1).numpy()
    np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-4)

    fixed = predict(catalog, tree, n_samples=5, test_time_dropout=False, datamodule_kwargs=FAST)
    assert (fixed == fixed[..., :1]).all()
    assert tree.head[0].mc_active  # the model's own setting is restored afterwards


def test_test_time_augmentation_draws_a_new_augmentation_per_sample(tmp_path, votes_catalog, tree):
    catalog, _ = votes_catalog
    catalog = catalog.iloc[:4]
    save_loc = tmp_path / "tta.parquet"
    samples = predict(catalog, tree, n_samples=3, test_time_dropout=False, test_time_augmentation=True,
                      save_loc=save_loc, datamodule_kwargs=FAST)
    assert (samples.std(axis=2) > 0).all()  # dropout off: only the random augmentations differ
    metadata = load(save_loc)[3]
    assert metadata["test_time_augmentation"] is True and metadata["test_time_dropout"] is False


def test_other_model_kinds_and_their_default_names(tmp_path, votes_catalog):
    from zoobot.pytorch.training import finetune, representations
    from zoobot.pytorch.estimators.define_model import get_pytorch_encoder

    catalog, _ = votes_catalog
    catalog = catalog.iloc[:5]
    options = {**FAST, "resize_after_crop": 32}
    torch.manual_seed(0)
    classifier = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=3)
    probabilities = predict(catalog, classifier, save_loc=tmp_path / "c.parquet", datamodule_kwargs=options)
    np.testing.assert_allclose(probabilities[..., 0].sum(axis=1), 1, rtol=1e-5)
    with torch.no_grad():
        logits = classifier.eval()(eval_images(catalog, channels=3))
    np.testing.assert_allclose(probabilities[..., 0], torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)
    assert pd.read_parquet(tmp_path / "c.parquet").columns.tolist() == [
        "id_str", "class_0_pred_0", "class_0_pred_mean", "class_1_pred_0", "class_1_pred_mean",
        "class_2_pred_0", "class_2_pred_mean"]

    finetuned_tree = finetune.FinetuneableZoobotTree(schema=schemas.gz_rings_schema, name="tiny_cnn")
    concentrations = predict(catalog, finetuned_tree, save_loc=tmp_path / "t.parquet", datamodule_kwargs=options)
    assert concentrations.shape == (5, 2, 1) and ((concentrations > 1) & (concentrations < 101)).all()
    assert "ring_yes_fraction" in pd.read_parquet(tmp_path / "t.parquet").columns

    regressor = finetune.FinetuneableZoobotRegressor(name="tiny_cnn", unit_interval=True)
    values = predict(catalog, regressor, n_samples=2, datamodule_kwargs=options)
    assert values.shape == (5, 1, 2) and ((values > 0) & (values < 1)).all()

    encoder = representations.ZoobotEncoder(get_pytorch_encoder("tiny_cnn", channels=3))
    features = predict(catalog, encoder, save_loc=tmp_path / "f.csv", datamodule_kwargs=options)
    assert features.shape == (5, 128, 1)
    assert pd.read_csv(tmp_path / "f.csv").columns[1] == "feat_0_pred_0"


def test_argument_errors_come_before_any_image_is_read(tmp_path, votes_catalog, tree):
    catalog, _ = votes_catalog
    with pytest.raises(ValueError, match=r"expected width 34, got width 2"):
        predict(catalog, tree, label_cols=["a", "b"])
    with pytest.raises(ValueError, match=r"Unknown predictions file extension.*'\.txt'.*Accepted"):
        predict(catalog, tree, save_loc=tmp_path / "preds.txt")
    with pytest.raises(ChannelMismatchError, match=r"greyscale=False gives 3-channel images.*expects 1"):
        predict(catalog, tree, datamodule_kwargs={"greyscale": False})
    with pytest.raises(ValueError, match=r"Unknown on_bad_image 'skip'"):
        predict(catalog, tree, on_bad_image="skip")
    with pytest.raises(TypeError, match=r"load it first"):
        predict(catalog, "model.ckpt")
    assert not list(tmp_path.iterdir())


def _hubble_stamps(folder, n_stamps=20, size=64):
    """Cut stamps around the brightest sources of the Hubble eXtreme Deep Field (peaks after smoothing)."""
    from PIL import Image
    from scipy import ndimage
    from skimage.data import hubble_deep_field
    from skimage.feature import peak_local_max

    image = hubble_deep_field()  # (872, 1000, 3) uint8, public domain
    smooth = ndimage.gaussian_filter(image.mean(axis=2), sigma=4)
    half = size // 2
    peaks = peak_local_max(smooth, min_distance=half, exclude_border=half, num_peaks=n_stamps)
    rows = []
    for i, (y, x) in enumerate(peaks):
        path = folder / f"xdf_{i:02d}.jpg"
        Image.fromarray(image[y - half:y + half, x - half:x + half]).save(path, quality=95)
        rows.append({"id_str": f"xdf_{i:02d}", "file_loc": str(path)})
    return pd.DataFrame(rows)


def test_hubble_deep_field_smoke(tmp_path):
    catalog = _hubble_stamps(tmp_path)
    assert len(catalog) == 20
    torch.manual_seed(0)
    model = ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1)
    predictions = predict(catalog, model, n_samples=3, save_loc=tmp_path / "xdf.parquet",
                          datamodule_kwargs={"num_workers": 0, "resize_after_crop": 64})
    assert predictions.shape == (20, 34, 3)
    assert np.isfinite(predictions).all()
    assert ((predictions > 1) & (predictions < 101)).all()
    assert pd.read_parquet(tmp_path / "xdf.parquet")["id_str"].tolist() == catalog["id_str"].tolist()


DDP_SCRIPT = '''
import pathlib, sys
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.shared import schemas

out, catalog = pathlib.Path(sys.argv[1]), pd.read_parquet(sys.argv[2])
twpl._resolve_devices = lambda gpus: ("cpu", 2)  # DDP over two CPU processes (gloo); runs once per process
model, trainer = twpl.train(out / "run", schemas.decals_dr5_ortho_schema, catalog=catalog,
                            model_architecture="tiny_cnn", batch_size=4, epochs=1, resize_size=32, gpus=0,
                            num_workers=0)
predictions = predict(catalog, model, test_time_dropout=False, save_loc=out / "preds.parquet",
                      datamodule_kwargs={"num_workers": 0, "batch_size": 3, "resize_after_crop": 32},
                      trainer_kwargs={"accelerator": "cpu", "devices": 2, "enable_progress_bar": False})
np.save(out / f"rank{trainer.global_rank}.npy", predictions)
'''


@pytest.mark.slow
def test_two_process_ddp_trains_and_predicts_every_id_exactly_once(tmp_path, votes_catalog):
    import subprocess
    import sys

    catalog, _ = votes_catalog
    catalog = catalog.iloc[:23]  # 23 = 2 processes x 4 batches of 3, minus one: the sampler pads a duplicate
    catalog.to_parquet(tmp_path / "catalog.parquet")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    result = subprocess.run([sys.executable, str(tmp_path / "ddp.py"), str(tmp_path), str(tmp_path / "catalog.parquet")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    np.testing.assert_array_equal(rank0, rank1)  # every process returns the whole catalog
    table = pd.read_parquet(tmp_path / "preds.parquet")
    assert table["id_str"].tolist() == catalog["id_str"].tolist()  # each id once, in catalog order
    # the rows are those of a single-process prediction with the trained weights
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("epoch=*.ckpt"))
    model = ZoobotTree.load_from_checkpoint(checkpoints[0])
    single = predict(catalog, model, test_time_dropout=False, datamodule_kwargs=FAST)
    np.testing.assert_allclose(rank0, single, rtol=1e-5, atol=1e-4)


def test_one_loader_per_call_whatever_the_chunk_size_and_tta_rows_complete(tmp_path, votes_catalog, tree,
                                                                          monkeypatch):
    """Chunks only decide when results are flushed: 12 rows in chunks of 4 are read by one DataLoader iterator
    (one set of workers), give the same predictions as one chunk, and a parquet row group per chunk."""
    import pyarrow.parquet as pq
    from torch.utils.data import DataLoader

    catalog, _ = votes_catalog
    catalog = catalog.iloc[:12]
    one_chunk = predict(catalog, tree, test_time_dropout=False, datamodule_kwargs=FAST)
    iterators = []
    original_iter = DataLoader.__iter__

    def counting_iter(loader):
        iterators.append(loader)
        return original_iter(loader)

    monkeypatch.setattr(DataLoader, "__iter__", counting_iter)
    save_loc = tmp_path / "preds.parquet"
    chunked = predict(catalog, tree, test_time_dropout=False, save_loc=save_loc, chunk_size=4,
                      datamodule_kwargs={**FAST, "num_workers": 1})
    assert len(iterators) == 1 and len(iterators[0].dataset) == 12
    np.testing.assert_allclose(chunked, one_chunk, rtol=1e-5, atol=1e-6)
    assert pq.ParquetFile(save_loc).metadata.num_row_groups == 3
    np.testing.assert_allclose(load(save_loc)[1], chunked, rtol=1e-6)

    # test-time augmentation: one loader reads each row n_samples times in a row; every row gets all its samples
    iterators.clear()
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        predict(catalog, tree, chunk_size=0, datamodule_kwargs=FAST)
    samples = predict(catalog, tree, n_samples=3, test_time_dropout=False, test_time_augmentation=True,
                      chunk_size=5, datamodule_kwargs={**FAST, "batch_size": 2})
    assert len(iterators) == 1 and len(iterators[0].dataset) == 36
    assert samples.shape == (12, SCHEMA.n_answers, 3) and np.isfinite(samples).all()
    assert (samples.std(axis=2) > 0).all()
