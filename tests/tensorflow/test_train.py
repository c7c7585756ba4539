"""Training from scratch with Keras (api.md 3.6, 4.2): files, resume, shards, errors, MirroredStrategy."""
import csv
import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zoobot
import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.errors import CatalogError  # noqa: E402
from zoobot.shared.synthetic import make_synthetic_catalog  # noqa: E402
from zoobot.tensorflow.estimators.define_model import ZoobotTree, load_zoobot_model  # noqa: E402
from zoobot.tensorflow.training import train_with_keras  # noqa: E402
from zoobot.tensorflow.training.callbacks import NonFiniteLossGuard  # noqa: E402

SCHEMA = schemas.decals_dr5_ortho_schema
FAST = dict(model_architecture="tiny_cnn", batch_size=8, resize_size=32, gpus=0, num_workers=1, prefetch_factor=1)


@pytest.fixture(scope="module")
def dr5_catalog(tmp_path_factory):
    catalog, label_cols = make_synthetic_catalog(tmp_path_factory.mktemp("dr5"), n_galaxies=40, image_size=48,
                                                 progress=False)
    assert label_cols == SCHEMA.label_cols
    return catalog


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Crash(keras.callbacks.Callback):
    """Simulates a crash at the end of the first epoch (after the backup was written)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("simulated crash")


def test_train_resumes_writes_files_and_returns_best_weights(dr5_catalog, tmp_path):
    save_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_with_keras.train(save_dir, SCHEMA, catalog=dr5_catalog, epochs=2, extra_callbacks=[Crash()], **FAST)
    assert (save_dir / "backup").is_dir() and (save_dir / "checkpoints" / "last.keras").is_file()
    assert [row["epoch"] for row in read_metrics(save_dir / "logs" / "metrics.csv")] == ["0"]

    # resuming with other arguments is refused, naming them
    with pytest.raises(ValueError, match=r"batch_size: 8 \(saved\) vs 4 \(now\).*overwrite=True"):
        train_with_keras.train(save_dir, SCHEMA, catalog=dr5_catalog, epochs=2, **{**FAST, "batch_size": 4})

    model, trainer = train_with_keras.train(save_dir, SCHEMA, catalog=dr5_catalog, epochs=2, **FAST)
    assert trainer.history.epoch == [1]  # continued from the backup: epoch 0 was not repeated

    # folder layout (api.md 4.2)
    config = json.loads((save_dir / "config.json").read_text())
    assert config["backend"] == "tensorflow" and config["format_version"] == zoobot.FORMAT_VERSION
    assert config["zoobot_version"] == zoobot.__version__ and config["schema"]["name"] == "decals_dr5_ortho"
    assert config["architecture_name"] == "tiny_cnn" and config["resize_after_crop"] == 32
    for split in ("train", "val", "test"):
        assert (save_dir / f"{split}_catalog.parquet").is_file()
    checkpoints = sorted(p.name for p in (save_dir / "checkpoints").glob("*.keras"))
    assert checkpoints == ["epoch=0.keras", "epoch=1.keras", "last.keras"]

    rows = read_metrics(save_dir / "logs" / "metrics.csv")
    fit_rows = [row for row in rows if row.get("train/supervised_loss")]
    assert [row["epoch"] for row in fit_rows] == ["0", "1"]
    for column in ("train/supervised_loss", "validation/supervised_loss", "test/supervised_loss", "lr",
                   "validation/question_loss/bar-dr5", "train/campaign_loss/dr5"):
        assert column in rows[0], column
    train_losses = [float(row["train/supervised_loss"]) for row in fit_rows]
    assert train_losses[1] < train_losses[0]  # it learns
    assert float(rows[-1]["test/supervised_loss"]) == pytest.approx(trainer.test_metrics["test/supervised_loss"])

    # the returned model holds the best checkpoint's weights (lowest validation loss)
    val_losses = [float(row["validation/supervised_loss"]) for row in fit_rows]
    best_epoch = int(np.argmin(val_losses))
    assert trainer.checkpoint_callback.best_model_path.endswith(f"epoch={best_epoch}.keras")
    best = load_zoobot_model(trainer.checkpoint_callback.best_model_path)
    for ours, saved in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(ours, saved)
    assert isinstance(model, ZoobotTree) and model.input_size == 32 and model.channels == 1


def test_train_from_shards(dr5_catalog, tmp_path):
    from zoobot.tensorflow.data_utils.create_shards import ShardConfig

    shards = ShardConfig(tmp_path / "shards", size=48, shard_size=16).prepare_shards(
        dr5_catalog, columns_to_save=list(SCHEMA.label_cols), num_workers=1)
    records = dict(train_records=shards.train_tfrecord_locs(), val_records=shards.val_tfrecord_locs(),
                   test_records=shards.test_tfrecord_locs())
    with pytest.raises(ValueError, match="either catalogs or TFRecord shards"):
        train_with_keras.train(tmp_path / "bad", SCHEMA, catalog=dr5_catalog, **records, **FAST)

    policy = keras.mixed_precision.global_policy().name
    with pytest.warns(UserWarning, match="mixed_precision=True is ignored"):
        model, trainer = train_with_keras.train(tmp_path / "run", SCHEMA, epochs=1, color=True,
                                                requested_img_size=40, mixed_precision=True, **records, **FAST)
    assert keras.mixed_precision.global_policy().name == policy
    assert model.channels == 3 and np.isfinite(trainer.test_metrics["test/supervised_loss"])
    assert trainer.history.history["loss"] and (tmp_path / "run" / "checkpoints" / "last.keras").is_file()
    assert not (tmp_path / "run" / "train_catalog.parquet").exists()  # shards carry their own catalogs


def test_argument_errors_before_any_training(dr5_catalog, tmp_path):
    with pytest.raises(RuntimeError, match="nodes=2 needs a cluster description: set TF_CONFIG"):
        train_with_keras.train(tmp_path, SCHEMA, catalog=dr5_catalog, **{**FAST, "nodes": 2})
    with pytest.raises(CatalogError, match="bar-dr5_weak"):
        train_with_keras.train(tmp_path, SCHEMA, catalog=dr5_catalog.drop(columns=["bar-dr5_weak"]), **FAST)
    with pytest.raises(ValueError, match="Unknown TensorFlow encoder architecture 'convnext_nano'"):
        train_with_keras.train(tmp_path, SCHEMA, catalog=dr5_catalog, **{**FAST, "model_architecture": "convnext_nano"})
    with pytest.raises(TypeError, match="both model_architecture='tiny_cnn' and its other spelling"):
        train_with_keras.train(tmp_path, SCHEMA, catalog=dr5_catalog, architecture_name="resnet50", **FAST)
    with pytest.raises(ValueError, match="Pass either catalog"):
        train_with_keras.train(tmp_path, SCHEMA, catalog=dr5_catalog, train_catalog=dr5_catalog, **FAST)
    with pytest.raises(NotImplementedError, match="WebDataset"):
        train_with_keras.train_default_zoobot_from_scratch(tmp_path, SCHEMA, train_urls=["a.tar"])
    assert not (tmp_path / "config.json").exists()


def test_non_finite_loss_raises_floating_point_error():
    model = ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn")
    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    labels = np.array([[1.0, np.inf]] * 4, dtype=np.float32)  # (NaN votes would count as unanswered)
    with pytest.raises(FloatingPointError, match=r"training loss became nan at epoch 0, step 1"):
        model.fit(images, labels, batch_size=4, epochs=1, verbose=0, callbacks=[NonFiniteLossGuard()])


def test_metric_names_match_pytorch():
    logs = {"loss": 1.0, "val_loss": 2.0, "question_loss/bar-dr5": 3.0, "val_campaign_loss/dr5": 4.0}
    assert train_with_keras.rename_metrics(logs) == {
        "train/supervised_loss": 1.0, "validation/supervised_loss": 2.0, "train/question_loss/bar-dr5": 3.0,
        "validation/campaign_loss/dr5": 4.0}


TF_ONLY = ["train_records", "val_records", "test_records", "requested_img_size", "always_augment", "eager"]


def source_signatures(path, names):
    """Parameters (name, kind, default source) of functions in a source file, read without importing it
    (the PyTorch backend must not be imported next to TensorFlow)."""
    import ast

    tree = ast.parse(open(path).read())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            args = node.args
            positional = args.posonlyargs + args.args
            defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            params = [[a.arg, "POSITIONAL_OR_KEYWORD", d] for a, d in zip(positional, defaults)]
            params += [[a.arg, "KEYWORD_ONLY", d] for a, d in zip(args.kwonlyargs, args.kw_defaults)]
            found[node.name] = [[n, k, "<required>" if d is None else ast.literal_eval(d)] for n, k, d in params]
    return found


def describe(f):
    return [[p.name, str(p.kind), "<required>" if p.default is inspect.Parameter.empty else p.default]
            for p in inspect.signature(f).parameters.values()]


def test_signatures_are_pytorch_plus_tensorflow_keywords():
    path = os.path.join(os.path.dirname(zoobot.__file__), "pytorch", "training", "train_with_pytorch_lightning.py")
    theirs = source_signatures(path, {"train", "train_default_zoobot_from_scratch"})
    for ours in (train_with_keras.train, train_with_keras.train_default_zoobot_from_scratch):
        params = describe(ours)
        expected = theirs[ours.__name__]
        assert params[:len(expected)] == expected
        extras = params[len(expected):]
        assert [p[0] for p in extras] == TF_ONLY and all(p[1] == "KEYWORD_ONLY" for p in extras)


MIRRORED = textwrap.dedent("""
    import os, sys, json
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np, keras
    from zoobot.shared import schemas
    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    schema = schemas.decals_dr5_ortho_schema
    rng = np.random.default_rng(0)
    images = rng.random((8, 32, 32, 1), dtype=np.float32)
    labels = rng.integers(0, 8, (8, schema.n_answers)).astype(np.float32)
    labels[:3, 3:10] = 0  # some unanswered questions

    def build():
        keras.utils.set_random_seed(1)
        model = ZoobotTree(schema.n_answers, schema=schema, architecture_name="tiny_cnn", dropout_rate=0.0)
        for layer in model.encoder.layers:  # frozen BatchNorm: identical maths on 1 or 2 replicas
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(**model.default_compile_kwargs())
        return model

    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    single = build()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(single.get_weights())
    out = {"replicas": strategy.num_replicas_in_sync,
           "eval": [single.evaluate(data, verbose=0, return_dict=True)["loss"],
                    mirrored.evaluate(data, verbose=0, return_dict=True)["loss"]]}
    out["fit"] = [single.fit(data, epochs=1, verbose=0, shuffle=False).history["loss"][0],
                  mirrored.fit(data, epochs=1, verbose=0, shuffle=False).history["loss"][0]]
    out["max_weight_difference"] = max(float(np.abs(a - b).max())
                                       for a, b in zip(single.get_weights(), mirrored.get_weights()))
    out["weights_changed"] = bool(any(not np.allclose(a, b) for a, b in zip(single.get_weights(), build().get_weights())))
    json.dump(out, sys.stdout)
