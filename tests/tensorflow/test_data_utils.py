"""TensorFlow data utilities (api.md 3.1, 4.3, 6): image datasets, TFRecord shards, the seed snippets, aliases."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from zoobot.shared.catalogs import split_catalog
from zoobot.shared.errors import CatalogError, ImageLoadError
from zoobot.tensorflow.data_utils import create_shards, create_tfrecord, image_datasets, tfrecord_datasets


def pil_pixels(path, size=None):
    """Independent reference: the file's RGB pixels via Pillow, optionally resized (antialiased bilinear)."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image)


def read_all(dataset, keys):
    out = {key: [] for key in keys}
    for batch in dataset:
        for key in keys:
            out[key].append(batch[key].numpy())
    return {key: np.concatenate(values) for key, values in out.items()}


# ------------------------------------------------------------------------------------------ aliases

def test_seed_import_paths_are_the_canonical_modules():
    import zoobot.data_utils
    import zoobot.data_utils.tfrecord_datasets as flat_tfrecord_datasets
    import zoobot.tensorflow.data_utils as canonical
    from zoobot.data_utils import ShardConfig
    from zoobot.data_utils import create_shards as flat_create_shards
    from zoobot.data_utils import image_datasets as flat_image_datasets
    from zoobot.data_utils import tfrecord_datasets as flat_tfrecords

    assert flat_image_datasets is canonical.image_datasets is image_datasets
    assert flat_tfrecords is canonical.tfrecord_datasets is tfrecord_datasets is flat_tfrecord_datasets
    assert flat_create_shards is canonical.create_shards is create_shards
    assert ShardConfig is zoobot.data_utils.ShardConfig is canonical.ShardConfig is create_shards.ShardConfig
    assert tfrecord_datasets.get_tfrecord_dataset is tfrecord_datasets.get_dataset


def test_error_classes_are_the_shared_ones():
    import zoobot.shared.errors as shared
    import zoobot.tensorflow as ztf
    from zoobot.tensorflow import errors

    for name in ("CatalogError", "ImageLoadError", "ChannelMismatchError", "PixelScaleError",
                 "CheckpointVersionError", "MissingDependencyError"):
        assert getattr(errors, name) is getattr(shared, name) is getattr(ztf, name)


def run_python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_package_sets_keras_backend_and_refuses_another_backend():
    result = run_python("import os, zoobot.tensorflow; print(os.environ['KERAS_BACKEND'])")
    assert result.returncode == 0 and result.stdout.strip() == "tensorflow"

    result = run_python("import zoobot.tensorflow", KERAS_BACKEND="torch")
    assert result.returncode == 1
    assert "ImportError: The environment variable KERAS_BACKEND is 'torch'" in result.stderr
    assert "KERAS_BACKEND=tensorflow" in result.stderr

    # keras already started on another backend (a stand-in module: starting real Keras on torch takes long)
    fake_keras = ("import sys, types; keras = types.ModuleType('keras'); keras.backend = types.SimpleNamespace("
                  "backend=lambda: 'jax'); sys.modules['keras'] = keras; import zoobot.tensorflow")
    result = run_python(fake_keras)
    assert result.returncode == 1 and "Keras was already imported with the 'jax' backend" in result.stderr


# ------------------------------------------------------------------------------------------ image datasets

def test_seed_get_image_dataset_snippet(png_rings_catalog):
    catalog, _ = png_rings_catalog
    paths_train = list(catalog["file_loc"])
    labels_train = list(catalog["ring"])
    file_format, requested_img_size, batch_size = "png", 32, 10

    # as the seed writes it
    raw_train_dataset = image_datasets.get_image_dataset(
        paths_train, file_format=file_format, requested_img_size=requested_img_size, batch_size=batch_size,
        labels=labels_train)

    batch = next(iter(raw_train_dataset))
    assert batch["matrix"].dtype == tf.uint8 and tuple(batch["matrix"].shape) == (10, 32, 32, 3)
    assert batch["label"].dtype == tf.float32 and tuple(batch["label"].shape) == (10,)
    everything = read_all(raw_train_dataset, ["matrix", "id_str", "label"])
    assert [s.decode() for s in everything["id_str"]] == paths_train  # ids default to the paths, in order
    np.testing.assert_array_equal(everything["label"], np.asarray(labels_train, np.float32))
    # antialiased resize agrees with Pillow's (an independent implementation) to within one grey level
    reference = np.stack([pil_pixels(p, 32) for p in paths_train]).astype(int)
    assert np.abs(everything["matrix"].astype(int) - reference).max() <= 1


