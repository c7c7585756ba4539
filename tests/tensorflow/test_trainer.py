"""The TensorFlow finetuning Trainer (api.md 3.7): checkpoints, early stopping, logs, validate/test/predict,
errors from inside graphs, devices, and the U1 run_finetuning wrapper."""
import csv
import math

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.tensorflow.estimators.define_model import ZoobotTree  # noqa: E402
from zoobot.tensorflow.training import finetune, trainer as trainer_module  # noqa: E402


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def regression_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 32, 32, 3)).astype("float32")
    return x, x.mean(axis=(1, 2, 3)).astype("float32")


class RecordingLogger(trainer_module.CSVLogger):
    """The CSV logger, plus ``log_image`` (as wandb's) recording what it was given."""

    def __init__(self, save_dir):
        super().__init__(save_dir)
        self.images = []

    def log_image(self, key, images):
        self.images.append((key, images))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("regression")
    x, y = regression_data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=0).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(8)
    model = finetune.FinetuneableZoobotRegressor(name="tiny_cnn", loss="mae", learning_rate=1e-2, n_blocks=1,
                                                 visualize_images=True)
    logger = RecordingLogger(save_dir)
    trainer = finetune.get_trainer(save_dir, file_template="{epoch}-{finetuning/val_loss:.3f}", save_top_k=-1,
                                   max_epochs=3, accelerator="cpu", logger=logger, enable_progress_bar=False)
    trainer.fit(model, train, val)
    return save_dir, model, trainer, (x, y), val


def test_every_epoch_checkpointed_with_lightning_names_and_logged(fitted):
    save_dir, _, trainer, _, _ = fitted
    rows = read_metrics(save_dir / "logs" / "metrics.csv")
    val_losses = [float(r["finetuning/val_loss"]) for r in rows]
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and [int(r["step"]) for r in rows] == [3, 6, 9]
    assert {"finetuning/train_rmse", "finetuning/val_rmse", "lr"} <= set(rows[0])
    files = sorted(p.name for p in (save_dir / "checkpoints").glob("*.keras"))
    expected = sorted([f"epoch={e}-finetuning_val_loss={v:.3f}.keras" for e, v in enumerate(val_losses)]
                      + ["last.keras"])
    assert files == expected
    callback = trainer.checkpoint_callback
    best_epoch = int(np.argmin(val_losses))
    assert callback.best_model_path == str(save_dir / "checkpoints" / expected[best_epoch])
    assert callback.last_model_path == str(save_dir / "checkpoints" / "last.keras")
    # visualize_images: the first training images went once to a logger that can show them
    assert len(trainer.logger.images) == 1 and trainer.logger.images[0][0] == "finetuning/train_images"
    assert len(trainer.logger.images[0][1]) == 8 and trainer.logger.images[0][1][0].shape == (32, 32, 3)


def test_validate_best_checkpoint_reproduces_the_logged_val_loss(fitted):
    save_dir, model, trainer, _, val = fitted
    logged = min(float(r["finetuning/val_loss"]) for r in read_metrics(save_dir / "logs" / "metrics.csv"))
    (result,) = trainer.validate(model, val, ckpt_path="best", verbose=False)
    assert result["finetuning/val_loss"] == pytest.approx(logged, rel=1e-5)
    assert trainer.callback_metrics["finetuning/val_loss"] == pytest.approx(logged, rel=1e-5)


def test_test_and_predict_cover_every_galaxy(fitted):
    _, model, trainer, (x, y), _ = fitted
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)  # uneven last batch
    (result,) = trainer.test(model, dataset, verbose=False)
    predictions = model.predict(x, verbose=0)[:, 0]
    # epoch means over galaxies, not over batches
    assert result["finetuning/test_loss"] == pytest.approx(np.abs(predictions - y).mean(), rel=1e-4)
    assert result["finetuning/test_rmse"] == pytest.approx(np.sqrt(((predictions - y) ** 2).mean()), rel=1e-4)
    batches = trainer.predict(model, tf.data.Dataset.from_tensor_slices(x).batch(7))
    assert [b.shape for b in batches] == [(7, 1)] * 6 + [(6, 1)]
    np.testing.assert_allclose(np.concatenate(batches)[:, 0], predictions, rtol=1e-5, atol=1e-6)