""")


@pytest.mark.slow
def test_mirrored_strategy_two_replicas_match_one(tmp_path):
    """Two logical CPU devices must be configured before TensorFlow starts: a subprocess."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["eval"][1] == pytest.approx(out["eval"][0], rel=1e-5)
    assert out["fit"][1] == pytest.approx(out["fit"][0], rel=1e-5)
    assert out["weights_changed"] and out["max_weight_difference"] < 1e-5


def test_encoder_probe_changes_nothing_and_gpu_sized_settings_warn(monkeypatch, dr5_catalog, tmp_path):
    """The TensorFlow twin of tests/pytorch/test_train.py's: the timed pass changes no weight, a real timing of
    tiny_cnn at 224 px in batches of 256 for 10000 epochs warns, and train() warns once with the estimate."""
    from zoobot.shared import cpu_speed
    from zoobot.tensorflow.estimators.define_model import time_encoder_pass
    from zoobot.tensorflow.estimators.tiny_cnn import get_tiny_cnn

    encoder = get_tiny_cnn(1)
    encoder(np.zeros((1, 64, 64, 1), np.float32))
    before = [w.numpy().copy() for w in encoder.weights]
    assert time_encoder_pass(encoder, 2, 1, 64) > 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, encoder.weights))
    with pytest.warns(UserWarning, match=r"tiny_cnn at 224 px and batch_size=256: about .* per batch"):
        cpu_speed.warn_if_gpu_sized(lambda n: time_encoder_pass(encoder, n, 1, 224), architecture_name="tiny_cnn",
                                    image_size=224, batch_size=256, n_train=10_000, epochs=10_000)

    monkeypatch.setattr(cpu_speed, "PROBE_PIXELS", 0)
    monkeypatch.setattr(cpu_speed, "SLOW_RUN_SECONDS", 0.0)
    with pytest.warns(UserWarning, match=r"Training on the CPU with tiny_cnn at 32 px and batch_size=8: about") as rec:
        train_with_keras.train(tmp_path / "run", SCHEMA, catalog=dr5_catalog.iloc[:24], epochs=1, **FAST)
    assert sum("Training on the CPU" in str(w.message) for w in rec) == 1
