"""Finetuning with Keras (api.md 3.7, 2.5): the seed flow, freezing, per-block learning rates, the feature
cache, task heads, .keras round trips and signatures identical to PyTorch's."""
import csv
import inspect
import json
import zipfile

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.errors import ChannelMismatchError, CheckpointVersionError, PixelScaleError  # noqa: E402
from tests.shared.test_schedules import hand_multiplier  # noqa: E402
from zoobot.tensorflow.datasets import GalaxyDataModule, demo_rings  # noqa: E402
from zoobot.tensorflow.estimators import define_model  # noqa: E402
from zoobot.tensorflow.training import finetune  # noqa: E402


def arrays(n=48, size=32, channels=3, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels)).astype("float32"), rng.integers(0, classes, n).astype("float32")


def datasets(x, y, batch_size=16, seed=1):
    """(train, val): the train set reshuffled each epoch with a fixed seed (same order sequence every call)."""
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)
    val = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(batch_size)
    return train, val


def quiet_trainer(tmp_path, **kwargs):
    kwargs.setdefault("max_epochs", 1)
    return finetune.get_trainer(tmp_path, accelerator="cpu", enable_progress_bar=False, **kwargs)


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def values(variables):
    return {v.path: v.numpy().copy() for v in variables}


class Snapshot(keras.callbacks.Callback):
    """Weights of the model after each epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(values(self.model.weights))


# ------------------------------------------------------------------------------------------------
# the seed flow: demo_rings -> GalaxyDataModule -> Classifier -> get_trainer -> fit -> load best -> predict
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rings(tmp_path_factory):
    catalog, label_cols = demo_rings(tmp_path_factory.mktemp("rings"), download=True, train=True, synthetic=True)
    assert label_cols == ["ring"]
    return catalog.iloc[:64].reset_index(drop=True)


@pytest.fixture(scope="module")
def seed_run(rings, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("seed_run")
    datamodule = GalaxyDataModule(label_cols=["ring"], catalog=rings, batch_size=32, resize_after_crop=32,
                                  num_workers=1)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=0, learning_rate=1e-2,
                                                  prog_bar=False)
    trainer = finetune.get_trainer(save_dir, accelerator="cpu", max_epochs=2)
    trainer.fit(model, datamodule)
    return save_dir, model, trainer, datamodule


def test_seed_flow_fit_checkpoints_logs_and_predict(seed_run, rings):
    save_dir, model, trainer, _ = seed_run
    best = trainer.checkpoint_callback.best_model_path
    rows = read_metrics(save_dir / "logs" / "metrics.csv")
    # one row per epoch, with the PyTorch backend's metric names
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"finetuning/train_loss", "finetuning/val_loss", "finetuning/train_acc", "finetuning/val_acc", "lr",
            "step"} <= set(rows[0])
    val_losses = [float(r["finetuning/val_loss"]) for r in rows]
    best_epoch = int(np.argmin(val_losses))
    assert best == str(save_dir / "checkpoints" / f"epoch={best_epoch}.keras")
    assert trainer.checkpoint_callback.best_model_score == pytest.approx(min(val_losses))
    assert (save_dir / "checkpoints" / "last.keras").is_file()
    assert trainer.callback_metrics["finetuning/val_loss"] == pytest.approx(val_losses[-1])
    assert trainer.history.history["finetuning/val_loss"] == pytest.approx(val_losses)

    loaded = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(best)
    predict_catalog = rings.iloc[:10]
    pred_dataset = GalaxyDataModule(label_cols=None, predict_catalog=predict_catalog, batch_size=4,
                                    resize_after_crop=32, num_workers=1).predict_dataloader()
    predictions = loaded.predict(pred_dataset, verbose=0)  # (images, id_str) batches: ids ignored
    assert predictions.shape == (10, 2)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)  # softmax probabilities
    # the file holds the best epoch's weights: the same as loading them into the trained model
    model.load_weights(best)
    np.testing.assert_allclose(model.predict(pred_dataset, verbose=0), predictions, rtol=1e-5, atol=1e-6)


def test_frozen_encoder_with_feature_cache_leaves_encoder_untouched(seed_run):
    _, model, _, _ = seed_run
    # n_blocks=0: the encoder is frozen, so validation features were computed once and reused ...
    assert model.encoder_is_frozen and model.feature_cache is not None
    history = model.feature_cache.history
    assert history[1]["val"]["misses"] == 0 and history[1]["val"]["hits"] == history[0]["val"]["misses"] > 0
    # ... while the default training transform is random: training images were never looked up
    assert [h["train"] for h in history] == [{"hits": 0, "misses": 0, "stored": 0}] * 2
    assert not model.feature_cache.enabled("train")
    # ... and the encoder is exactly the freshly initialised tiny_cnn (same seed), BN statistics included
    fresh = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=0)
    for trained, initial in zip(model.encoder.weights, fresh.encoder.weights):
        np.testing.assert_array_equal(trained.numpy(), initial.numpy(), err_msg=trained.path)
    assert not np.array_equal(model.head.dense.kernel.numpy(), fresh.head.dense.kernel.numpy())


# ------------------------------------------------------------------------------------------------
# which weights train, and how fast
# ------------------------------------------------------------------------------------------------

def test_blocks_train_at_documented_learning_rates_and_frozen_blocks_stay_fixed(tmp_path):
    x, y = arrays()
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=2, lr_decay=0.5,
                                                  learning_rate=1e-2, weight_decay=0.0, dropout_prob=0.0)
    assert [b.name for b in model.blocks] == ["block4", "block3", "block2", "block1"]
    assert [(g["name"], g["lr"]) for g in model.param_groups()] == [
        ("head", 1e-2), ("encoder.block4", 1e-2), ("encoder.block3", 5e-3)]
    before = values(model.weights)
    snapshot = Snapshot()
    trainer = quiet_trainer(tmp_path, limit_train_batches=1, callbacks=[snapshot])
    trainer.fit(model, datasets(x, y))
    after = snapshot.epochs[0]
    # one Adam step moves every weight with a non-zero gradient by its learning rate (m / sqrt(v) = sign(g))
    expected = {"head_dense": 1e-2, "block4_conv": 1e-2, "block4_bn/gamma": 1e-2, "block4_bn/beta": 1e-2,
                "block3_conv": 5e-3, "block3_bn/gamma": 5e-3, "block3_bn/beta": 5e-3}
    for path, value in after.items():
        step = np.abs(value - before[path])
        frozen = path.startswith(("block1", "block2"))
        if frozen:  # frozen blocks: weights and BatchNorm statistics exactly unchanged
            np.testing.assert_array_equal(step, 0, err_msg=path)
            continue
        rate = next((lr for key, lr in expected.items() if key in path), None)
        if rate is None:  # moving statistics of the trained blocks' BatchNorm layers update
            assert "moving" in path and step.max() > 0, path
            continue
        assert np.median(step[step > 0]) == pytest.approx(rate, rel=1e-3), path


def test_always_train_batchnorm_and_cosine_schedule(tmp_path):
    x, y = arrays()
    model = finetune.FinetuneableZoobotClassifier(
        name="tiny_cnn", num_classes=2, n_blocks=2, lr_decay=0.5, learning_rate=1e-2, weight_decay=0.0,
        dropout_prob=0.0, always_train_batchnorm=True, cosine_schedule=True, warmup_epochs=2, max_cosine_epochs=4,
        max_learning_rate_reduction_factor=0.1)
    assert not model.encoder_is_frozen and model.feature_cache is None
    assert model.param_groups()[-1]["name"] == "frozen_batchnorm" and model.param_groups()[-1]["lr"] == 5e-3
    before = values(model.weights)
    snapshot = Snapshot()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[snapshot])
    trainer.fit(model, datasets(x, y))
    multipliers = [hand_multiplier(e, 2, 4, 0.1) for e in (0, 1)]
    assert multipliers == [0.5, 1.0]
    # the logged LR is learning_rate x multiplier (never squared) ...
    lrs = [float(r["lr"]) for r in read_metrics(tmp_path / "logs" / "metrics.csv")]
    assert lrs == pytest.approx([1e-2 * m for m in multipliers])
    # ... and it scales every group: the first step of a frozen block's BatchNorm is the lowest LR x 0.5
    after = snapshot.epochs[0]
    for path in ("block1_bn/gamma", "block2_bn/beta"):
        full = next(p for p in after if p.endswith(path))
        step = np.abs(after[full] - before[full])
        assert np.median(step[step > 0]) == pytest.approx(5e-3 * 0.5, rel=1e-3)
    for path in ("block1_bn/moving_mean", "block2_bn/moving_variance"):  # statistics update
        full = next(p for p in after if p.endswith(path))
        assert np.abs(after[full] - before[full]).max() > 0
    np.testing.assert_array_equal(after[next(p for p in after if p.endswith("block1_conv/kernel"))],
                                  before[next(p for p in before if p.endswith("block1_conv/kernel"))])


def test_layerwise_adamw_is_torch_adamw_with_parameter_groups():
    """Hand-computed first step: w1 = w0 (1 - lr s wd) - lr s sign(g) (Adam's first step is lr s sign(g))."""
    w0 = np.array([1.0, -2.0, 0.5], dtype="float32")
    g = np.array([0.3, -4.0, 1e-3], dtype="float32")
    a, b = keras.Variable(w0), keras.Variable(w0)
    opt = finetune.LayerwiseAdamW(learning_rate=0.1, weight_decay=0.2, lr_factors={id(b): 0.25})
    opt.apply([g, g], [a, b])
    for var, s in ((a, 1.0), (b, 0.25)):
        expected = w0 * (1 - 0.1 * s * 0.2) - 0.1 * s * np.sign(g)
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)
    # scaling gradients would not do this: Adam's step ignores the gradient's scale
    c = keras.Variable(w0)
    plain = keras.optimizers.Adam(learning_rate=0.1, epsilon=1e-8)
    plain.apply([0.25 * g], [c])
    assert not np.allclose(c.numpy(), b.numpy())


