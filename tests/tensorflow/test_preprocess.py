"""preprocess (api.md 3.2, 6): the seed snippet, the pixel-scale rule (E8), labels, channels, the alias."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoobot.shared.errors import CatalogError, ChannelMismatchError, PixelScaleError
from zoobot.tensorflow import preprocess


def raw_dataset(n=6, size=8, channels=3, dtype=np.uint8, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        matrix = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    else:
        matrix = rng.random((n, size, size, channels)).astype(dtype)
    data = {
        "matrix": matrix,
        "id_str": np.array([f"g{i}" for i in range(n)]),
        "label": np.arange(n, dtype=np.float32),
        "smooth": np.arange(n, dtype=np.int64) * 10,
        "featured": np.arange(n, dtype=np.float32) + 0.5,
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(batch), data


def collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_alias_module_is_the_canonical_module():
    import zoobot.tensorflow.estimators.preprocess as alias
    from zoobot.tensorflow.estimators import preprocess as alias_from_package

    assert alias is preprocess and alias_from_package is preprocess
    assert alias.PreprocessingConfig is preprocess.PreprocessingConfig
    assert alias.preprocess_dataset is preprocess.preprocess_dataset


def test_seed_snippet_greyscale_from_uint8():
    raw_train_dataset, data = raw_dataset()
    requested_img_size = 8

    # as the seed writes it
    preprocess_config = preprocess.PreprocessingConfig(
        label_cols=['label'], input_size=requested_img_size, normalise_from_uint8=True, make_greyscale=True,
        permute_channels=False)
    train_dataset = preprocess.preprocess_dataset(raw_train_dataset, preprocess_config)

    images, labels = collect(train_dataset)
    assert images.dtype == np.float32 and images.shape == (6, 8, 8, 1)
    expected = data["matrix"].astype(np.float64).mean(axis=-1, keepdims=True) / 255.0  # independent numpy reference
    np.testing.assert_allclose(images, expected, atol=1e-6)
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, data["label"][:, None])


def test_labels_stacked_in_label_cols_order_and_colour_kept():
    dataset, data = raw_dataset()
    config = preprocess.PreprocessingConfig(['featured', 'smooth'], 8, make_greyscale=False)
    images, labels = collect(preprocess.preprocess_dataset(dataset, config))
    assert labels.dtype == np.float32 and labels.shape == (6, 2)
    np.testing.assert_array_equal(labels, np.stack([data["featured"], data["smooth"]], axis=1))
    np.testing.assert_allclose(images, data["matrix"] / 255.0, atol=1e-6)


def test_pixel_rule_e8_both_directions():
    uint8_dataset, _ = raw_dataset()
    with pytest.raises(PixelScaleError, match="uint8.*set normalise_from_uint8=True"):
        preprocess.preprocess_dataset(uint8_dataset, preprocess.PreprocessingConfig(['label'], 8, normalise_from_uint8=False))

    float_dataset, data = raw_dataset(dtype=np.float32)
    with pytest.raises(PixelScaleError, match="divide it by 255 again.*set normalise_from_uint8=False"):
        preprocess.preprocess_dataset(float_dataset, preprocess.PreprocessingConfig(['label'], 8))
    # the right flag: float images pass through unchanged
    images, _ = collect(preprocess.preprocess_dataset(
        float_dataset, preprocess.PreprocessingConfig(['label'], 8, normalise_from_uint8=False, make_greyscale=False)))
    np.testing.assert_array_equal(images, data["matrix"])

    int32 = tf.data.Dataset.from_tensor_slices({"matrix": np.zeros((2, 4, 4, 3), np.int32)}).batch(2)
    with pytest.raises(PixelScaleError, match="int32"):
        preprocess.preprocess_dataset(int32, preprocess.PreprocessingConfig([], 4))


def test_missing_label_key_lists_keys_present():
    dataset, _ = raw_dataset()
    with pytest.raises(CatalogError, match="'ring'.*Keys present.*'featured'.*'label'"):
        preprocess.preprocess_dataset(dataset, preprocess.PreprocessingConfig(['ring'], 8))


def test_unlabelled_yields_ids_and_resizes_when_size_differs():
    dataset, data = raw_dataset(size=16)
    out = list(preprocess.preprocess_dataset(dataset, preprocess.PreprocessingConfig([], 8)))
    images, ids = out[0]
    assert images.shape == (3, 8, 8, 1)
    assert [s.decode() for s in ids.numpy()] == ["g0", "g1", "g2"]
    # antialiased bilinear resize: the same as Pillow's (an independent implementation) on float images
    grey = (data["matrix"][:3].astype(np.float64) / 255.0).mean(axis=-1).astype(np.float32)
    reference = np.stack([np.asarray(Image.fromarray(g, mode="F").resize((8, 8), Image.BILINEAR)) for g in grey])
    np.testing.assert_allclose(images.numpy()[..., 0], reference, atol=1e-5)


def test_permute_channels_permutes_each_image():
    dataset, data = raw_dataset(n=12, batch=12)
    tf.random.set_seed(0)
    config = preprocess.PreprocessingConfig(['label'], 8, make_greyscale=False, permute_channels=True)
    images, _ = collect(preprocess.preprocess_dataset(dataset, config))
    original = data["matrix"] / 255.0
    orders = set()
    for image, source in zip(images, original):
        order = [int(np.argmin([np.abs(image[..., c] - source[..., k]).max() for k in range(3)])) for c in range(3)]
        assert sorted(order) == [0, 1, 2]
        np.testing.assert_allclose(image, source[..., order], atol=1e-6)
        orders.add(tuple(order))
    assert len(orders) > 1  # per-image random orders, not one order for everything


def test_config_validation_asdict_copy_and_input_channels():
    with pytest.raises(ValueError, match="cannot be combined"):
        preprocess.PreprocessingConfig(['label'], 8, make_greyscale=True, permute_channels=True)
    with pytest.raises(ValueError, match="input_size must be >= 1, got 0"):
        preprocess.PreprocessingConfig(['label'], 0)
    config = preprocess.PreprocessingConfig(['label'], 8, input_channels=1)
    copy = config.copy()
    copy.label_cols.append('other')
    assert config.asdict() == {'label_cols': ['label'], 'input_size': 8, 'normalise_from_uint8': True,
                               'make_greyscale': True, 'permute_channels': False, 'input_channels': 1}
    dataset, _ = raw_dataset()
    with pytest.raises(ChannelMismatchError, match="input_channels=1.*3 channels"):
        preprocess.preprocess_dataset(dataset, config)