def test_model_checkpoint_keeps_the_top_k(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = trainer_module.ModelCheckpoint(tmp_path, save_top_k=2, monitor="val")
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, score in enumerate([0.5, 0.3, 0.4, 0.6, 0.1, math.nan]):
        callback.on_epoch_end(epoch, {"val": score})
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == ["epoch=1.keras", "epoch=4.keras", "last.keras"]
    assert callback.best_model_path == str(tmp_path / "epoch=4.keras") and callback.best_model_score == 0.1
    with pytest.raises(RuntimeError, match=r"monitor='val'\) could not find the metric"):
        callback.on_epoch_end(6, {"loss": 1.0})


def test_last_checkpoint_holds_each_epochs_weights_copied_or_saved(tmp_path):
    """last.keras is copied from the best file when one was saved in the same epoch, saved otherwise:
    either way it must hold that epoch's weights (and not, say, the previous best's)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = trainer_module.ModelCheckpoint(tmp_path, save_top_k=1, monitor="val")
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, score in enumerate([0.5, 0.7, 0.2]):     # saved best, not best, best again
        kernel = np.full((2, 1), float(epoch + 1), "float32")
        model.layers[0].kernel.assign(kernel)
        callback.on_epoch_end(epoch, {"val": score})
        last = keras.saving.load_model(tmp_path / "last.keras")
        np.testing.assert_array_equal(np.asarray(last.layers[0].kernel), kernel)
    best = keras.saving.load_model(callback.best_model_path)
    np.testing.assert_array_equal(np.asarray(best.layers[0].kernel), np.full((2, 1), 3.0, "float32"))
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left behind"


def test_frozen_encoder_checkpoints_copy_the_encoder_and_hold_the_current_weights(tmp_path):
    """With a frozen encoder only the first file of a fit is serialised by Keras; the later ones copy it and
    rewrite the head and optimizer weights (16.4: a full EfficientNet-B0 save took 1-1.7 s per epoch). Every file
    must still load to exactly the model's weights and optimizer state of its epoch."""
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=0)
    model(np.zeros((1, 32, 32, 3), "float32"))
    model.compile()
    model.optimizer.build(model.trainable_variables)
    assert model.encoder_is_frozen
    full_saves = []
    keras_save = model.save
    model.save = lambda *args, **kwargs: (full_saves.append(args[0]), keras_save(*args, **kwargs))
    callback = trainer_module.ModelCheckpoint(tmp_path, save_top_k=1, monitor="val")
    callback.frozen_part = "encoder"
    callback.set_model(model)
    callback.on_train_begin()
    rng = np.random.default_rng(0)
    for epoch, score in enumerate([0.5, 0.7, 0.2]):  # best, not best (last saved alone), best again
        for variable in model.head.trainable_variables + model.optimizer.variables:
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
        callback.on_epoch_end(epoch, {"val": score})
        for path in (tmp_path / "last.keras", callback.best_model_path):
            if path == callback.best_model_path and score != 0.2 and epoch:
                continue
            twin = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=0)
            twin(np.zeros((1, 32, 32, 3), "float32"))
            twin.compile()
            twin.optimizer.build(twin.trainable_variables)
            twin.load_weights(path)
            for ours, theirs in zip(model.weights + model.optimizer.variables,
                                    twin.weights + twin.optimizer.variables):
                np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert len(full_saves) == 1, full_saves  # epoch 0's best file; every later file reused its frozen encoder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=2.keras", "last.keras"]


def test_early_stopping_patience_and_check_finite():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stopper = trainer_module.EarlyStopping(monitor="val", patience=2)
    stopper.set_model(model)
    for epoch, score in enumerate([1.0, 0.9, 0.95, 0.92]):
        model.stop_training = False
        stopper.on_epoch_end(epoch, {"val": score})
    assert model.stop_training and stopper.stopped_epoch == 3 and stopper.best_score == 0.9
    stopper.on_train_begin()
    model.stop_training = False
    stopper.on_epoch_end(0, {"val": math.inf})
    assert model.stop_training and "not finite" in stopper.stopping_reason