def test_feature_cache_gives_the_uncached_loss_curves(tmp_path):
    x, y = arrays()
    histories, caches = {}, {}
    for cache_features in (None, False):
        model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, learning_rate=1e-2,
                                                      cache_features=cache_features)
        trainer = quiet_trainer(tmp_path / str(cache_features), max_epochs=2)
        trainer.fit(model, datasets(x, y))  # deterministic images, reshuffled each epoch
        histories[cache_features] = trainer.history.history
        caches[cache_features] = model.feature_cache
    assert caches[False] is None
    stats = caches[None].history
    assert [s["train"]["misses"] for s in stats] == [48, 0]  # the encoder ran on each image once
    assert [s["train"]["hits"] for s in stats] == [0, 48]
    assert [s["val"]["hits"] for s in stats] == [0, 32]
    for key in ("finetuning/train_loss", "finetuning/val_loss", "finetuning/train_acc", "finetuning/val_acc"):
        np.testing.assert_allclose(histories[None][key], histories[False][key], rtol=1e-5, err_msg=key)
    assert histories[None]["finetuning/train_loss"][0] != histories[None]["finetuning/train_loss"][-1]


def test_feature_cache_switches_off_with_random_augmentations(tmp_path):
    x, y = arrays()

    def augment(element, seed):  # new noise every epoch, as a random augmentation
        (image, label), seed = element, seed[:2]
        return tf.clip_by_value(image + tf.random.stateless_uniform(tf.shape(image), seed, 0, 1e-3), 0, 1), label

    seeds = tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True).batch(2)
    train = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((x, y)), seeds)).map(augment).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(16)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, cache_features=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="cache_features: only 0% of the training images in epoch 1"):
        trainer.fit(model, (train, val))
    stats = model.feature_cache.history
    assert [s["train"]["hits"] for s in stats] == [0, 0] and [s["train"]["misses"] for s in stats] == [48, 48]
    assert not model.feature_cache.enabled("train") and model.feature_cache.enabled("val")
    with pytest.raises(ValueError, match="cache_features=True needs a frozen encoder"):
        finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=1, cache_features=True)


