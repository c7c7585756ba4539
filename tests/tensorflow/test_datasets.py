"""TensorFlow GalaxyDataModule and transforms (api.md 3.3, parallel to PyTorch 2.1)."""
import ast
import inspect
import pathlib

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

import zoobot
from zoobot.shared.catalogs import split_catalog
from zoobot.tensorflow.datasets import GalaxyDataModule, transforms


def torch_datamodule_parameters():
    """(name, kind, default source) of the PyTorch GalaxyDataModule.__init__, read from its source with ``ast``
    (importing torchvision after TensorFlow is unsafe in one process)."""
    path = pathlib.Path(zoobot.__file__).parent / "pytorch" / "datasets" / "galaxy_datamodule.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GalaxyDataModule")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__").args
    positional = init.args[1:]  # drop self
    defaults = [None] * (len(positional) - len(init.defaults)) + list(init.defaults)
    params = [(a.arg, "positional", None if d is None else ast.literal_eval(d)) for a, d in zip(positional, defaults)]
    params += [(a.arg, "keyword", ast.literal_eval(d)) for a, d in zip(init.kwonlyargs, init.kw_defaults)]
    return params


def test_signature_matches_pytorch_datamodule():
    ours = []
    for p in list(inspect.signature(GalaxyDataModule.__init__).parameters.values())[1:]:
        kind = "keyword" if p.kind is inspect.Parameter.KEYWORD_ONLY else "positional"
        ours.append((p.name, kind, None if p.default is inspect.Parameter.empty else p.default))
    assert ours == torch_datamodule_parameters()


