"""Keras encoders, the Dirichlet head, ZoobotTree and the upstream functional API (api.md 3.4)."""
import inspect
import json
import os
import zipfile

import numpy as np
import pytest

import zoobot
import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.errors import ChannelMismatchError, CheckpointVersionError, PixelScaleError  # noqa: E402
from zoobot.tensorflow.estimators import custom_layers, define_model  # noqa: E402

SCHEMA = schemas.decals_dr5_ortho_schema


def tiny_tree(**kwargs):
    kwargs.setdefault("architecture_name", "tiny_cnn")
    return define_model.ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, **kwargs)


def images(n=4, size=32, channels=1, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


# ------------------------------------------------------------------------------------------ encoders

@pytest.mark.parametrize("channels, expected", [(1, 9 * (16 + 16 * 32 + 32 * 64 + 64 * 128) + 2 * 240),
                                                (3, 9 * (48 + 16 * 32 + 32 * 64 + 64 * 128) + 2 * 240)])
def test_tiny_cnn_trainable_parameters_match_hand_count(channels, expected):
    assert expected == {1: 97392, 3: 97680}[channels]
    encoder = define_model.get_encoder("tiny_cnn", channels=channels)
    assert sum(int(np.prod(w.shape)) for w in encoder.trainable_weights) == expected
    assert encoder(images(2, 32, channels)).shape == (2, 128)
    bn = encoder.get_layer("block1_bn")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.9


def source_signatures(path):
    """``{'name' or 'Class.name': [[param, kind, default]]}`` of a source file, read without importing it
    (the PyTorch backend must not be imported next to TensorFlow: torchvision crashes after TensorFlow)."""
    import ast

    found = {}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.FunctionDef):
                args = child.args
                positional = args.posonlyargs + args.args
                defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
                params = [[a.arg, "POSITIONAL_OR_KEYWORD", d] for a, d in zip(positional, defaults)]
                if args.vararg:
                    params.append([args.vararg.arg, "VAR_POSITIONAL", None])
                params += [[a.arg, "KEYWORD_ONLY", d] for a, d in zip(args.kwonlyargs, args.kw_defaults)]
                if args.kwarg:
                    params.append([args.kwarg.arg, "VAR_KEYWORD", None])
                found[prefix + child.name] = [[n, k, "<required>" if d is None else ast.literal_eval(d)]
                                              for n, k, d in params]

    visit(ast.parse(open(path).read()))
    return found


def describe(f):
    return [[p.name, str(p.kind), "<required>" if p.default is inspect.Parameter.empty else p.default]
            for p in inspect.signature(f).parameters.values()]


def test_signatures_match_pytorch():
    theirs = {}
    for module in ("define_model", "encoders", "pretrained_encoders", "losses", "custom_layers"):
        theirs.update(source_signatures(os.path.join(os.path.dirname(zoobot.__file__), "pytorch", "estimators",
                                                     f"{module}.py")))
    pairs = {
        "ZoobotTree.__init__": define_model.ZoobotTree.__init__,
        "get_pytorch_dirichlet_head": define_model.get_tensorflow_dirichlet_head,
        "create_encoder": define_model.create_encoder,
        "get_encoder_dim": define_model.get_encoder_dim,
        "per_question_dirichlet_loss": define_model.per_question_dirichlet_loss,
        "get_dirichlet_loss_func": define_model.get_dirichlet_loss_func,
        "get_encoder": define_model.get_encoder,
    }
    for name, ours in pairs.items():
        assert describe(ours) == theirs[name], name


def test_encoders_module_is_the_one_place_that_builds_encoders():
    from zoobot.tensorflow.estimators import encoders

    assert define_model.get_encoder is encoders.get_encoder
    assert define_model.get_encoder_dim is encoders.get_encoder_dim
    assert define_model.ENCODER_NAMES is encoders.ENCODER_NAMES
    # the backend-named spelling is not in the upstream documentation: it warns, naming the new name
    with pytest.warns(DeprecationWarning, match=r"define_model\.get_tensorflow_encoder is deprecated: use "
                                                r"zoobot\.tensorflow\.estimators\.define_model\.get_encoder"):
        encoder = define_model.get_tensorflow_encoder("tiny_cnn", channels=3)
    assert encoder.output_shape == (None, 128)
    assert inspect.signature(define_model.get_tensorflow_encoder) == inspect.signature(encoders.get_encoder)


