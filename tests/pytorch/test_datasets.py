"""GalaxyDataset, GalaxyDataModule and the transforms (api.md 2.1), on real image files in tmp_path."""
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from zoobot.pytorch.datasets import GalaxyDataModule, GalaxyDataset, transforms
from zoobot.pytorch.datasets.decals_dr8 import DecalsDR8DataModule
from zoobot.shared import schemas
from zoobot.shared.catalogs import split_catalog
from zoobot.shared.errors import CatalogError, ImageLoadError
from zoobot.shared.images import load_image, to_channels


def random_rgb(size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ transforms

def test_eval_transform_is_deterministic_with_shape_and_range():
    image = random_rgb()
    for channels in (1, 3):
        evaluate = transforms.EvalTransform(channels=channels, resize_after_crop=32)
        first, second = evaluate(image), evaluate(image)
        assert torch.equal(first, second)
        assert first.shape == (channels, 32, 32) and first.dtype == torch.float32
        assert 0 <= float(first.min()) and float(first.max()) <= 1


def test_eval_transform_is_a_centre_crop_keeping_the_mean_area_fraction():
    # area fraction 0.75 of 100 px -> side round(86.6) = 87 px starting at (100 - 87) // 2 = 6
    image = np.full((100, 100, 1), 255, dtype=np.uint8)
    image[6:93, 6:93] = np.arange(87, dtype=np.uint8)[None, :, None]
    evaluate = transforms.EvalTransform(channels=1, resize_after_crop=87, crop_scale_bounds=(0.7, 0.8))
    expected = torch.from_numpy(image[6:93, 6:93, 0].astype(np.float32) / 255)
    torch.testing.assert_close(evaluate(image)[0], expected, rtol=0, atol=1e-6)


def test_greyscale_is_the_rounded_mean_of_rgb():
    image = random_rgb(seed=1)
    assert np.array_equal(transforms.fast_to_channels(image, 1), to_channels(image, 1))
    pixel = np.array([[[10, 20, 61]]], dtype=np.uint8)  # mean 30.33 -> 30
    out = transforms.EvalTransform(channels=1, resize_after_crop=1, crop_scale_bounds=(1, 1))(pixel)
    assert out.item() == pytest.approx(30 / 255)


def test_train_transform_is_random_with_shape_and_range_and_seedable():
    image = random_rgb(size=80)
    train = transforms.TrainTransform(channels=3, resize_after_crop=32)
    torch.manual_seed(0)
    a, b = train(image), train(image)
    torch.manual_seed(0)
    a_again = train(image)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b) and torch.equal(a, a_again)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 + 1e-6