def test_feature_cache_memory_cap_and_exact_features():
    from zoobot.tensorflow.training.feature_cache import FeatureCache

    encoder = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten()])
    cache = FeatureCache(4, max_bytes=2 * 4 * 4)  # room for two images
    x = np.random.default_rng(0).random((3, 2, 2, 1)).astype("float32")
    np.testing.assert_array_equal(cache.encode(encoder, x, "train"), x.reshape(3, 4))  # not active: plain
    assert cache.stats("train") == {"hits": 0, "misses": 0, "stored": 0}
    cache.start()
    cache.encode(encoder, x[:2], "train")
    out = cache.encode(encoder, x, "train")  # two cached, one computed but no room to store it
    np.testing.assert_array_equal(out, x.reshape(3, 4))
    assert cache.stats("train") == {"hits": 2, "misses": 3, "stored": 2} and cache.nbytes == 32
    cache.stop()
    assert cache.stats("train")["stored"] == 0


# ------------------------------------------------------------------------------------------------
# the tasks
# ------------------------------------------------------------------------------------------------

def test_regressor_output_is_b_for_every_batch_size_and_predict_is_n_by_1():
    model = finetune.FinetuneableZoobotRegressor(name="tiny_cnn", unit_interval=True)
    for batch in (1, 3):
        out = model(np.random.rand(batch, 32, 32, 3).astype("float32"))
        assert tuple(out.shape) == (batch,)
        assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))
    assert model.predict(np.random.rand(1, 32, 32, 3).astype("float32"), verbose=0).shape == (1, 1)
    with pytest.raises(ValueError, match=r"unit_interval=True needs labels in \[0, 1\].*1\.5"):
        model.check_labels(np.array([0.2, 1.5]), where="train_catalog")
    with pytest.raises(ValueError, match="regression loss.*'mse'"):
        finetune.FinetuneableZoobotRegressor(name="tiny_cnn", loss="huber")