def test_image_dataset_keeps_pixels_when_size_matches_and_label_forms(png_rings_catalog):
    catalog, _ = png_rings_catalog
    paths = list(catalog["file_loc"][:6])
    two_d = np.arange(12, dtype=np.float64).reshape(6, 2)
    ds = image_datasets.get_image_dataset(paths, "png", 40, 4, labels=two_d, id_strs=catalog["id_str"][:6])
    out = read_all(ds, ["matrix", "label", "id_str"])
    np.testing.assert_array_equal(out["matrix"], np.stack([pil_pixels(p) for p in paths]))  # no resize: exact
    np.testing.assert_array_equal(out["label"], two_d.astype(np.float32))
    assert [s.decode() for s in out["id_str"]] == list(catalog["id_str"][:6])

    dicts = [{"ring": i % 2, "size": 0.5 * i} for i in range(6)]
    out = read_all(image_datasets.get_image_dataset(paths, None, 40, 6, labels=dicts), ["ring", "size"])
    np.testing.assert_array_equal(out["ring"], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(out["size"], [0, 0.5, 1, 1.5, 2, 2.5])


def test_image_dataset_greyscale_file_gives_three_channels_and_shuffle_is_seeded(tmp_path):
    grey = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"g{i}.png"))
        Image.fromarray(grey).save(paths[-1])
    (matrix,) = read_all(image_datasets.get_image_dataset(paths[:1], "png", 32, 1), ["matrix"]).values()
    np.testing.assert_array_equal(matrix[0], np.repeat(grey[:, :, None], 3, axis=2))

    orders = [[s.decode() for s in read_all(image_datasets.get_image_dataset(
        paths, "png", 32, 5, shuffle=True, seed=s), ["id_str"])["id_str"]] for s in (1, 1)]
    assert orders[0] == orders[1] and sorted(orders[0]) == sorted(paths)