def test_train_crop_is_centred_unless_asked_to_be_random():
    # rotations and flips leave a centred disk unchanged, so a centred crop of fixed area must equal the eval
    # transform's centre crop up to the rotation's interpolation; a randomly placed crop moves the disk
    yy, xx = np.mgrid[:48, :48] - 23.5
    disk = np.repeat(np.clip(255 * (1.2 - np.hypot(xx, yy) / 16), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    fixed = dict(channels=3, resize_after_crop=32, crop_scale_bounds=(0.64, 0.64), crop_ratio_bounds=(1.0, 1.0))
    reference = transforms.EvalTransform(3, 32, crop_scale_bounds=(0.64, 0.64))(disk)
    centred = transforms.TrainTransform(**fixed)
    placed = transforms.TrainTransform(**fixed, crop_position="random")
    torch.manual_seed(0)
    assert max(float((centred(disk) - reference).abs().max()) for _ in range(8)) < 0.04
    assert max(float((placed(disk) - reference).abs().max()) for _ in range(8)) > 0.1
    assert "crop_position='centre'" in repr(centred)
    assert transforms.TrainTransform(crop_position="center").crop_position == "centre"
    with pytest.raises(ValueError, match="crop_position must be 'centre' .* or 'random'.*got 'middle'"):
        transforms.TrainTransform(crop_position="middle")


def test_min_source_size_is_the_smallest_side_that_never_upsamples_a_crop():
    # crop width sqrt(area * ratio), height sqrt(area / ratio): the smallest side is the width at area 0.7,
    # ratio 0.9: sqrt(0.63) = 0.7937 of the image side -> 224 / 0.7937 = 282.2 -> 283
    assert transforms.TrainTransform(resize_after_crop=224).min_source_size == 283
    # centre crop side fraction sqrt(0.75) = 0.866 -> 224 / 0.866 = 258.7 -> 259
    assert transforms.EvalTransform(resize_after_crop=224).min_source_size == 259


def test_default_transforms_and_test_time_augmentation():
    train, evaluate = transforms.default_transforms(greyscale=True, resize_after_crop=48)
    assert isinstance(train, transforms.TrainTransform) and isinstance(evaluate, transforms.EvalTransform)
    assert evaluate.output_shape == (1, 48, 48)
    train, evaluate = transforms.default_transforms(test_time_augmentation=True)
    assert evaluate is train


@pytest.mark.parametrize("bounds, match", [((0.8, 0.7), "low <= high"), ((0, 0.5), "0 < low"), ((0.5,), "pair")])
def test_bad_crop_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        transforms.TrainTransform(crop_scale_bounds=bounds)


# ------------------------------------------------------------------------------------ GalaxyDataset

@pytest.fixture
def small_catalog(tmp_path):
    rows = []
    for i in range(6):
        path = tmp_path / f"g{i}.jpg"
        Image.fromarray(random_rgb(size=40, seed=i)).save(path)
        rows.append({"id_str": f"g{i}", "file_loc": str(path), "a": i, "b": 2 * i})
    return pd.DataFrame(rows)


def test_dataset_items_and_label_shapes(small_catalog):
    image, label = GalaxyDataset(small_catalog, label_cols=["a"])[2]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32 and float(image.max()) <= 1
    assert label.shape == () and label.dtype == torch.float32 and label.item() == 2.0
    _, labels = GalaxyDataset(small_catalog, label_cols=["a", "b"])[3]
    assert labels.tolist() == [3.0, 6.0]
    image_only = GalaxyDataset(small_catalog, transform=transforms.EvalTransform(1, 16))[0]
    assert image_only.shape == (1, 16, 16)
    pixels = load_image(small_catalog.file_loc[0]).astype(np.float32) / 255
    torch.testing.assert_close(GalaxyDataset(small_catalog)[0], torch.from_numpy(pixels).permute(2, 0, 1))


def test_dataset_keeps_non_ascii_paths_and_ids(tmp_path):
    """Paths and ids are stored as UTF-8 bytes (a quarter of numpy's str arrays): they must come back unchanged."""
    folder = tmp_path / "galáxias"
    folder.mkdir()
    path = folder / "anneau_ü.png"
    Image.fromarray(np.full((20, 20, 3), 7, dtype=np.uint8)).save(path)
    catalog = pd.DataFrame({"id_str": ["Ж-1"], "file_loc": [str(path)]})
    item = GalaxyDataset(catalog, transform=transforms.EvalTransform(1, 8), return_index=True)[0]
    assert item["id_str"] == "Ж-1" and not bool(item["failed"])
    torch.testing.assert_close(item["image"], torch.full((1, 8, 8), 7 / 255))


def test_dataset_missing_column_is_e1(small_catalog):
    with pytest.raises(CatalogError, match=r"missing column\(s\) \['ring'\]"):
        GalaxyDataset(small_catalog, label_cols=["ring"])


def test_bad_image_raises_e6_with_id_or_is_recorded(small_catalog, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    catalog = pd.concat([small_catalog, pd.DataFrame([{"id_str": "broken", "file_loc": str(bad), "a": 0, "b": 0}])],
                        ignore_index=True)
    with pytest.raises(ImageLoadError, match="broken"):
        GalaxyDataset(catalog, transform=transforms.EvalTransform(1, 16))[6]
    dataset = GalaxyDataset(catalog, transform=transforms.EvalTransform(1, 16), return_index=True,
                            on_bad_image="record")
    item = dataset[6]
    assert item["failed"].item() and item["index"].item() == 6 and item["id_str"] == "broken"
    assert torch.equal(item["image"], torch.zeros(1, 16, 16))
    assert "broken.jpg" in dataset.describe_failure(6) and dataset.describe_failure(0) == ""
    good = dataset[1]
    assert not good["failed"].item() and good["image"].abs().sum() > 0
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=7)))
    assert batch["index"].tolist() == list(range(7)) and batch["failed"].tolist() == [False] * 6 + [True]
    with pytest.raises(ValueError, match="Unknown on_bad_image 'skip'"):
        GalaxyDataset(catalog, on_bad_image="skip")