def test_classification_labels_e14_before_and_during_training(rings, tmp_path):
    bad = rings.copy()
    bad.loc[::3, "ring"] = 2
    bad.loc[1::3, "ring"] = 5
    datamodule = GalaxyDataModule(label_cols=["ring"], catalog=bad, batch_size=16, resize_after_crop=32,
                                  num_workers=1)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    with pytest.raises(ValueError, match=r"train_catalog: class labels must be integers in \[0, 2\).*row\(s\) have "
                                         r".*id_str"):
        quiet_trainer(tmp_path).fit(model, datamodule)
    # datasets: the first batch is checked eagerly, later batches inside the graph
    x, y = arrays(n=32)
    y[20] = 0.5
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\).*Got 0\.5 in a training batch"):
        quiet_trainer(tmp_path).fit(model, (train, train))


def test_label_smoothing_and_class_weights_follow_torch_cross_entropy():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 1.0, 0.0]], dtype="float32")
    y = np.array([0, 2, 1])
    w = np.array([1.0, 3.0, 0.5], dtype="float32")
    eps = 0.2
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -log_p[np.arange(3), y]
    smooth = -(log_p * w).sum(axis=1)
    expected = ((1 - eps) * (w[y] * nll).sum() + eps / 3 * smooth.sum()) / w[y].sum()
    got = finetune.cross_entropy_loss(logits, y, label_smoothing=eps, weight=w)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(finetune.cross_entropy_loss(logits, y)) == pytest.approx(nll.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights must be 2 positive"):
        finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, class_weights=[1.0, -1.0])


def test_tree_head_and_loss_match_the_oracle():
    from zoobot.shared.losses_reference import dirichlet_multinomial_nll

    schema = schemas.gz2_ortho_schema
    model = finetune.FinetuneableZoobotTree(schema=schema, name="tiny_cnn")
    assert [type(layer).__name__ for layer in model.head.layers] == ["Dropout", "Dense", "ScaledSigmoid"]
    concentrations = model.predict(np.random.rand(4, 32, 32, 3).astype("float32"), verbose=0)
    assert concentrations.shape == (4, schema.n_answers)
    assert concentrations.min() > 1 and concentrations.max() < 101
    counts = np.random.default_rng(0).integers(0, 6, (4, schema.n_answers)).astype("float32")
    expected = dirichlet_multinomial_nll(counts, concentrations, schema.question_index_groups).sum(axis=1).mean()
    got = model.compute_loss_value(tf.constant(concentrations), model._prepare_labels(tf.constant(counts)))
    assert float(got) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match=f"expected width {schema.n_answers}, got width 1"):
        model.check_label_cols(["ring"])


# ------------------------------------------------------------------------------------------------
# encoders, blocks, checks
# ------------------------------------------------------------------------------------------------

