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
    with pytest.raises(ValueError, match="^gpus must be >= -1, got -2$"):
        resolve_device_count(-2, 1, "pytorch")
    with pytest.raises(TypeError, match="^gpus must be an integer, got bool: True$"):
        resolve_device_count(True, 1, "pytorch")


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


# ---------------------------------------------------------------------------------------------- TrainConfig
import dataclasses  # noqa: E402
import hashlib  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.training_config import (  # noqa: E402
    FinetuneConfig,
    TrainConfig,
    read_run_config,
)

SCHEMA = schemas.Schema({"q": ["_a", "_b"]}, {"q": None})
#: What resuming has always allowed to change (the backends' old _RESUMABLE_CHANGES lists).
OLD_RESUMABLE = {"epochs", "patience", "gpus", "nodes", "num_workers", "prefetch_factor", "mixed_precision",
                 "check_valid_paths", "resume", "overwrite", "save_top_k", "extra_callbacks", "wandb_logger",
                 "sync_batchnorm", "compile_encoder", "entry_point", "eager"}


def train_config(**overrides):
    return TrainConfig(**{"save_dir": "run", "schema": SCHEMA, **overrides})


@pytest.mark.parametrize("overrides, error, match", [
    ({"batch_size": 0}, ValueError, r"^batch_size must be >= 1, got 0$"),
    ({"batch_size": True}, TypeError, r"^batch_size must be an integer, got bool: True$"),
    ({"epochs": 2.0}, TypeError, r"^epochs must be an integer, got float: 2.0$"),
    ({"gpus": -2}, ValueError, r"^gpus must be >= -1, got -2$"),
    ({"resize_after_crop": 4}, ValueError, r"^resize_after_crop \(resize_size\) must be >= 8, got 4$"),
    ({"learning_rate": float("inf")}, ValueError, r"^learning_rate must be a finite number, got inf$"),
    ({"learning_rate": 0}, ValueError, r"^learning_rate must be > 0, got 0.0$"),
    ({"weight_decay": -0.1}, ValueError, r"^weight_decay must be >= 0, got -0.1$"),
    ({"dropout_rate": 1.0}, ValueError, r"^dropout_rate must be < 1.0, got 1.0$"),
    ({"crop_scale_bounds": (0.8, 0.7)}, ValueError, r"crop_scale_bounds must satisfy 0 < low <= high"),
    ({"crop_ratio_bounds": "wide"}, ValueError, r"crop_ratio_bounds must be a pair \(low, high\) of numbers"),
    ({"schema": "gz2"}, TypeError, r"schema must be a zoobot.shared.schemas.Schema, got str"),
    ({"save_dir": ""}, ValueError, r"save_dir is required"),
    ({"extra_callbacks": object()}, TypeError, r"extra_callbacks must be a list of Lightning callbacks"),
    ({"backend": "jax"}, ValueError, r"Unknown backend 'jax'"),
    ({"scheduler_params": {"name": "cosnie"}}, ValueError, r"cosnie"),
    ({"requested_img_size": 0, "backend": "tensorflow"}, ValueError, r"^requested_img_size must be >= 8, got 0$"),
])
def test_train_config_refuses_bad_values(overrides, error, match):
    with pytest.raises(error, match=match):
        train_config(**overrides)


def test_train_config_normalises_values_and_is_frozen():
    config = train_config(batch_size=np.int64(8), crop_scale_bounds=[0.5, 1], betas=[0.8, 0.9], learning_rate=1,
                          scheduler_params={}, extra_callbacks=())
    assert type(config.batch_size) is int and config.batch_size == 8
    assert config.crop_scale_bounds == (0.5, 1.0) and config.betas == (0.8, 0.9)
    assert config.learning_rate == 1.0 and config.scheduler_params == {"name": "constant"}
    assert config.architecture_name == "efficientnet_b0"  # the seed's 'efficientnet'
    assert config.extra_callbacks == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 16
    with pytest.warns(DeprecationWarning, match="'resnet_detectron' is deprecated"):
        assert train_config(architecture_name="resnet_detectron").architecture_name == "resnet50"


@pytest.mark.torch
def test_train_config_defaults_are_those_of_train():
    import inspect

    pytest.importorskip("torch")
    from zoobot.pytorch.training import train_with_pytorch_lightning as twpl

    params = inspect.signature(twpl.train).parameters
    config = train_config()
    for name in ("batch_size", "epochs", "patience", "color", "crop_scale_bounds", "crop_ratio_bounds", "nodes",
                 "gpus", "num_workers", "prefetch_factor", "mixed_precision", "random_state", "dropout_rate",
                 "learning_rate", "betas", "weight_decay", "save_top_k", "check_valid_paths", "resume", "overwrite"):
        assert getattr(config, name) == params[name].default, name
    assert config.resize_after_crop == params["resize_size"].default