def test_image_dataset_errors(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    paths = list(catalog["file_loc"][:3])
    with pytest.raises(ValueError, match="Accepted values"):
        image_datasets.get_image_dataset(paths, "tiff", 32, 2)
    with pytest.raises(ValueError, match="file_format='jpg'.*another extension.*file_format=None"):
        image_datasets.get_image_dataset(paths, "jpg", 32, 2)
    with pytest.raises(FileNotFoundError, match="check_valid_paths=False"):
        image_datasets.get_image_dataset(paths + [str(tmp_path / "missing.png")], "png", 32, 2)
    with pytest.raises(ValueError, match="labels has 2 entries"):
        image_datasets.get_image_dataset(paths, "png", 32, 2, labels=[0, 1])

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"<html>not found</html>")
    with pytest.raises(ImageLoadError, match="broken.png"):
        image_datasets.get_image_dataset(paths + [str(broken)], "png", 32, 2)
    # without the up-front check the graph stops at the bad file, naming it
    ds = image_datasets.get_image_dataset([str(broken)], "png", 32, 1, check_valid_paths=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.png"):
        next(iter(ds))


def test_image_dataset_reads_fits_as_float(tmp_path):
    fits = pytest.importorskip("astropy.io.fits")
    data = np.linspace(0, 1, 3 * 24 * 24, dtype=np.float32).reshape(3, 24, 24)
    path = tmp_path / "galaxy.fits"
    fits.PrimaryHDU(data).writeto(path)
    batch = next(iter(image_datasets.get_image_dataset([str(path)], "fits", 24, 1)))
    assert batch["matrix"].dtype == tf.float32
    # percentile stretch (0.5-99.5) of a linear ramp, channels last
    low, high = np.percentile(data, [0.5, 99.5])
    expected = np.clip((np.moveaxis(data, 0, -1) - low) / (high - low), 0, 1)
    np.testing.assert_allclose(batch["matrix"].numpy()[0], expected, atol=1e-5)


# ------------------------------------------------------------------------------------------ shards

def test_seed_shard_snippets_and_round_trip(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    labelled_catalog, unlabelled_catalog = catalog.iloc[:18], catalog.iloc[18:][["id_str", "file_loc"]]
    shard_dir = str(tmp_path / "tfrecords")

    # as the seed writes it
    shard_config = create_shards.ShardConfig(shard_dir=shard_dir, size=40)
    shard_config.prepare_shards(labelled_catalog, unlabelled_catalog, train_test_fraction=0.8, columns_to_save=["ring"])
    columns_to_save, batch_size = ["ring"], 4
    train_records = shard_config.train_tfrecord_locs()
    raw_train_dataset = tfrecord_datasets.get_dataset(train_records, columns_to_save, batch_size, shuffle=True)

    train, val, test = split_catalog(labelled_catalog, 0.8, 0.2, 0.0, seed=42)
    assert len(test) == 0 and shard_config.test_tfrecord_locs() == []
    assert shard_config.val_tfrecord_locs() and shard_config.unlabelled_tfrecord_locs() and shard_config.ready()
    shuffled = read_all(raw_train_dataset, ["id_str", "ring", "matrix"])
    assert sorted(s.decode() for s in shuffled["id_str"]) == sorted(train["id_str"])  # every id exactly once

    # deterministic order and exact pixels (PNG is lossless; source images are already 40 px)
    ordered = read_all(tfrecord_datasets.get_dataset(shard_config.val_tfrecord_locs(), ["ring"], 3, shuffle=False),
                       ["id_str", "ring", "matrix"])
    assert [s.decode() for s in ordered["id_str"]] == list(val["id_str"])
    np.testing.assert_array_equal(ordered["ring"], val["ring"].to_numpy(np.float32))
    assert ordered["ring"].dtype == np.float32
    np.testing.assert_array_equal(ordered["matrix"], np.stack([pil_pixels(p) for p in val["file_loc"]]))

    unlabelled = read_all(tfrecord_datasets.get_dataset(shard_config.unlabelled_tfrecord_locs(), [], 8, shuffle=False),
                          ["id_str"])
    assert [s.decode() for s in unlabelled["id_str"]] == list(unlabelled_catalog["id_str"])

    saved = json.loads(pathlib.Path(shard_config.config_save_loc).read_text())
    for key in ("format_version", "zoobot_version", "size", "channels", "shard_size", "image_encoding",
                "columns_to_save", "label_dtypes", "split_fractions", "seed"):
        assert key in saved, key
    assert saved["label_dtypes"] == {"ring": "int64"} and saved["row_counts"]["train"] == len(train)
    assert saved["split_fractions"] == {"train": 0.8, "val": 0.2, "test": 0.0}
    assert pd.read_parquet(shard_config.train_catalog_loc)["id_str"].tolist() == list(train["id_str"])


def test_shards_resize_and_multiple_files_keep_order(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    catalog = catalog.assign(fraction=catalog["ring_yes_fraction"].astype(np.float64))
    config = create_shards.ShardConfig(tmp_path / "shards", size=32, shard_size=3)
    config.prepare_shards(catalog, columns_to_save=["ring", "fraction"], val_fraction=0.2, test_fraction=0.2)
    train, val, test = split_catalog(catalog, 0.6, 0.2, 0.2, seed=42)
    locs = config.train_tfrecord_locs()
    assert [loc.rsplit("/", 1)[-1] for loc in locs] == [f"s32_shard_{n}.tfrecord" for n in range(len(locs))]
    assert len(locs) == -(-len(train) // 3)
    assert len(config.test_tfrecord_locs()) == -(-len(test) // 3)

    first, second = (read_all(tfrecord_datasets.get_dataset(locs, columns_to_save=["fraction", "ring"],
                                                             batch_size=4, shuffle=False),
                              ["id_str", "fraction", "ring", "matrix"]) for _ in range(2))
    assert [s.decode() for s in first["id_str"]] == list(train["id_str"])
    np.testing.assert_array_equal(first["matrix"], second["matrix"])
    np.testing.assert_allclose(first["fraction"], train["fraction"].to_numpy(), rtol=1e-6)
    # stored exactly as Pillow's antialiased resize of the source (lossless PNG round trip)
    np.testing.assert_array_equal(first["matrix"], np.stack([pil_pixels(p, 32) for p in train["file_loc"]]))
    assert config.label_dtypes == {"ring": "int64", "fraction": "float32"}


def test_greyscale_shards_store_mean_of_rgb(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    config = create_shards.ShardConfig(tmp_path / "grey", size=40, channels=1)
    config.prepare_shards(catalog.iloc[:8], columns_to_save=[], train_test_fraction=0.5)
    out = read_all(tfrecord_datasets.get_dataset(config.train_tfrecord_locs(), [], 8, shuffle=False),
                   ["id_str", "matrix"])
    by_id = dict(zip(catalog["id_str"], catalog["file_loc"]))
    expected = np.stack([np.round(pil_pixels(by_id[i.decode()]).mean(axis=2, keepdims=True)) for i in out["id_str"]])
    assert out["matrix"].shape[-1] == 1
    np.testing.assert_array_equal(out["matrix"], expected.astype(np.uint8))


def test_prepare_shards_argument_and_folder_errors(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    config = create_shards.ShardConfig(tmp_path / "s", size=32)
    with pytest.raises(TypeError, match="cannot be combined with val_fraction"):
        config.prepare_shards(catalog, columns_to_save=["ring"], train_test_fraction=0.8, val_fraction=0.1)
    with pytest.raises(TypeError, match="not both"):
        config.prepare_shards(catalog, columns_to_save=["ring"], labelled_columns_to_save=["ring"])
    with pytest.raises(CatalogError, match="missing 1 required column.*'not_a_column'"):
        config.prepare_shards(catalog, columns_to_save=["not_a_column"])
    assert not (tmp_path / "s").exists()  # nothing written before validation passed

    small = catalog.iloc[:6]
    config.prepare_shards(small, labelled_columns_to_save=["ring"], train_test_fraction=0.5)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        config.prepare_shards(small, columns_to_save=["ring"], train_test_fraction=0.5)
    (tmp_path / "s" / "notes.txt").write_text("keep me")
    config.prepare_shards(catalog.iloc[:10], columns_to_save=["ring"], train_test_fraction=0.5, overwrite=True)
    assert (tmp_path / "s" / "notes.txt").read_text() == "keep me"
    assert config.row_counts["train"] + config.row_counts["val"] == 10


def test_prepare_shards_bad_images_name_the_galaxy(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    bad = catalog.iloc[:6].copy()
    (tmp_path / "not_an_image.png").write_bytes(b"<html>404</html>")
    bad.loc[bad.index[2], "file_loc"] = str(tmp_path / "not_an_image.png")
    with pytest.raises(ImageLoadError, match=f"id_str '{bad['id_str'].iloc[2]}'.*not_an_image.png"):
        create_shards.ShardConfig(tmp_path / "a", size=32).prepare_shards(bad, columns_to_save=["ring"])
    assert not (tmp_path / "a").exists()  # found before anything was written

    source = pathlib.Path(catalog["file_loc"].iloc[0]).read_bytes()
    (tmp_path / "truncated.png").write_bytes(source[: len(source) // 2])  # valid header, missing data
    bad.loc[bad.index[2], "file_loc"] = str(tmp_path / "truncated.png")
    with pytest.raises(ImageLoadError, match="truncated.png.*overwrite=True"):
        create_shards.ShardConfig(tmp_path / "b", size=32).prepare_shards(
            bad, columns_to_save=["ring"], train_test_fraction=0.5, seed=0)


def test_load_shard_config_reroots_moved_folder(png_rings_catalog, tmp_path):
    catalog, _ = png_rings_catalog
    config = create_shards.ShardConfig(tmp_path / "before", size=40, shard_size=4)
    config.prepare_shards(catalog.iloc[:12], columns_to_save=["ring"], val_fraction=0.25, test_fraction=0.25)
    written = config.train_tfrecord_locs()
    assert len(written) == 2
    shutil.move(str(tmp_path / "before"), str(tmp_path / "after"))
    loaded = create_shards.load_shard_config(tmp_path / "after")
    assert loaded.shard_dir == str(tmp_path / "after") and loaded.ready()
    assert loaded.row_counts == config.row_counts and loaded.columns_to_save == ["ring"]
    assert [loc.replace("after", "before") for loc in loaded.train_tfrecord_locs()] == written
    assert loaded.to_dict() == config.to_dict()


# ------------------------------------------------------------------------------------------ reading errors

@pytest.fixture(scope="module")
def small_shards(png_rings_catalog, tmp_path_factory):
    catalog, _ = png_rings_catalog
    config = create_shards.ShardConfig(tmp_path_factory.mktemp("small_shards"), size=40, shard_size=100)
    config.prepare_shards(catalog.iloc[:12], columns_to_save=["ring"], train_test_fraction=0.5)
    return config


def test_get_dataset_argument_errors(small_shards, tmp_path):
    records = small_shards.train_tfrecord_locs()
    with pytest.raises(CatalogError, match="'smooth'.*Features found.*'ring'"):
        tfrecord_datasets.get_dataset(records, ["smooth"], 4, shuffle=False)
    with pytest.raises(ValueError, match="tfrecord_locs is empty"):
        tfrecord_datasets.get_dataset([], ["ring"], 4, shuffle=False)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        tfrecord_datasets.get_dataset([str(tmp_path / "nope.tfrecord")], ["ring"], 4, shuffle=False)
    with pytest.raises(TypeError, match="batch_size"):
        tfrecord_datasets.get_dataset(records, ["ring"])
    with pytest.raises(TypeError, match="not both"):
        tfrecord_datasets.get_dataset(records, ["ring"], 4, False, columns_to_save=["ring"])


def test_corrupt_record_raises_instead_of_skipping(small_shards, tmp_path):
    (record,) = small_shards.train_tfrecord_locs()
    data = bytearray(pathlib.Path(record).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # zero a block inside a record: its CRC no longer matches
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(bytes(data))
    dataset = tfrecord_datasets.get_dataset([str(corrupt)], ["ring"], 2, shuffle=False)
    with pytest.raises((tf.errors.DataLossError, tf.errors.InvalidArgumentError)):
        for _ in dataset:
            pass


def test_serialize_image_example_feature_types():
    matrix = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    record = create_tfrecord.serialize_image_example(matrix, id_str="g7", ring=np.int64(1), fraction=0.25, flag=True)
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["ring"].int64_list.value == [1] and feature["flag"].int64_list.value == [1]
    assert feature["fraction"].float_list.value == [0.25]
    assert feature["id_str"].bytes_list.value == [b"g7"]
    assert (feature["height"].int64_list.value, feature["width"].int64_list.value) == ([4], [5])
    decoded = tf.io.decode_png(feature["matrix"].bytes_list.value[0]).numpy()
    np.testing.assert_array_equal(decoded, matrix)
    with pytest.raises(TypeError, match="must be uint8"):
        create_tfrecord.serialize_image_example(matrix.astype(np.float32))


# ------------------------------------------------------------------------------------------ example script

def test_create_shards_example_smoke_and_help(tmp_path, capsys):
    from zoobot.tensorflow.examples import create_shards as example

    with pytest.raises(SystemExit) as exit_info:
        example.main(["--help"])
    assert exit_info.value.code == 0 and "--smoke" in capsys.readouterr().out

    assert example.main(["--smoke", "--shard-dir", str(tmp_path / "smoke")]) == 0
    loaded = create_shards.load_shard_config(tmp_path / "smoke")
    assert loaded.ready() and sum(loaded.row_counts.values()) == 30
    assert "First train batch: matrix (8, 32, 32, 3) uint8" in capsys.readouterr().out


def test_a_tiny_png_warns_once_naming_its_file(tmp_path):
    """Issue 12.9, the TensorFlow decoder's twin of the shared loader's warning (tests/shared/test_images.py)."""
    from zoobot.shared.images import reset_image_warnings

    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tmp_path / "one.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "fine.png")
    reset_image_warnings()
    with pytest.warns(UserWarning) as caught:
        image = image_datasets.read_image_file(tf.constant(str(tmp_path / "one.png")), tf.constant("g1"))
        image_datasets.read_image_file(tf.constant(str(tmp_path / "one.png")))
        image_datasets.read_image_file(tf.constant(str(tmp_path / "fine.png")))
    assert image.shape == (1, 1, 3)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "id_str 'g1'" in messages[0] and "only 1x1 pixels" in messages[0], messages
