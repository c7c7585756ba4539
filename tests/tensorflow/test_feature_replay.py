"""Feature replay, the fast path of frozen-encoder finetuning (TensorFlow): with a deterministic training
transform every train/val row is read and encoded once, at the start of the first epoch, and later epochs train
the head on replayed (features, labels) batches without reading any image."""
import logging

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared.images import load_image  # noqa: E402
from zoobot.tensorflow.datasets import GalaxyDataModule  # noqa: E402
from zoobot.tensorflow.datasets import galaxy_datamodule  # noqa: E402
from zoobot.tensorflow.datasets.transforms import EvalTransform, TrainTransform  # noqa: E402
from zoobot.tensorflow.training import finetune  # noqa: E402
from zoobot.tensorflow.training.feature_cache import FeatureReplay, is_deterministic_transform  # noqa: E402

SIZE = 32


def datamodule(catalog, label_cols, batch_size=6, **kwargs):
    kwargs.setdefault("train_transform", EvalTransform(channels=3, resize_after_crop=SIZE))
    return GalaxyDataModule(label_cols, train_catalog=catalog.iloc[:16], val_catalog=catalog.iloc[16:],
                            batch_size=batch_size, resize_after_crop=SIZE, num_workers=1, **kwargs)


@pytest.fixture
def image_reads(monkeypatch):
    """Counts the images the data module's pipelines read: a call-through wrapper around its loading function
    that ticks a Python counter (tf.py_function) each time an image is read (behaviour unchanged)."""
    reads = []
    original = galaxy_datamodule.read_image_file

    def counting(*args, **kwargs):
        image = original(*args, **kwargs)
        tick = tf.py_function(lambda: reads.append(1) or np.int64(0), [], tf.int64)
        with tf.control_dependencies([tick]):
            return tf.identity(image)

    monkeypatch.setattr(galaxy_datamodule, "read_image_file", counting)
    return reads


class ReadsPerEpoch(keras.callbacks.Callback):
    def __init__(self, reads):
        super().__init__()
        self.reads, self.per_epoch = reads, []

    def on_train_begin(self, logs=None):
        self.mark = len(self.reads)

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(len(self.reads) - self.mark)
        self.mark = len(self.reads)


def test_replay_holds_the_encoder_outputs_in_the_image_pipelines_order(png_rings_catalog):
    catalog, label_cols = png_rings_catalog
    dm = datamodule(catalog, label_cols)
    dm.setup("fit")
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, prog_bar=False)
    replay = FeatureReplay(dm, model.encoder_dim)
    assert replay.rows == {"train": 16, "val": 8} and replay.drop_remainder and replay.nbytes == 24 * 128 * 4
    replay.encode(model.encoder, progress_bar=False)

    # reference: images decoded by Pillow (an independent loader; png is lossless), EvalTransform, the encoder
    def reference(rows):
        images = np.stack([EvalTransform(channels=3, resize_after_crop=SIZE)(tf.constant(load_image(path))).numpy()
                           for path in rows["file_loc"]])
        return model.encoder(images, training=False).numpy()

    np.testing.assert_allclose(replay.features("val"), reference(dm.val_catalog), atol=1e-5)
    np.testing.assert_allclose(replay.features("train"), reference(dm.train_catalog), atol=1e-5)

    # batches: the image pipeline's shuffle (same seed, a new order each epoch), batch size, dropped remainder
    fresh = datamodule(catalog, label_cols).train_dataloader()
    replayed = replay.train_dataset()
    orders = []
    for _ in range(2):  # two epochs
        pairs = list(zip(replayed, fresh))
        assert [len(f[1]) for f, _ in pairs] == [6, 6]  # 16 rows: two full batches, the last 4 dropped
        for (features, labels), (images, image_labels) in pairs:
            np.testing.assert_array_equal(labels, image_labels)
            np.testing.assert_allclose(features, model.encoder(images, training=False), atol=1e-5)
        orders.append(np.concatenate([f.numpy()[:, 0] for (f, _), _ in pairs]))
    assert not np.array_equal(orders[0], orders[1])  # reshuffled
    val = list(replay.val_dataset())
    assert [len(y) for _, y in val] == [6, 2]  # every row, catalog order
    np.testing.assert_array_equal(np.concatenate([f for f, _ in val]), replay.features("val"))
    np.testing.assert_array_equal(np.concatenate([y for _, y in val]), dm.val_catalog["ring"].to_numpy("float32"))