def test_from_arguments_resolves_each_entry_points_spellings():
    seed = TrainConfig.from_arguments("train", "pytorch", save_dir="run", schema=SCHEMA, model_architecture="efficientnet",
                                      architecture_name="tiny_cnn", resize_size=224, resize_after_crop=None)
    assert (seed.architecture_name, seed.resize_after_crop, seed.entry_point) == ("tiny_cnn", 224, "train")
    upstream = TrainConfig.from_arguments("train_default_zoobot_from_scratch", "tensorflow", save_dir="run",
                                          schema=SCHEMA, resize_after_crop=224, resize_size=64)
    assert (upstream.architecture_name, upstream.resize_after_crop) == ("efficientnet_b0", 64)
    with pytest.raises(TypeError, match=r"both model_architecture='resnet18' and its other spelling "
                                        r"architecture_name='tiny_cnn'"):
        TrainConfig.from_arguments("train", "pytorch", save_dir="run", schema=SCHEMA, model_architecture="resnet18",
                                   architecture_name="tiny_cnn")
    with pytest.raises(TypeError, match=r"both architecture_name='resnet18' and its other spelling "
                                        r"model_architecture='tiny_cnn'"):
        TrainConfig.from_arguments("train_default_zoobot_from_scratch", "pytorch", save_dir="run", schema=SCHEMA,
                                   architecture_name="resnet18", model_architecture="tiny_cnn")


def test_resumable_fields_come_from_field_metadata():
    assert TrainConfig.resumable_fields() == OLD_RESUMABLE | {"save_dir"}
    by_name = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert by_name["epochs"].metadata["resumable"] and not by_name["batch_size"].metadata["resumable"]
    assert by_name["eager"].metadata["backend"] == "tensorflow"


def test_with_split_catalogs_splits_and_validates():
    full = catalog(1000).rename(columns={"q_a": "q_a", "q_b": "q_b"})
    schema = schemas.Schema({"q": ["_a", "_b"]}, {"q": None})
    config = TrainConfig(save_dir="run", schema=schema, catalog=full, check_valid_paths=False, random_state=1)
    split = config.with_split_catalogs()
    assert split.catalog is None and len(split.train_catalog) + len(split.val_catalog) + len(split.test_catalog) == 1000
    expected = prepare_catalogs(schema.label_cols, catalog=full, random_state=1, check_valid_paths=False)
    pd.testing.assert_frame_equal(split.train_catalog, expected[0])
    with pytest.raises(CatalogError, match="q_b"):
        TrainConfig(save_dir="run", schema=schema, catalog=full.drop(columns=["q_b"]),
                    check_valid_paths=False).with_split_catalogs()


def test_to_record_round_trips_through_config_json(tmp_path):
    train = catalog(7)
    config = train_config(train_catalog=train, val_catalog=catalog(3, "v"), architecture_name="tiny_cnn",
                          extra_callbacks=[FakeSchema()], crop_scale_bounds=(0.6, 0.9))
    record = config.to_record()
    assert json.loads(json.dumps(record)) == record  # JSON types only
    ids = hashlib.sha1(b"".join(f"g{i}".encode() + b"\0" for i in range(7))).hexdigest()
    assert record["train_catalog"] == {"rows": 7, "id_sha1": ids} and record["test_catalog"] is None
    assert record["extra_callbacks"] == ["FakeSchema"] and record["crop_scale_bounds"] == [0.6, 0.9]
    assert record["schema"] == json.loads(json.dumps(SCHEMA.to_dict()))
    assert "catalog" not in record and "backend" not in record and "eager" not in record  # pytorch record
    assert {"eager", "train_records", "requested_img_size"} <= set(dataclasses.replace(
        config, backend="tensorflow").to_record())

    write_run_config(tmp_path, config, backend="pytorch")
    saved = read_run_config(tmp_path)
    assert {k: v for k, v in saved.items() if k in record} == record and saved["backend"] == "pytorch"
    check_resume_config(tmp_path, config)  # the same run: fine
    check_resume_config(tmp_path, dataclasses.replace(config, epochs=5, save_dir="moved", gpus=0))  # resumable
    with pytest.raises(ValueError, match=r"batch_size: 256 \(saved\) vs 16 \(now\)"):
        check_resume_config(tmp_path, dataclasses.replace(config, batch_size=16))
    with pytest.raises(ValueError, match=r"train_catalog: .*\"rows\": 7.* \(saved\) vs .*\"rows\": 6"):
        check_resume_config(tmp_path, dataclasses.replace(config, train_catalog=train.iloc[:6]))


# ---------------------------------------------------------------------------------------------- FinetuneConfig