def test_csv_logger_adds_columns_later_rows_bring(tmp_path):
    log = trainer_module.CSVLogger(tmp_path)
    log.log_metrics({"epoch": 0, "finetuning/train_loss": 0.5}, step=2)
    log.log_metrics({"epoch": 0, "finetuning/test_loss": 0.25}, step=2)
    rows = read_metrics(tmp_path / "logs" / "metrics.csv")
    assert rows == [{"epoch": "0", "step": "2", "finetuning/train_loss": "0.5", "finetuning/test_loss": ""},
                    {"epoch": "0", "step": "2", "finetuning/train_loss": "", "finetuning/test_loss": "0.25"}]


def test_non_finite_loss_names_epoch_and_step(tmp_path):
    x, y = regression_data(n=32)
    y[20] = np.nan  # the second batch of 16
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = finetune.FinetuneableZoobotRegressor(name="tiny_cnn")
    trainer = finetune.get_trainer(tmp_path, accelerator="cpu", max_epochs=2, enable_progress_bar=False)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(FloatingPointError, match="NaN or infinite at epoch 0, step 1"):
        trainer.fit(model, (train, train))
    # the first step updated the head; the failing step did not touch any weight
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert not np.array_equal(model.head.dense.kernel.numpy(), before[-2])


def test_argument_and_data_errors_before_training(tmp_path):
    with pytest.raises(NotImplementedError, match="more than one device"):
        finetune.get_trainer(tmp_path, devices=2)
    with pytest.raises(NotImplementedError, match="more than one device"):
        finetune.get_trainer(tmp_path, devices=[0, 1])
    with pytest.raises(ValueError, match="Unknown accelerator.*'tpu'.*Accepted values: 'auto', 'cpu'"):
        finetune.get_trainer(tmp_path, accelerator="tpu")
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(RuntimeError, match="TensorFlow sees no GPU"):
            finetune.get_trainer(tmp_path, accelerator="gpu")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['precison'\].*gradient_clip_val"):
        finetune.get_trainer(tmp_path, precison=16)
    trainer = finetune.get_trainer(tmp_path, accelerator="cpu")
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    x = np.zeros((4, 32, 32, 3), "float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.zeros(4, "float32"))).batch(2)
    with pytest.raises(ValueError, match="needs training and validation data"):
        trainer.fit(model, train)
    with pytest.raises(FileNotFoundError, match="No checkpoint file at .*last.keras to resume finetuning from"):
        trainer.fit(model, (train, train), ckpt_path="last")
    with pytest.raises(TypeError, match="tf.data.Dataset of \\(images, labels\\)"):
        trainer.fit(model, (x, train))
    tree = ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn")
    with pytest.raises(TypeError, match="finetuning models.*got ZoobotTree"):
        trainer.fit(tree, (train, train))
    grey = tf.data.Dataset.from_tensor_slices((x[..., :1], np.zeros(4, "float32"))).batch(2)
    with pytest.raises(zoobot.shared.errors.ChannelMismatchError, match="expects C=3 channel"):
        trainer.fit(model, (grey, grey))


def test_run_finetuning_wrapper_with_upstream_nested_config(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 32, 32, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > np.median(x.mean(axis=(1, 2, 3)))).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    config = {"finetune": {"label_dim": 2, "n_epochs": 1, "n_layers": 0, "label_mode": "classification",
                           "prog_bar": False, "run_linear_sanity_check": True},
              "trainer": {"accelerator": "cpu"}}
    encoder = finetune.define_model.get_tensorflow_encoder("tiny_cnn", channels=3)
    model = finetune.run_finetuning(config, encoder, data, data, data, tmp_path)
    assert isinstance(model, finetune.FinetuneableZoobotClassifier) and model.encoder is encoder
    assert 0 <= model.linear_sanity_check_accuracy <= 1
    assert (tmp_path / "checkpoints" / "last.keras").is_file()
    with pytest.raises(TypeError, match="unknown config keys \\['n_classes'\\]"):
        finetune.run_finetuning({"n_classes": 2}, encoder, data, data, None, tmp_path)