def test_fast_path_reads_images_in_the_first_epoch_only_and_trains_like_the_uncached_path(
        png_rings_catalog, image_reads, tmp_path, caplog):
    catalog, label_cols = png_rings_catalog
    runs = {}
    for cache_features in (None, False):
        # one batch per epoch (batch_size >= rows) and no dropout: the result does not depend on the batch order
        # (the replayed and image datasets shuffle alike, but the image path's first-batch check already used
        # one of its shuffles, so its epoch k has the replay's order of epoch k + 1)
        model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, learning_rate=1e-2,
                                                      dropout_prob=0.0, cache_features=cache_features, prog_bar=False)
        reads = ReadsPerEpoch(image_reads)
        trainer = finetune.get_trainer(tmp_path / str(cache_features), accelerator="cpu", max_epochs=2,
                                       enable_progress_bar=False, callbacks=[reads])
        with caplog.at_level(logging.INFO, logger="zoobot"):
            trainer.fit(model, datamodule(catalog, label_cols, batch_size=16))
        runs[cache_features] = model, trainer, reads.per_epoch

    model, trainer, reads = runs[None]
    assert trainer.feature_replay is not None and runs[False][1].feature_replay is None
    assert reads == [24, 0]  # every train and val row once, inside epoch 1; nothing later
    assert runs[False][2][1] >= 24  # the uncached path reads every image again
    assert "feature replay: 16 train + 8 val rows encoded once" in caplog.text
    assert model.feature_cache.history == []  # the content-keyed cache was not used
    history, uncached = trainer.history.history, runs[False][1].history.history
    for key in ("finetuning/train_loss", "finetuning/val_loss", "finetuning/train_acc", "finetuning/val_acc"):
        np.testing.assert_allclose(history[key], uncached[key], rtol=1e-4, err_msg=key)
    assert history["finetuning/train_loss"][0] != history["finetuning/train_loss"][1]  # it trained
    np.testing.assert_allclose(model.head.dense.kernel.numpy(), runs[False][0].head.dense.kernel.numpy(),
                               atol=1e-5)

    # after fit the model reads images again (test), and its checkpoint round-trips
    assert not model.replaying_features
    test = trainer.validate(model, datamodule(catalog, label_cols), verbose=False)[0]
    assert test["finetuning/val_loss"] == pytest.approx(history["finetuning/val_loss"][-1], rel=1e-4)
    loaded = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)
    images = np.concatenate([x for x, _ in datamodule(catalog, label_cols).val_dataloader()])
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_random_or_unknown_transforms_and_oversized_features_never_replay(png_rings_catalog, image_reads, tmp_path,
                                                                          caplog):
    assert is_deterministic_transform(None) and is_deterministic_transform(EvalTransform(3, SIZE))
    assert not is_deterministic_transform(TrainTransform(3, SIZE))
    assert not is_deterministic_transform(lambda image: image)  # unknown callables may be random
    catalog, label_cols = png_rings_catalog
    cases = {
        "default": dict(train_transform=None),  # zoobot's random TrainTransform
        "user": dict(train_transform=lambda image: tf.image.resize(image, (SIZE, SIZE)) / 255.0),
        "too big": dict(),  # deterministic, but over the memory cap
    }
    for name, kwargs in cases.items():
        model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, prog_bar=False)
        if name == "too big":
            model.feature_cache.max_rows = 10
        reads = ReadsPerEpoch(image_reads)
        trainer = finetune.get_trainer(tmp_path / name.replace(" ", "_"), accelerator="cpu", max_epochs=2,
                                       enable_progress_bar=False, enable_checkpointing=False, callbacks=[reads],
                                       limit_train_batches=1)
        with caplog.at_level(logging.INFO, logger="zoobot"):
            trainer.fit(model, datamodule(catalog, label_cols, **kwargs))
        assert trainer.feature_replay is None, name
        assert reads.per_epoch[1] > 0, name  # images read again in the second epoch
        assert len(model.feature_cache.history) == 2, name  # the content-keyed cache ran instead
    assert "feature replay off: train_transform=TrainTransform" in caplog.text
    assert "feature replay off: train_transform=CustomTransform(<function" in caplog.text
    assert "exceed the feature cache's memory cap (10 rows)" in caplog.text