def test_old_loss_name_warns_and_gives_the_per_question_loss():
    preds, labels = np.full((2, 3), 2.0, "float32"), np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], "float32")
    with pytest.warns(DeprecationWarning, match=r"define_model\.dirichlet_loss is deprecated: use .*"
                                                r"define_model\.per_question_dirichlet_loss"):
        old = define_model.dirichlet_loss(preds, labels, [(0, 2)])
    np.testing.assert_array_equal(np.asarray(old), np.asarray(define_model.per_question_dirichlet_loss(
        preds, labels, [(0, 2)])))


def test_efficientnet_b0_greyscale_dims_and_first_layer_sees_unit_interval():
    encoder = define_model.get_encoder("efficientnet_b0", channels=1)
    assert encoder.input_shape == (None, None, None, 1)
    assert encoder.output_shape == (None, 1280)
    # the stem convolution must receive the [0, 1] pixels unchanged (only zero-padded):
    # Keras' built-in Rescaling(1/255) is disabled and the Normalization is the identity
    probe = keras.Model(encoder.input, encoder.get_layer("stem_conv").input)
    x = images(2, 64, 1)
    seen = np.asarray(probe(x))
    np.testing.assert_array_equal(seen[:, :64, :64], x)
    assert seen.max() <= 1.0


@pytest.mark.parametrize("name, dim", [
    pytest.param("efficientnetv2_b0", 1280, marks=pytest.mark.slow),
    pytest.param("convnext_tiny", 768, marks=pytest.mark.slow),
    pytest.param("resnet50", 2048, marks=pytest.mark.slow),
])
def test_other_families_built_without_preprocessing_layers(name, dim):
    encoder = define_model.get_encoder(name, channels=1, input_shape=(32, 32))
    assert encoder.output_shape == (None, dim)
    assert not any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) for layer in encoder.layers)
    x = images(2, 32, 1)
    assert np.asarray(encoder(x)).shape == (2, dim)


def test_unknown_architecture_lists_names():
    with pytest.raises(ValueError, match=r"Unknown TensorFlow encoder architecture 'efficentnet_b0'.*Did you mean "
                                         r"'efficientnet_b0'.*'resnet50'.*'convnext_tiny'.*'tiny_cnn'"):
        define_model.get_encoder("efficentnet_b0")
    with pytest.raises(ChannelMismatchError, match="channels must be 1 .* or 3"):
        define_model.get_encoder("tiny_cnn", channels=4)


def test_create_encoder_names(tmp_path):
    with pytest.warns(UserWarning, match="randomly initialised"):
        encoder = define_model.create_encoder("efficientnet_b0", channels=1)
    assert encoder.output_shape == (None, 1280)
    assert define_model.create_encoder("tiny_cnn", channels=1).output_shape == (None, 128)
    # ConvNeXt has no keras-hub converter: refused (before any download), naming the way out
    with pytest.raises(ValueError, match="zoobot.tensorflow cannot load.*The PyTorch backend loads it"):
        define_model.create_encoder("hf_hub:mwalmsley/zoobot-encoder-convnext_nano")
    with pytest.raises(ValueError, match="Unknown encoder name prefix 's3:'"):
        define_model.create_encoder("s3:bucket/model")
    # a local folder with encoder.keras loads offline
    encoder = define_model.get_encoder("tiny_cnn", channels=1)
    encoder.save(tmp_path / "encoder.keras")
    loaded = define_model.create_encoder(f"local-dir:{tmp_path}")
    x = images(2)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(encoder(x)), rtol=1e-6)
    with pytest.raises(ChannelMismatchError, match="takes 1-channel images but channels=3"):
        define_model.create_encoder(f"local-dir:{tmp_path}", channels=3)
    with pytest.raises(FileNotFoundError, match="has no encoder.keras"):
        define_model.create_encoder(f"local-dir:{tmp_path / 'missing'}")


# ------------------------------------------------------------------------------------------ head

def test_dirichlet_head_layers_and_range():
    head = define_model.get_tensorflow_dirichlet_head(128, 34, test_time_dropout=True, dropout_rate=0.2)
    assert [type(layer) for layer in head.layers] == [custom_layers.MCDropout, keras.layers.Dense,
                                                      custom_layers.ScaledSigmoid]
    head = define_model.get_tensorflow_dirichlet_head(128, 34, test_time_dropout=False, dropout_rate=0.2)
    assert type(head.layers[0]) is keras.layers.Dropout
    alpha = np.asarray(head(np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32) * 50))
    assert alpha.shape == (8, 34) and alpha.min() >= 1 and alpha.max() <= 101
    assert np.asarray(custom_layers.ScaledSigmoid()(np.zeros((1, 1), np.float32)))[0, 0] == 51.0
    assert define_model.get_dirichlet_head is define_model.get_tensorflow_dirichlet_head
    assert custom_layers.PermaDropout is custom_layers.MCDropout
    with pytest.raises(ValueError, match=r"dropout_rate must be < 1\.0, got 1\.5"):
        define_model.get_tensorflow_dirichlet_head(128, 34, True, 1.5)


