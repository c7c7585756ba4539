"""Framework-neutral training set-up: names, aliases, catalogs, devices, run records."""
import json

import numpy as np
import pandas as pd
import pytest

import zoobot
from zoobot.shared.errors import CatalogError
from zoobot.shared.training_config import (
    check_resume_config,
    merge_alias_kwargs,
    prepare_catalogs,
    resolve_architecture_name,
    resolve_device_count,
    write_run_config,
    write_split_catalogs,
)

LABELS = ["q_a", "q_b"]


def catalog(n=200, prefix="g"):
    return pd.DataFrame(
        {
            "id_str": [f"{prefix}{i}" for i in range(n)],
            "file_loc": [f"{prefix}{i}.jpg" for i in range(n)],
            "q_a": np.arange(n) % 7,
            "q_b": np.arange(n) % 3,
        }
    )


def test_architecture_names():
    assert resolve_architecture_name("efficientnet") == "efficientnet_b0"
    assert resolve_architecture_name("tiny_cnn") == "tiny_cnn"
    for old in ("resnet_detectron", "resnet_torchvision"):
        with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated.*'resnet50'"):
            assert resolve_architecture_name(old) == "resnet50"
    with pytest.raises(TypeError, match="must be a string"):
        resolve_architecture_name(None)


def test_merge_alias_kwargs():
    args = ("model_architecture", "architecture_name", "efficientnet")
    assert merge_alias_kwargs({"model_architecture": "efficientnet"}, *args) == "efficientnet"
    assert merge_alias_kwargs({"model_architecture": "resnet50"}, *args) == "resnet50"
    assert merge_alias_kwargs({"model_architecture": "efficientnet", "architecture_name": "tiny_cnn"}, *args) == "tiny_cnn"
    assert merge_alias_kwargs({"architecture_name": None}, *args) == "efficientnet"
    assert merge_alias_kwargs({"model_architecture": "tiny_cnn", "architecture_name": "tiny_cnn"}, *args) == "tiny_cnn"
    with pytest.raises(TypeError, match="both model_architecture='resnet50' and its other spelling architecture_name='tiny_cnn'"):
        merge_alias_kwargs({"model_architecture": "resnet50", "architecture_name": "tiny_cnn"}, *args)


def test_prepare_catalogs_splits_one_catalog_70_10_20():
    train, val, test = prepare_catalogs(LABELS, catalog=catalog(1000), random_state=1, check_valid_paths=False)
    assert len(train) + len(val) + len(test) == 1000
    assert abs(len(train) - 700) < 60 and abs(len(val) - 100) < 40 and abs(len(test) - 200) < 50
    again = prepare_catalogs(LABELS, catalog=catalog(1000), random_state=1, check_valid_paths=False)
    pd.testing.assert_frame_equal(train, again[0])


def test_prepare_catalogs_explicit_splits_are_validated_by_name():
    train, val, test = prepare_catalogs(LABELS, train_catalog=catalog(5), val_catalog=catalog(3, "v"), check_valid_paths=False)
    assert test is None and len(train) == 5 and len(val) == 3
    bad_val = catalog(3, "v").drop(columns="q_b")
    with pytest.raises(CatalogError, match="^val_catalog is missing 1 required column"):
        prepare_catalogs(LABELS, train_catalog=catalog(5), val_catalog=bad_val, check_valid_paths=False)


def test_prepare_catalogs_checks_paths_by_default():
    with pytest.raises(FileNotFoundError, match="check_valid_paths=False"):
        prepare_catalogs(LABELS, catalog=catalog(10))


def test_prepare_catalogs_needs_exactly_one_source():
    with pytest.raises(ValueError, match="not both: got catalog and train_catalog"):
        prepare_catalogs(LABELS, catalog=catalog(), train_catalog=catalog(), check_valid_paths=False)
    with pytest.raises(ValueError, match="got train_catalog"):
        prepare_catalogs(LABELS, train_catalog=catalog(), check_valid_paths=False)
    with pytest.raises(ValueError, match="got none of them"):
        prepare_catalogs(LABELS, check_valid_paths=False)


def test_prepare_catalogs_warns_on_overlap():
    with pytest.warns(UserWarning, match="train_catalog and val_catalog share 3 galaxies"):
        prepare_catalogs(LABELS, train_catalog=catalog(10), val_catalog=catalog(3), check_valid_paths=False)


def test_resolve_device_count():
    assert resolve_device_count(2, 4, "pytorch") == 2
    assert resolve_device_count(0, 4, "pytorch") == 0
    assert resolve_device_count(-1, 3, "tensorflow") == 3
    with pytest.warns(UserWarning, match="gpus=2 requested but pytorch sees 0 GPU.*on the CPU"):
        assert resolve_device_count(2, 0, "pytorch") == 0
    with pytest.warns(UserWarning, match="tensorflow sees 1 GPU.*on 1 GPU"):
        assert resolve_device_count(4, 1, "tensorflow") == 1
    with pytest.raises(ValueError, match="gpus must be an integer >= 0"):
        resolve_device_count(-2, 1, "pytorch")


class FakeSchema:
    def to_dict(self):
        return {"question_answer_pairs": {"q": ["_a", "_b"]}, "dependencies": {"q": None}}


def test_write_run_config_records_versions_backend_and_json_values(tmp_path):
    config = {"batch_size": 8, "crop_scale_bounds": (0.7, 0.8), "schema": FakeSchema(), "lr": np.float32(0.5)}
    path = write_run_config(tmp_path / "run", config, backend="pytorch")
    record = json.loads(path.read_text())
    assert path == tmp_path / "run" / "config.json"
    assert record["zoobot_version"] == zoobot.__version__ and record["format_version"] == zoobot.FORMAT_VERSION
    assert record["backend"] == "pytorch"
    assert record["crop_scale_bounds"] == [0.7, 0.8] and record["lr"] == 0.5
    assert record["schema"]["dependencies"] == {"q": None}


def test_check_resume_config(tmp_path):
    check_resume_config(tmp_path, {"batch_size": 8})  # nothing recorded yet: fine
    config = {"batch_size": 8, "crop_scale_bounds": (0.7, 0.8), "schema": FakeSchema(), "epochs": 3}
    write_run_config(tmp_path, config, backend="tensorflow")
    check_resume_config(tmp_path, config)  # same arguments (tuples compare equal to saved lists)
    check_resume_config(tmp_path, {**config, "epochs": 10}, ignore=["epochs"])
    with pytest.raises(ValueError) as info:
        check_resume_config(tmp_path, {**config, "batch_size": 16, "color": True})
    message = str(info.value)
    assert "batch_size: 8 (saved) vs 16 (now)" in message
    assert "color: '<not set>' (saved) vs true (now)" in message
    assert "overwrite=True" in message and "new save_dir" in message and "epochs" not in message


def test_write_split_catalogs(tmp_path):
    train, val, test = catalog(7), catalog(2, "v"), catalog(3, "t")
    paths = write_split_catalogs(tmp_path, train, val, test)
    for split, frame in (("train", train), ("val", val), ("test", test)):
        assert paths[split] == tmp_path / f"{split}_catalog.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(paths[split]), frame, check_dtype=False)
    assert write_split_catalogs(tmp_path / "b", train, val, None)["test"] is None
    assert not (tmp_path / "b" / "test_catalog.parquet").exists()