def test_exactly_one_encoder_source_and_checkpoint_encoder(tmp_path):
    with pytest.raises(ValueError, match="exactly one encoder source.*got none"):
        finetune.FinetuneableZoobotClassifier(num_classes=2)
    with pytest.raises(ValueError, match="got name, encoder"):
        finetune.FinetuneableZoobotClassifier(num_classes=2, name="tiny_cnn",
                                              encoder=define_model.get_tensorflow_encoder("tiny_cnn"))
    with pytest.raises(TypeError, match="abstract"):
        finetune.FinetuneableZoobotAbstract(name="tiny_cnn")
    tree = define_model.ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn", channels=1)
    tree.encoder.weights[0].assign(np.full(tree.encoder.weights[0].shape, 0.01, "float32"))
    tree.save(tmp_path / "tree.keras")
    model = finetune.FinetuneableZoobotClassifier(checkpoint_loc=str(tmp_path / "tree.keras"), num_classes=3)
    assert (model.channels, model.architecture, model.hparams["encoder_source"]) == (1, "tiny_cnn",
                                                                                       "zoobot_checkpoint_loc")
    np.testing.assert_array_equal(model.encoder.weights[0].numpy(), np.float32(0.01))
    with pytest.raises(ChannelMismatchError, match="expected C=1"):
        model(np.zeros((1, 32, 32, 3), "float32"))


@pytest.mark.slow
def test_block_tables_of_keras_applications_cover_every_weight():
    expected = {
        "efficientnet_b0": ["top", "block7", "block6", "block5", "block4", "block3", "block2", "block1", "stem"],
        "resnet50": ["conv5", "conv4", "conv3", "conv2", "conv1"],
        "convnext_tiny": ["stage_3", "stage_2", "stage_1", "stage_0", "stem"],
    }
    for name, names in expected.items():
        encoder = define_model.get_tensorflow_encoder(name, channels=3, input_shape=(32, 32))
        blocks = finetune.get_encoder_blocks(encoder)
        assert [b.name for b in blocks] == names, name
        owned = [id(v) for b in blocks for v in b.variables()]
        assert sorted(owned) == sorted(id(v) for v in encoder.weights), name  # each weight in exactly one block
    # ConvNeXt: the downsampling layer opens its stage; the final LayerNormalization trains with the top stage
    blocks = finetune.get_encoder_blocks(encoder)
    assert blocks[1].layers[0].name.endswith("downsampling_block_1")
    assert type(blocks[0].layers[-1]).__name__ == "LayerNormalization"


def test_blocks_inside_a_wrapper_model_and_errors_for_custom_encoders():
    inputs = keras.Input((None, None, 3))
    inner = define_model.get_tensorflow_encoder("tiny_cnn", channels=3)
    wrapper = keras.Model(inputs, inner(keras.layers.Rescaling(1.0, name="from_unit_interval")(inputs)))
    assert [b.name for b in finetune.get_encoder_blocks(wrapper)] == ["block4", "block3", "block2", "block1"]
    custom = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                               keras.layers.GlobalAveragePooling2D()], name="mine")
    with pytest.raises(ValueError, match="n_blocks=1.*has no block table.*tiny_cnn"):
        finetune.FinetuneableZoobotClassifier(encoder=custom, num_classes=2, n_blocks=1)
    model = finetune.FinetuneableZoobotClassifier(encoder=custom, num_classes=2, n_blocks=-1)
    assert len(model.trainable_variables) == 4 and model.encoder_dim == 4
    with pytest.raises(ValueError, match=r"n_blocks=5 but this tiny_cnn encoder has only 4 blocks"):
        finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=5)
    with pytest.warns(DeprecationWarning, match="n_layers is deprecated"):
        model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_layers=2)
    assert model.n_blocks == 2
    assert finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, training_mode="full").n_blocks == 4


def test_frozen_dropout_is_off_in_training():
    """A frozen block's dropout layer ignores training=True (as PyTorch's eval()); a trained block's does not."""
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.Dropout(0.9, name=f"block{i}_drop")(x)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="avg_pool")(x))
    model = finetune.FinetuneableZoobotClassifier(encoder=encoder, num_classes=2, n_blocks=1)
    assert [b.name for b in model.trained_blocks] == ["block2"]
    image = np.random.rand(2, 8, 8, 3).astype("float32")
    frozen = encoder.get_layer("block1_drop")
    np.testing.assert_array_equal(frozen(image, training=True), image)
    assert not np.array_equal(encoder.get_layer("block2_drop")(image, training=True), image)
    # the same encoder in a model that trains everything: its dropout is back
    finetune.FinetuneableZoobotClassifier(encoder=encoder, num_classes=2, from_scratch=True)
    assert not np.array_equal(frozen(image, training=True), image)


def test_predict_checks_channels_and_pixel_range():
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    with pytest.raises(ChannelMismatchError, match="NCHW"):
        model.predict(np.zeros((2, 3, 32, 32), "float32"), verbose=0)
    with pytest.raises(PixelScaleError, match=r"expect floats in \[0, 1\]"):
        model.predict(np.full((2, 32, 32, 3), 255.0, "float32"), verbose=0)