# ------------------------------------------------------------------------------------------ ZoobotTree

def test_zoobot_tree_errors():
    with pytest.raises(ValueError, match="output_dim=30 but schema 'decals_dr5_ortho' has 34 answers"):
        define_model.ZoobotTree(30, schema=SCHEMA, architecture_name="tiny_cnn")
    with pytest.raises(ValueError, match="exactly one description of the decision tree"):
        define_model.ZoobotTree(34, architecture_name="tiny_cnn")
    model = tiny_tree()
    with pytest.raises(ChannelMismatchError, match=r"expects C=1 channel\(s\) but the images have C=3 .*NHWC.*greyscale"):
        model.predict(images(2, 32, 3), verbose=0)
    with pytest.raises(ChannelMismatchError, match=r"looks NCHW.*transpose"):
        model.predict(np.transpose(images(2, 32, 1), (0, 3, 1, 2)), verbose=0)
    with pytest.raises(PixelScaleError, match=r"values in \[.*, 25.*\] .*expect floats in \[0, 1\].*divide"):
        model.predict(images(2) * 255, verbose=0)
    with pytest.warns(UserWarning, match="divided by 255 twice"):
        model.predict(images(2) / 255 / 2, verbose=0)
    # a tf.data.Dataset of (images, id_str) is checked on its first batch, ids ignored
    dataset = tf.data.Dataset.from_tensor_slices((images(4) * 255, [b"a", b"b", b"c", b"d"])).batch(2)
    with pytest.raises(PixelScaleError, match="expect floats in"):
        model.predict(dataset, verbose=0)
    with pytest.raises(ChannelMismatchError, match="expected C=1"):
        model(images(2, 32, 3))


def test_predict_mc_dropout_and_deterministic_evaluate():
    model = tiny_tree(dropout_rate=0.5)
    x = images(6)
    ids = tf.constant([str(i).encode() for i in range(6)])
    dataset = tf.data.Dataset.from_tensor_slices((x, ids)).batch(4)
    first, second = model.predict(dataset, verbose=0), model.predict(dataset, verbose=0)
    assert first.shape == (6, 34) and not np.allclose(first, second)  # MC dropout on in predict
    samples = model.predict(x, verbose=0, n_samples=5)
    assert samples.shape == (6, 34, 5) and np.all(np.std(samples, axis=-1).max(axis=1) > 0)
    labels = np.random.default_rng(0).integers(0, 5, (6, 34)).astype(np.float32)
    # evaluate: dropout off, so repeated evaluations agree and equal the loss of dropout-free outputs
    one = model.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    two = model.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    assert one == two
    features = model.encoder(x, training=False)
    no_dropout = define_model._apply_head(model.head, features, dropout=False)
    expected = float(model.loss(labels, no_dropout))
    assert one == pytest.approx(expected, rel=1e-5)
    # one-pass helper: without dropout every sample equals the deterministic output
    fixed = tiny_tree(test_time_dropout=False)
    samples = fixed.predict(x, verbose=0, n_samples=3)
    np.testing.assert_allclose(samples[..., 0], samples[..., 2])
    np.testing.assert_allclose(samples[..., 0], fixed.predict(x, verbose=0), rtol=1e-5)


def test_fit_lowers_the_loss_logs_question_losses_and_follows_the_schedule():
    model = tiny_tree(learning_rate=0.01, scheduler_params={
        "cosine_schedule": True, "warmup_epochs": 1, "max_cosine_epochs": 5, "max_learning_rate_reduction_factor": 0.1})
    (callback,) = model.scheduler_callbacks()
    lrs = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: lrs.append(float(model.optimizer.learning_rate.numpy())))
    x = images(16, seed=1)
    labels = np.zeros((16, 34), np.float32)
    labels[:, 0] = 20  # every volunteer answers 'smooth': learnable regardless of the image
    history = model.fit(x, labels, batch_size=8, epochs=3, verbose=0, validation_data=(x[:8], labels[:8]),
                        callbacks=[callback, record])
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "val_question_loss/smooth-or-featured-dr5" in history.history
    assert "campaign_loss/dr5" in history.history
    # only the answered question contributes: its per-question loss equals the total
    assert history.history["val_question_loss/smooth-or-featured-dr5"][-1] == pytest.approx(
        history.history["val_loss"][-1], rel=1e-4)
    # LR = learning_rate x the shared cosine multiplier (never learning_rate squared)
    from tests.shared.test_schedules import hand_multiplier

    np.testing.assert_allclose(lrs, [0.01 * hand_multiplier(e, 1, 5, 0.1) for e in range(3)], rtol=1e-6)
    assert history.history["learning_rate"][0] == pytest.approx(lrs[0], rel=1e-6)
    with pytest.raises(ValueError, match="Unknown scheduler name 'step'"):
        tiny_tree(scheduler_params={"name": "step"})


