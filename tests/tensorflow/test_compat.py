"""Old TensorFlow names and import paths (zoobot.tensorflow._compat): documented ones work silently, renamed ones
warn DeprecationWarning naming the new name, and every one gives the canonical object (docs/compatibility.md)."""
import importlib
import sys
import warnings

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from zoobot.tensorflow import _compat  # noqa: E402
from zoobot.tensorflow.estimators import custom_layers, define_model, encoders  # noqa: E402
from zoobot.tensorflow.estimators import losses as estimator_losses  # noqa: E402


def fresh_import(name):
    """Run the shim module ``name`` again (as a new session would), with every warning an error."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return importlib.import_module(name)


def test_documented_data_utils_paths_are_the_canonical_modules_without_a_warning():
    import zoobot.tensorflow.data_utils as canonical

    flat = fresh_import("zoobot.data_utils")
    assert flat is canonical
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from zoobot.data_utils import ShardConfig, create_shards, image_datasets, tfrecord_datasets
        import zoobot.data_utils.create_tfrecord as flat_create_tfrecord
        import zoobot.data_utils.tfrecord_datasets as flat_tfrecord_datasets
    assert image_datasets is canonical.image_datasets and create_shards is canonical.create_shards
    assert tfrecord_datasets is flat_tfrecord_datasets is canonical.tfrecord_datasets
    assert flat_create_tfrecord is canonical.create_tfrecord
    assert ShardConfig is canonical.create_shards.ShardConfig


def test_upstream_preprocess_path_is_the_canonical_module_without_a_warning():
    from zoobot.tensorflow import preprocess

    assert fresh_import("zoobot.tensorflow.estimators.preprocess") is preprocess
    from zoobot.tensorflow.estimators import preprocess as from_package

    assert from_package is preprocess


def test_functional_api_is_given_by_define_model_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from zoobot.tensorflow.estimators.define_model import ZoobotModel, get_model, load_model, load_weights
    assert (get_model, load_model, load_weights, ZoobotModel) == (
        _compat.get_model, _compat.load_model, _compat.load_weights, _compat.ZoobotModel)
    assert _compat.GalaxyAugmentation is custom_layers.GalaxyAugmentation
    assert define_model.get_dirichlet_head is custom_layers.get_dirichlet_head
    assert define_model.load_zoobot_model is importlib.import_module(
        "zoobot.tensorflow.estimators.model_io").load_zoobot_model


def test_saved_functional_model_loads_in_a_fresh_process(tmp_path):
    """ZoobotModel now lives in _compat: importing define_model still registers it for .keras loading."""
    import subprocess

    path = tmp_path / "functional.keras"
    model = _compat.get_model(3, 32, architecture_name="tiny_cnn", test_time_dropout=False)
    model.save(path)
    script = ("import zoobot.tensorflow\n"
              "from zoobot.tensorflow.estimators import define_model\n"
              f"print(type(define_model.load_zoobot_model({str(path)!r})).__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ZoobotModel"


def test_compat_sits_above_the_layers_it_uses_and_below_define_model():
    """No import cycle: _compat imports encoders, custom_layers, losses and model_io, never define_model."""
    import ast
    import pathlib

    tree = ast.parse(pathlib.Path(_compat.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for a in node.names}
    assert not any("define_model" in name or "training" in name for name in imported), sorted(imported)


@pytest.mark.parametrize("old, new, args", [
    ("get_tensorflow_encoder", encoders.get_encoder, ("tiny_cnn",)),
    ("dirichlet_loss", estimator_losses.per_question_dirichlet_loss,
     (np.full((2, 3), 2.0, "float32"), np.ones((2, 3), "float32"), [(0, 2)])),
])
def test_renamed_define_model_functions_warn_with_the_new_name(old, new, args):
    alias = getattr(define_model, old)
    assert alias.__wrapped__ is new
    with pytest.warns(DeprecationWarning, match=rf"define_model\.{old} is deprecated: use .*\.{new.__name__} "):
        alias(*args)


def test_renamed_loss_warns_with_the_new_name():
    from zoobot.tensorflow.training import losses

    assert losses.dirichlet_loss.__wrapped__ is losses.single_question_dirichlet_loss
    with pytest.warns(DeprecationWarning, match=r"training\.losses\.dirichlet_loss is deprecated: use "
                                                r"zoobot\.tensorflow\.training\.losses\.single_question_dirichlet_loss"):
        losses.dirichlet_loss([[1.0, 0.0]], [[1.0, 1.0]])