# ------------------------------------------------------------------------------------------------
# .keras files
# ------------------------------------------------------------------------------------------------

def perturb(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign((v.numpy() + rng.normal(0, 0.1, v.shape)).astype(v.dtype))


@pytest.mark.parametrize("cls,kwargs", [
    (finetune.FinetuneableZoobotClassifier, {"num_classes": 3, "label_smoothing": 0.1, "class_weights": [1, 2, 3]}),
    (finetune.FinetuneableZoobotRegressor, {"loss": "l1", "unit_interval": True}),
    (finetune.FinetuneableZoobotTree, {"schema": schemas.gz_rings_schema}),
])
def test_keras_round_trip_gives_equal_predictions(cls, kwargs, tmp_path):
    model = cls(name="tiny_cnn", n_blocks=1, learning_rate=3e-4, **kwargs)
    perturb(model)
    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = cls.load_from_checkpoint(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert loaded.hparams == model.hparams and loaded.n_blocks == 1 and loaded.learning_rate == 3e-4
    # overrides rebuild the model with other settings and the same (perturbed, not initial) weights
    changed = cls.load_from_checkpoint(path, learning_rate=0.5, n_blocks=2)
    assert (changed.learning_rate, changed.n_blocks) == (0.5, 2)
    for a, b in zip(changed.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(cls(name="tiny_cnn", **kwargs).weights[0].numpy(), model.weights[0].numpy())
    assert json.loads(zipfile.ZipFile(path).read("config.json"))["config"]["format_version"] == zoobot.FORMAT_VERSION


def test_custom_encoder_round_trip_and_load_errors(tmp_path):
    custom = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(4, 3),
                               keras.layers.GlobalAveragePooling2D()], name="mine")
    model = finetune.FinetuneableZoobotRegressor(encoder=custom)
    perturb(model)
    x = np.random.rand(2, 16, 16, 1).astype("float32")
    model.save(tmp_path / "custom.keras")
    loaded = finetune.FinetuneableZoobotRegressor.load_from_checkpoint(tmp_path / "custom.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(TypeError, match="holds a FinetuneableZoobotRegressor.*FinetuneableZoobotRegressor"
                                        ".load_from_checkpoint"):
        finetune.FinetuneableZoobotClassifier.load_from_checkpoint(tmp_path / "custom.keras")
    # E11: a file from a newer zoobot format
    newer = tmp_path / "newer.keras"
    with zipfile.ZipFile(tmp_path / "custom.keras") as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["format_version"] = zoobot.FORMAT_VERSION + 1
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(CheckpointVersionError, match=f"newer.keras.*format_version {zoobot.FORMAT_VERSION + 1}"):
        finetune.FinetuneableZoobotRegressor.load_from_checkpoint(newer)
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        finetune.FinetuneableZoobotRegressor.load_from_checkpoint(tmp_path / "missing.keras")


# ------------------------------------------------------------------------------------------------
# the PyTorch twin
# ------------------------------------------------------------------------------------------------

def _comparable(signature):
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_signatures_identical_to_pytorch():
    torch_finetune = pytest.importorskip("zoobot.pytorch.training.finetune")
    names = ["FinetuneableZoobotAbstract", "FinetuneableZoobotClassifier", "FinetuneableZoobotRegressor",
             "FinetuneableZoobotTree", "LinearHead"]
    for name in names:
        ours, theirs = getattr(finetune, name), getattr(torch_finetune, name)
        assert _comparable(inspect.signature(ours.__init__)) == _comparable(inspect.signature(theirs.__init__)), name
        if name.startswith("FinetuneableZoobot") and name != "FinetuneableZoobotAbstract":
            assert _comparable(inspect.signature(ours.load_from_checkpoint)) == _comparable(
                inspect.signature(theirs.load_from_checkpoint)), name
    for name in ["get_trainer", "load_pretrained_zoobot", "freeze_batchnorm_layers", "get_encoder_blocks",
                 "cross_entropy_loss", "mse_loss", "l1_loss", "dirichlet_loss"]:
        ours, theirs = getattr(finetune, name), getattr(torch_finetune, name)
        assert _comparable(inspect.signature(ours)) == _comparable(inspect.signature(theirs)), name
    assert finetune.LinearClassifier is finetune.LinearHead
    assert finetune.load_pretrained_encoder is finetune.load_pretrained_zoobot
    assert finetune.MONITOR == torch_finetune.MONITOR


def test_finetune_dirichlet_loss_and_its_deprecated_name():
    """Issue 14.3: three public functions were called dirichlet_loss; the finetuning one is now
    finetune_dirichlet_loss, and the old name warns with the new one and gives the same value."""
    from zoobot.tensorflow.training import losses

    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.5, 5, (4, 3)).astype("float32")
    counts = rng.integers(0, 6, (4, 3)).astype("float32")
    groups = [(0, 1), (2, 2)]
    expected = np.asarray(losses.calculate_multiquestion_loss(counts, alpha, groups)).sum(axis=1).mean()
    value = float(finetune.finetune_dirichlet_loss(alpha, counts, groups))
    assert value == pytest.approx(expected, rel=1e-6)
    with pytest.warns(DeprecationWarning, match="use finetune_dirichlet_loss"):
        assert float(finetune.dirichlet_loss(alpha, counts, groups)) == value