def test_finetune_config_resolves_upstream_spellings():
    config = FinetuneConfig.from_arguments(name="tiny_cnn", training_mode="full", layer_decay=0.5,
                                           checkpoint_loc=None)
    assert (config.n_blocks, config.lr_decay) == (-1, 0.5)
    assert FinetuneConfig.from_arguments(zoobot_checkpoint_loc=None, checkpoint_loc="a.ckpt").zoobot_checkpoint_loc \
        == "a.ckpt"
    with pytest.warns(DeprecationWarning, match="n_layers is deprecated: use n_blocks"):
        assert FinetuneConfig.from_arguments(n_layers=2).n_blocks == 2
    with pytest.raises(TypeError, match=r"Got both lr_decay=0.5 and its other spelling layer_decay=0.9"):
        FinetuneConfig.from_arguments(lr_decay=0.5, layer_decay=0.9)
    with pytest.raises(TypeError, match=r"Got n_blocks=2 and training_mode='head_only'; pass only one"):
        FinetuneConfig.from_arguments(n_blocks=2, training_mode="head_only")
    with pytest.raises(TypeError, match="both zoobot_checkpoint_loc and its other spelling checkpoint_loc"):
        FinetuneConfig.from_arguments(zoobot_checkpoint_loc="a.ckpt", checkpoint_loc="b.ckpt")
    with pytest.raises(ValueError, match=r"Unknown training_mode 'ful'. Did you mean 'full'\?"):
        FinetuneConfig.from_arguments(training_mode="ful")


@pytest.mark.parametrize("overrides, error, match", [
    ({"n_blocks": -2}, ValueError, r"^n_blocks must be >= -1, got -2$"),
    ({"n_blocks": 1.0}, TypeError, r"^n_blocks must be an integer, got float: 1.0$"),
    ({"learning_rate": -1}, ValueError, r"^learning_rate must be >= 0, got -1.0$"),
    ({"weight_decay": float("nan")}, ValueError, r"^weight_decay must be a finite number, got nan$"),
    ({"lr_decay": 0}, ValueError, r"^lr_decay must be > 0, got 0.0$"),
    ({"lr_decay": 1.5}, ValueError, r"^lr_decay must be <= 1, got 1.5$"),
    ({"dropout_prob": 1}, ValueError, r"^dropout_prob must be < 1.0, got 1.0$"),
    ({"cache_features": "yes"}, TypeError, r"^cache_features must be True or False, got str: 'yes'$"),
    ({"seed": "42"}, TypeError, r"^seed must be an integer, got str: '42'$"),
    ({"encoder_dim": 0}, ValueError, r"^encoder_dim must be >= 1, got 0$"),
    ({"cosine_schedule": True, "warmup_epochs": 200}, ValueError, r"warmup_epochs"),
])
def test_finetune_config_refuses_bad_values(overrides, error, match):
    with pytest.raises(error, match=match):
        FinetuneConfig(**overrides)


def test_finetune_config_source_checks_and_hparams():
    config = FinetuneConfig(name="tiny_cnn", cosine_schedule=True, max_cosine_epochs=10, cache_features=True,
                            encoder_dim=16)
    assert config.encoder_source() == "name"
    assert config.cosine_params == {"name": "cosine", "warmup_epochs": 0, "max_epochs": 10, "min_lr_factor": 0.01}
    with pytest.raises(ValueError, match=r"exactly one encoder source.*got name, zoobot_checkpoint_loc"):
        dataclasses.replace(config, zoobot_checkpoint_loc="a.ckpt").encoder_source()
    with pytest.raises(ValueError, match=r"exactly one encoder source.*got none"):
        FinetuneConfig().encoder_source()
    assert config.check_encoder_dim(None) == 16 and config.check_encoder_dim(16) == 16
    with pytest.raises(ValueError, match="encoder_dim=16 but the encoder reports 32 features"):
        config.check_encoder_dim(32)
    config.check_cache_features(encoder_is_frozen=True)
    with pytest.raises(ValueError, match="cache_features=True needs a frozen encoder"):
        config.check_cache_features(encoder_is_frozen=False)
    hparams = config.hparams(source="name", architecture="tiny_cnn", channels=3, input_size=64, encoder_dim=16,
                             encoder_kwargs={})
    assert list(hparams)[:9] == ["name", "zoobot_checkpoint_loc", "encoder_source", "architecture", "channels",
                                 "input_size", "encoder_dim", "encoder_kwargs", "n_blocks"]
    assert hparams["learning_rate"] == 1e-4 and hparams["cache_features"] is True and "encoder" not in hparams
    assert json.loads(json.dumps(hparams)) == hparams

    class Model:
        pass

    model = Model()
    config.apply_to(model)
    assert model.lr_decay == 0.75 and model.seed == 42 and model.cosine_params == config.cosine_params