@pytest.fixture(scope="module")
def datamodule(jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog
    return GalaxyDataModule(label_cols, catalog=catalog, batch_size=4, resize_after_crop=32, num_workers=2,
                            prefetch_factor=2, seed=7)


def test_splits_identical_to_split_catalog(datamodule, jpg_rings_catalog):
    catalog, _ = jpg_rings_catalog
    train, val, test = split_catalog(catalog, 0.7, 0.1, 0.2, seed=7)
    assert datamodule.train_catalog["id_str"].tolist() == train["id_str"].tolist()
    assert datamodule.val_catalog["id_str"].tolist() == val["id_str"].tolist()
    assert datamodule.test_catalog["id_str"].tolist() == test["id_str"].tolist()


def test_eval_batches_deterministic_shapes_and_range(datamodule):
    datamodule.setup("test")
    first = [(x.numpy(), y.numpy()) for x, y in datamodule.test_dataloader()]
    second = [(x.numpy(), y.numpy()) for x, y in datamodule.test_dataloader()]
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    images = np.concatenate([x for x, _ in first])
    labels = np.concatenate([y for _, y in first])
    assert images.dtype == np.float32 and images.shape == (len(datamodule.test_catalog), 32, 32, 3)
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.2
    np.testing.assert_array_equal(labels, datamodule.test_catalog["ring"].to_numpy(np.float32))  # catalog order


def test_train_batches_shuffle_drop_remainder_and_are_reproducible(datamodule, jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog
    datamodule.setup("fit")
    n_train = len(datamodule.train_catalog)
    epochs = [[(x.numpy(), y.numpy()) for x, y in datamodule.train_dataloader()] for _ in range(2)]
    assert len(epochs[0]) == n_train // 4 and all(x.shape == (4, 32, 32, 3) for x, _ in epochs[0])
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # new order / augmentation each epoch

    again = GalaxyDataModule(label_cols, catalog=catalog, batch_size=4, resize_after_crop=32, num_workers=2,
                             prefetch_factor=2, seed=7)
    x, y = next(iter(again.train_dataloader()))
    np.testing.assert_array_equal(x.numpy(), epochs[0][0][0])  # same seed, same first batch
    np.testing.assert_array_equal(y.numpy(), epochs[0][0][1])


def test_predict_yields_images_and_ids_in_catalog_order(jpg_rings_catalog):
    catalog, _ = jpg_rings_catalog
    dm = GalaxyDataModule(None, predict_catalog=catalog, batch_size=16, resize_after_crop=24, greyscale=True,
                          num_workers=1)
    batches = list(dm.predict_dataloader())
    ids = [s.decode() for _, batch_ids in batches for s in batch_ids.numpy()]
    assert ids == catalog["id_str"].tolist()
    assert batches[0][0].shape == (16, 24, 24, 1) and batches[-1][0].shape[0] == len(catalog) - 16


def write_png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_eval_transform_hand_computed_centre_crops(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # area fraction 1: the whole image, no resize -> exactly the pixels / 255
    whole = transforms.EvalTransform(channels=3, resize_after_crop=64, crop_scale_bounds=(1.0, 1.0))
    np.testing.assert_allclose(whole(tf.constant(image)).numpy(), image / 255.0, atol=1e-6)
    # area fraction 0.25: side 32, offset (64 - 32) // 2 = 16 -> exactly the central 32 x 32 pixels
    centre = transforms.EvalTransform(channels=3, resize_after_crop=32, crop_scale_bounds=(0.2, 0.3))
    np.testing.assert_allclose(centre(tf.constant(image)).numpy(), image[16:48, 16:48] / 255.0, atol=1e-6)
    # greyscale = mean of R, G, B, rounded to uint8 first (as zoobot.shared.images.to_channels)
    grey = transforms.EvalTransform(channels=1, resize_after_crop=32, crop_scale_bounds=(0.2, 0.3))
    expected = np.round(image[16:48, 16:48].astype(np.float64).mean(axis=2, keepdims=True)) / 255.0
    np.testing.assert_allclose(grey(tf.constant(image)).numpy(), expected, atol=1e-6)

    # the data module uses it for val/test/predict, on the decoded file
    catalog = pd.DataFrame({"id_str": ["a"], "file_loc": [write_png(tmp_path / "a.png", image)]})
    dm = GalaxyDataModule([], predict_catalog=catalog, batch_size=1, resize_after_crop=32,
                          crop_scale_bounds=(0.2, 0.3), num_workers=0)
    (x, ids), = list(dm.predict_dataloader())
    np.testing.assert_allclose(x.numpy()[0], image[16:48, 16:48] / 255.0, atol=1e-6)


def test_eval_transform_crops_before_converting_with_the_same_pixels():
    """Cropping the uint8 image first (issue 16.4) gives exactly convert -> crop -> resize, for odd sizes too."""
    image = np.random.default_rng(1).integers(0, 256, (67, 53, 3), dtype=np.uint8)
    for channels in (1, 3):
        x = tf.cast(tf.constant(image), tf.float32)
        if channels == 1:
            x = tf.round(tf.reduce_mean(x, axis=-1, keepdims=True))
        x = x / 255.0
        side = np.sqrt(0.75)  # mean of the default crop_scale_bounds (0.7, 0.8)
        h, w = round(67 * side), round(53 * side)
        top, left = (67 - h) // 2, (53 - w) // 2
        expected = tf.image.resize(x[top:top + h, left:left + w], [40, 40], method="bilinear", antialias=True)
        got = transforms.EvalTransform(channels=channels, resize_after_crop=40)(tf.constant(image))
        np.testing.assert_array_equal(got.numpy(), np.clip(expected.numpy(), 0, 1))


def test_predict_pipeline_runs_on_its_own_thread_pool(jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog
    dm = GalaxyDataModule(label_cols, catalog=catalog, predict_catalog=catalog[["id_str", "file_loc"]], batch_size=8,
                          resize_after_crop=24, num_workers=1)
    threading = dm.predict_dataloader().options().threading
    assert threading.private_threadpool_size == 1 and threading.max_intra_op_parallelism == 1
    assert dm.val_dataloader().options().threading.private_threadpool_size is None  # training unchanged


def test_pipelines_with_explicit_settings_have_no_autotuner(jpg_rings_catalog):
    """Every pass over an autotuned pipeline ended when the autotuner's doubling sleep did (docs/benchmarks.md 3c):
    the data module's pipelines, whose parallelism and prefetch are explicit, switch it off; AUTOTUNE keeps it."""
    from zoobot.tensorflow.datasets.galaxy_datamodule import catalog_dataset

    catalog, label_cols = jpg_rings_catalog
    dm = GalaxyDataModule(label_cols, catalog=catalog, predict_catalog=catalog[["id_str", "file_loc"]], batch_size=8,
                          resize_after_crop=24, num_workers=1)
    dm.setup("fit")
    for dataset in (dm.train_dataloader(), dm.val_dataloader(), dm.predict_dataloader()):
        assert dataset.options().autotune.enabled is False
    autotuned = catalog_dataset(catalog, transforms.EvalTransform(channels=1, resize_after_crop=24), label_cols,
                                batch_size=8)
    assert autotuned.options().autotune.enabled is not False


def test_train_transform_rotates_about_the_centre_and_is_seeded():
    # a centred, rotationally symmetric disk: any rotation about the true centre, any flip and a full-image
    # crop leave it unchanged, so the random train transform must equal the deterministic eval transform
    yy, xx = np.mgrid[:48, :48] - 23.5
    disk = np.clip(255 * (1.2 - np.hypot(xx, yy) / 16), 0, 255).astype(np.uint8)
    disk = np.repeat(disk[:, :, None], 3, axis=2)
    train = transforms.TrainTransform(channels=3, resize_after_crop=48, crop_scale_bounds=(1.0, 1.0),
                                      crop_ratio_bounds=(1.0, 1.0))
    reference = transforms.EvalTransform(channels=3, resize_after_crop=48, crop_scale_bounds=(1.0, 1.0))(disk).numpy()
    for seed in range(4):
        out = train(tf.constant(disk), tf.constant([seed, 1], tf.int64)).numpy()
        assert np.abs(out - reference).max() < 0.04  # bilinear interpolation error only

    # a non-symmetric image: same seed -> same output; other seeds -> other outputs; shapes and range kept
    rng = np.random.default_rng(1)
    image = tf.constant(rng.integers(0, 256, (60, 50, 3), dtype=np.uint8))
    augment = transforms.TrainTransform(channels=1, resize_after_crop=32)
    a, b, c = (augment(image, tf.constant(s, tf.int64)).numpy() for s in ([5, 5], [5, 5], [6, 5]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (32, 32, 1) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1


def test_train_crop_is_centred_unless_asked_to_be_random():
    # a centred crop of fixed area of a centred disk is the eval crop for every seed (rotation and flip change
    # nothing but interpolation); random placement moves the disk away from the centre
    yy, xx = np.mgrid[:48, :48] - 23.5
    disk = tf.constant(np.repeat(np.clip(255 * (1.2 - np.hypot(xx, yy) / 16), 0, 255).astype(np.uint8)[:, :, None],
                                 3, axis=2))
    reference = transforms.EvalTransform(3, 32, crop_scale_bounds=(0.64, 0.64))(disk).numpy()
    errors = {}
    for position in ("centre", "random"):
        train = transforms.TrainTransform(3, 32, (0.64, 0.64), (1.0, 1.0), crop_position=position)
        errors[position] = max(np.abs(train(disk, tf.constant([seed, 3], tf.int64)).numpy() - reference).max()
                               for seed in range(8))
    assert errors["centre"] < 0.04 and errors["random"] > 0.1
    with pytest.raises(ValueError, match="crop_position must be 'centre'"):
        transforms.TrainTransform(crop_position="left")


def test_a_zoobot_train_transform_passed_in_gets_the_pipelines_seeds(jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog
    random_crops = transforms.TrainTransform(3, 32, crop_position="random")

    def first_batch(seed):
        dm = GalaxyDataModule(label_cols, train_catalog=catalog, val_catalog=catalog, batch_size=8, num_workers=1,
                              seed=seed, train_transform=random_crops)
        dm.setup("fit")
        assert dm.train_transform is random_crops  # not wrapped: it is called with each image's seed
        return next(iter(dm.train_dataloader()))[0].numpy()

    np.testing.assert_array_equal(first_batch(1), first_batch(1))
    assert not np.allclose(first_batch(1), first_batch(2))


def test_datamodule_errors(jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog
    with pytest.raises(NotImplementedError, match="use_memory"):
        GalaxyDataModule(label_cols, catalog=catalog, use_memory=True, num_workers=0)
    with pytest.raises(ValueError, match="not both"):
        GalaxyDataModule(label_cols, catalog=catalog, train_catalog=catalog, num_workers=0)
    dm = GalaxyDataModule(label_cols, train_catalog=catalog.iloc[:10], val_catalog=catalog.iloc[10:], num_workers=0)
    with pytest.raises(ValueError, match="setup\\('test'\\) needs test_catalog"):
        dm.setup("test")
    with pytest.raises(ValueError, match="at most one way"):
        GalaxyDataModule(label_cols, catalog=catalog, num_workers=0, train_transform=lambda x: x,
                         custom_torchvision_transform=lambda x: x)


def test_custom_transform_on_tf_tensors(jpg_rings_catalog):
    catalog, label_cols = jpg_rings_catalog

    def flip_and_shrink(image):  # float [0, 1] HWC, greyscale already applied
        return tf.image.resize(tf.reverse(image, axis=[1]), [16, 16])

    dm = GalaxyDataModule(label_cols, predict_catalog=catalog.iloc[:2], batch_size=2, greyscale=True, num_workers=0,
                          custom_albumentation_transform=flip_and_shrink)
    x, _ = next(iter(dm.predict_dataloader()))
    assert x.shape == (2, 16, 16, 1) and x.dtype == tf.float32


def test_decals_dr8_preset_and_demo_rings_reexport(jpg_rings_catalog):
    from zoobot.shared import datasets as shared_datasets
    from zoobot.shared import schemas
    from zoobot.tensorflow import datasets
    from zoobot.tensorflow.datasets.decals_dr8 import DecalsDR8DataModule

    catalog, _ = jpg_rings_catalog
    assert datasets.DecalsDR8DataModule is DecalsDR8DataModule
    dm = DecalsDR8DataModule(predict_catalog=catalog.iloc[:2], num_workers=0, resize_after_crop=16)
    assert isinstance(dm, GalaxyDataModule)
    assert dm.label_cols == schemas.decals_dr8_ortho_schema.label_cols and len(dm.label_cols) == 34
    assert datasets.demo_rings is shared_datasets.demo_rings