# ------------------------------------------------------------------------------------ GalaxyDataModule

def make_datamodule(catalog, label_cols, **kwargs):
    options = dict(batch_size=4, num_workers=0, resize_after_crop=32, greyscale=True)
    options.update(kwargs)
    return GalaxyDataModule(label_cols, catalog=catalog, **options)


def test_datamodule_splits_like_split_catalog(votes_catalog):
    catalog, label_cols = votes_catalog
    datamodule = make_datamodule(catalog, label_cols, seed=7)
    train, val, test = split_catalog(catalog, seed=7)
    for mine, expected in ((datamodule.train_catalog, train), (datamodule.val_catalog, val),
                           (datamodule.test_catalog, test)):
        assert mine["id_str"].tolist() == expected["id_str"].tolist()
    assert len(train) + len(val) + len(test) == len(catalog)


def test_datamodule_batches(votes_catalog):
    catalog, label_cols = votes_catalog
    datamodule = make_datamodule(catalog, label_cols, predict_catalog=catalog.drop(columns=label_cols))
    datamodule.setup("fit")
    train_loader = datamodule.train_dataloader()
    images, labels = next(iter(train_loader))
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1 + 1e-6
    assert labels.shape == (4, 34) and labels.dtype == torch.float32
    assert isinstance(train_loader.sampler, torch.utils.data.RandomSampler) and train_loader.drop_last
    assert len(train_loader) == len(datamodule.train_catalog) // 4
    val_loader = datamodule.val_dataloader()
    assert isinstance(val_loader.sampler, torch.utils.data.SequentialSampler) and not val_loader.drop_last
    first, second = next(iter(val_loader))[0], next(iter(datamodule.val_dataloader()))[0]
    assert torch.equal(first, second)  # deterministic evaluation
    # the training shuffle is seeded
    order = [y.sum().item() for _, y in datamodule.train_dataloader()]
    assert order == [y.sum().item() for _, y in datamodule.train_dataloader()]
    datamodule.setup("predict")
    predict_batch = next(iter(datamodule.predict_dataloader()))
    assert isinstance(predict_batch, torch.Tensor) and predict_batch.shape == (4, 1, 32, 32)
    with_ids = next(iter(datamodule.predict_dataloader_with_ids()))
    assert with_ids["id_str"] == catalog["id_str"].tolist()[:4]
    assert torch.equal(with_ids["image"], predict_batch)


def test_datamodule_setup_needs_the_right_catalogs(votes_catalog):
    catalog, label_cols = votes_catalog
    train, val, _ = split_catalog(catalog)
    datamodule = GalaxyDataModule(label_cols, train_catalog=train, val_catalog=val, num_workers=0)
    datamodule.setup("fit")
    with pytest.raises(ValueError, match=r"setup\('test'\) needs test_catalog"):
        datamodule.setup("test")
    with pytest.raises(ValueError, match=r"setup\('predict'\) needs predict_catalog"):
        datamodule.setup("predict")
    with pytest.raises(ValueError, match=r"setup\(None\) needs test_catalog"):
        datamodule.setup(None)
    with pytest.raises(ValueError, match="Unknown stage 'training'"):
        datamodule.setup("training")


def test_datamodule_argument_errors(votes_catalog):
    catalog, label_cols = votes_catalog
    with pytest.raises(ValueError, match="not both: got catalog and train_catalog"):
        GalaxyDataModule(label_cols, catalog=catalog, train_catalog=catalog, num_workers=0)
    with pytest.raises(NotImplementedError, match="use_memory=True"):
        GalaxyDataModule(label_cols, catalog=catalog, use_memory=True)
    with pytest.raises(CatalogError, match="ring"):
        GalaxyDataModule(["ring"], catalog=catalog, num_workers=0)
    with pytest.raises(ValueError, match="at most one way to override the transforms"):
        GalaxyDataModule(label_cols, catalog=catalog, num_workers=0, train_transform=lambda x: x,
                         custom_torchvision_transform=lambda x: x)
    missing = catalog.copy()
    missing.loc[0, "file_loc"] = "/nowhere/missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        GalaxyDataModule(label_cols, catalog=missing, num_workers=0)
    GalaxyDataModule(label_cols, catalog=missing, num_workers=0, check_valid_paths=False)