# ------------------------------------------------------------------------------------------------
# pretraining helps (slow)
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_encoder_pretrained_on_votes_beats_random_init_on_rings(tmp_path):
    """A tiny_cnn ZoobotTree trained on synthetic votes gives a frozen encoder whose ring classifier beats
    the same classifier on a randomly initialised encoder (fixed seeds and epochs; about 90 s of CPU)."""
    from zoobot.shared.synthetic import make_synthetic_catalog
    from zoobot.tensorflow.training import train_with_keras

    votes, _ = make_synthetic_catalog(tmp_path / "votes", n_galaxies=400, image_size=48, progress=False, seed=5)
    train_with_keras.train(tmp_path / "pretrain", schemas.decals_dr5_ortho_schema, catalog=votes,
                           model_architecture="tiny_cnn", batch_size=32, epochs=8, patience=8, resize_size=32,
                           color=True, gpus=0, num_workers=1, random_state=0)
    pretrained = tmp_path / "pretrain" / "checkpoints" / "last.keras"
    rings_catalog, _ = make_synthetic_catalog(tmp_path / "rings", n_galaxies=400, image_size=48, label="ring",
                                              seed=6, progress=False, ring_fraction=0.5)
    results = {}
    for source in ("pretrained", "random"):
        encoder_source = {"zoobot_checkpoint_loc": str(pretrained)} if source == "pretrained" else {"name": "tiny_cnn"}
        model = finetune.FinetuneableZoobotClassifier(num_classes=2, learning_rate=3e-3, seed=0, **encoder_source)
        datamodule = GalaxyDataModule(label_cols=["ring"], catalog=rings_catalog, batch_size=32, resize_after_crop=32,
                                      num_workers=1, train_fraction=0.6, val_fraction=0.1, test_fraction=0.3)
        trainer = quiet_trainer(tmp_path / source, max_epochs=15, patience=15)
        trainer.fit(model, datamodule)
        (results[source],) = trainer.test(model, datamodule, ckpt_path="best", verbose=False)
    pretrained, random = results["pretrained"], results["random"]
    # measured: test loss 0.55 vs 0.67, accuracy 0.67 vs 0.58 (120 test galaxies)
    assert pretrained["finetuning/test_loss"] < random["finetuning/test_loss"] - 0.05, results
    assert pretrained["finetuning/test_acc"] > random["finetuning/test_acc"], results



def test_prediction_columns_are_named_after_the_trained_label(seed_run, rings, tmp_path):
    # as in PyTorch (tests/cli/test_cli.py::test_finetune_from_checkpoint_then_predict): the checkpoint
    # remembers the data module's label column, so a ring classifier writes ring_pred_mean
    import pandas as pd

    from zoobot.tensorflow.predictions import predict_on_catalog

    _, _, trainer, _ = seed_run
    loaded = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert loaded.hparams["label_cols"] == ["ring"]
    predict_on_catalog.predict(rings.iloc[:4], loaded, save_loc=str(tmp_path / "p.parquet"),
                               datamodule_kwargs={"resize_after_crop": 32, "num_workers": 1})
    columns = pd.read_parquet(tmp_path / "p.parquet").columns.tolist()
    assert columns == ["id_str", "not_ring_pred_0", "not_ring_pred_mean", "ring_pred_0", "ring_pred_mean"]