def test_keras_file_round_trip_and_version_check(tmp_path):
    model = tiny_tree(test_time_dropout=False, scheduler_params={"name": "plateau", "patience": 2})
    model.input_size = 32
    model.optimizer.iterations.assign(7)
    for variable in model.optimizer.variables[2:4]:  # optimiser state is saved too
        variable.assign(np.full(variable.shape, 0.5, np.float32))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = define_model.load_zoobot_model(path)
    assert isinstance(loaded, define_model.ZoobotTree)
    assert loaded.schema == SCHEMA and loaded.input_size == 32 and loaded.scheduler_params == {
        "name": "plateau", "patience": 2}
    x = images(5, seed=3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations.numpy()) == 7
    for ours, theirs in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # U1 load_model: whole .keras model, or its encoder
    encoder = define_model.load_model(path, include_top=False, input_size=32)
    np.testing.assert_allclose(np.asarray(encoder(x)), np.asarray(model.encoder(x)), rtol=1e-6)
    # overrides rebuild the model and keep the weights
    mc = define_model.ZoobotTree.load_from_checkpoint(path, test_time_dropout=True)
    assert mc.test_time_dropout and not np.allclose(mc.predict(x, verbose=0), mc.predict(x, verbose=0))

    # the versions are stored in the file and checked on load
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(contents["config.json"])
    assert config["config"]["format_version"] == zoobot.FORMAT_VERSION
    config["config"]["format_version"] = zoobot.FORMAT_VERSION + 1
    future = tmp_path / "future.keras"
    with zipfile.ZipFile(future, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, json.dumps(config) if name == "config.json" else data)
    with pytest.raises(CheckpointVersionError, match=rf"{future.name}.*format_version {zoobot.FORMAT_VERSION + 1}"):
        define_model.load_zoobot_model(future)


# ------------------------------------------------------------------------------------------ get_model (U1)

def test_get_model_augmentation_only_in_training(tmp_path):
    model = define_model.get_model(34, 48, architecture_name="tiny_cnn", crop_size=40, resize_size=32,
                                   test_time_dropout=False)
    assert model.output_shape == (None, 34)
    augmentation = model.get_layer("augmentation")
    x = images(3, 48)
    inference = [np.asarray(augmentation(x, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])  # deterministic centre crop + resize
    expected = tf.image.resize(x[:, 4:44, 4:44], (32, 32), antialias=True).numpy()
    np.testing.assert_allclose(inference[0], expected, rtol=1e-5, atol=1e-6)
    training = [np.asarray(augmentation(x, training=True)) for _ in range(2)]
    assert training[0].shape == (3, 32, 32, 1) and not np.allclose(training[0], training[1])
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(model, define_model.ZoobotModel) and model.channels == 1 and model.input_size == 48
    with pytest.raises(PixelScaleError, match="expect floats in"):
        model.predict(x * 255, verbose=0)

    tta = define_model.get_model(34, 48, architecture_name="tiny_cnn", crop_size=40, resize_size=32,
                                 always_augment=True, test_time_dropout=False)
    assert not np.allclose(tta.predict(x, verbose=0), tta.predict(x, verbose=0))

    encoder = define_model.get_model(34, 48, architecture_name="tiny_cnn", include_top=False)
    assert encoder.output_shape == (None, 128)

    # weights round trip through a weights file, and .keras save/load with the custom layers
    model.save_weights(tmp_path / "model.weights.h5")
    again = define_model.get_model(34, 48, weights_loc=tmp_path / "model.weights.h5", architecture_name="tiny_cnn",
                                   crop_size=40, resize_size=32, test_time_dropout=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    model.save(tmp_path / "functional.keras")
    reloaded = define_model.load_model(tmp_path / "functional.keras", include_top=True, input_size=48)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    headless = define_model.load_model(tmp_path / "functional.keras", include_top=False, input_size=48)
    assert headless.output_shape == (None, 128)
    mc = define_model.get_model(34, 48, architecture_name="tiny_cnn")  # MCDropout in the head
    assert not np.allclose(mc.predict(x, verbose=0), mc.predict(x, verbose=0))