def test_worker_settings(votes_catalog):
    catalog, label_cols = votes_catalog
    too_many = 10_000
    with pytest.warns(UserWarning, match=f"num_workers={too_many} but only"):
        capped = make_datamodule(catalog, label_cols, num_workers=too_many)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert capped.num_workers == cores  # capped at exactly the cores this process may use
    datamodule = make_datamodule(catalog, label_cols, num_workers=1, prefetch_factor=3)
    loader = datamodule.train_dataloader()  # not iterated: no worker is started
    assert loader.num_workers == 1 and loader.persistent_workers and loader.prefetch_factor == 3
    assert loader.worker_init_fn is not None
    no_workers = make_datamodule(catalog, label_cols, num_workers=0, prefetch_factor=3).val_dataloader()
    assert no_workers.prefetch_factor is None and not no_workers.persistent_workers


def test_transform_options(votes_catalog):
    catalog, label_cols = votes_catalog
    tta = make_datamodule(catalog, label_cols, test_time_augmentation=True)
    assert isinstance(tta.test_transform, transforms.TrainTransform)
    seen = []

    def custom(tensor):  # torchvision-style: gets CHW float [0, 1] with the requested channels
        seen.append(tuple(tensor.shape))
        return tensor[:, :8, :8]

    custom_dm = make_datamodule(catalog, label_cols, custom_torchvision_transform=custom)
    custom_dm.setup("validate")
    images, _ = next(iter(custom_dm.val_dataloader()))
    assert images.shape == (4, 1, 8, 8) and seen[0] == (1, 48, 48)
    array_dm = make_datamodule(catalog, label_cols, test_transform=lambda hwc: hwc[:10, :10])
    array_dm.setup("validate")
    images, _ = next(iter(array_dm.val_dataloader()))
    assert images.shape == (4, 3, 10, 10) and images.dtype == torch.float32 and float(images.max()) <= 1


def test_ring_catalog_single_label(rings_catalog):
    catalog, label_cols = rings_catalog
    datamodule = GalaxyDataModule(label_cols=["ring"], catalog=catalog, batch_size=4, num_workers=0,
                                  resize_after_crop=32, greyscale=True)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4, 1, 32, 32) and labels.shape == (4,)
    assert set(labels.tolist()) <= {0.0, 1.0}


def test_decals_dr8_preset_and_demo_rings_reexport(tmp_path):
    import zoobot.pytorch.datasets as torch_datasets
    from zoobot.shared import datasets as shared_datasets

    assert torch_datasets.demo_rings is shared_datasets.demo_rings
    schema = schemas.decals_dr8_ortho_schema
    rows = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(random_rgb(size=32, seed=i)).save(path)
        rows.append({"id_str": str(i), "file_loc": str(path), **{col: i % 3 for col in schema.label_cols}})
    catalog = pd.DataFrame(rows)
    datamodule = DecalsDR8DataModule(train_catalog=catalog, val_catalog=catalog, batch_size=4, num_workers=0,
                                     resize_after_crop=16)
    assert datamodule.label_cols == schema.label_cols
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.shape == (4, schema.n_answers)
    assert math.isclose(labels[1, 0].item(), 1.0)


def test_worker_processes_give_the_same_batches_and_seeded_augmentations(votes_catalog):
    catalog, label_cols = votes_catalog
    in_process = make_datamodule(catalog, label_cols, num_workers=0)
    with_worker = make_datamodule(catalog, label_cols, num_workers=1, prefetch_factor=1)
    val_images, val_labels = next(iter(with_worker.val_dataloader()))
    expected_images, expected_labels = next(iter(in_process.val_dataloader()))
    assert torch.equal(val_images, expected_images) and torch.equal(val_labels, expected_labels)
    # augmentations in workers are seeded from the data module's seed: a new loader repeats them
    first = next(iter(with_worker.train_dataloader()))[0]
    again = next(iter(make_datamodule(catalog, label_cols, num_workers=1, prefetch_factor=1).train_dataloader()))[0]
    assert torch.equal(first, again)
