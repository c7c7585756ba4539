"""ZoobotTree, encoders and the Dirichlet head (api.md 2.2)."""
import json

import numpy as np
import pytest
import torch

from zoobot.pytorch.estimators import custom_layers, define_model
from zoobot.pytorch.estimators.tiny_cnn import TinyCNN
from zoobot.shared import schemas
from zoobot.shared.errors import ChannelMismatchError, CheckpointVersionError, PixelScaleError

SCHEMA = schemas.decals_dr5_ortho_schema


def tiny_tree(channels=1, **kwargs):
    return define_model.ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn",
                                   channels=channels, **kwargs)


# ------------------------------------------------------------------------------------ encoders and head

def test_tiny_cnn_parameter_count_is_the_hand_computed_number():
    # convs 3x3 without bias: 9 * (C*16 + 16*32 + 32*64 + 64*128); BatchNorm gamma + beta: 2 * (16+32+64+128)
    assert sum(p.numel() for p in TinyCNN(1).parameters() if p.requires_grad) == 97392
    assert sum(p.numel() for p in TinyCNN(3).parameters() if p.requires_grad) == 97680
    encoder = define_model.get_pytorch_encoder("tiny_cnn", channels=3)
    assert define_model.get_encoder_dim(encoder) == 128
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 128)


def test_timm_encoder_and_efficientnet_alias():
    encoder = define_model.get_pytorch_encoder("efficientnet", channels=1)
    assert type(encoder).__name__ == "EfficientNet" and encoder.conv_stem.in_channels == 1
    assert define_model.get_encoder_dim(encoder) == 1280
    assert define_model.get_encoder is define_model.get_pytorch_encoder


def test_unknown_architecture_is_e13_with_close_matches():
    with pytest.raises(ValueError, match=r"Unknown architecture_name 'efficentnet_b0'\. Did you mean .*efficientnet_b0"):
        define_model.get_pytorch_encoder("efficentnet_b0")


def test_encoder_dim_probe_for_modules_without_num_features():
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert define_model.get_encoder_dim(encoder, channels=3) == 5


def test_dirichlet_head_layers_and_range():
    head = define_model.get_pytorch_dirichlet_head(16, 7, test_time_dropout=True, dropout_rate=0.3)
    assert [type(m) for m in head] == [custom_layers.MCDropout, torch.nn.Linear, custom_layers.ScaledSigmoid]
    assert define_model.get_dirichlet_head is define_model.get_pytorch_dirichlet_head
    assert custom_layers.PermaDropout is custom_layers.MCDropout
    plain = define_model.get_pytorch_dirichlet_head(16, 7, test_time_dropout=False, dropout_rate=0.3)
    assert type(plain[0]) is torch.nn.Dropout
    alpha = head(torch.randn(10, 16) * 100)
    assert alpha.shape == (10, 7) and bool((alpha >= 1).all() and (alpha <= 101).all())
    assert custom_layers.ScaledSigmoid()(torch.tensor([0.0])).item() == 51.0


# ------------------------------------------------------------------------------------ ZoobotTree forward

@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shape_and_range(channels):
    model = tiny_tree(channels).eval()
    alpha = model(torch.rand(3, channels, 32, 32))
    assert alpha.shape == (3, 34) and alpha.dtype == torch.float32
    assert bool((alpha > 1).all() and (alpha < 101).all())


def test_channels_last_gives_the_same_numbers():
    model = tiny_tree().eval()
    assert model.channels_last
    x = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        fast = model.head[1:](model.encode(x))
        slow = model.head[1:](model.encoder(x.contiguous()))  # weights in channels_last, input NCHW
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_wrong_channels_is_e7():
    model = tiny_tree(channels=1)
    with pytest.raises(ChannelMismatchError, match=r"C=1.*got 3 channels.*greyscale=True"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ChannelMismatchError, match=r"looks NHWC.*permute\(0, 3, 1, 2\)"):
        model(torch.rand(2, 32, 32, 1))
    with pytest.raises(ChannelMismatchError, match="no batch axis"):
        model(torch.rand(1, 32, 32))


def test_pixels_outside_unit_interval_is_e8_on_first_batch():
    model = tiny_tree()
    with pytest.raises(PixelScaleError, match=r"values in \[255, 255\].*floats in \[0, 1\].*divide uint8 images by 255"):
        model(torch.full((1, 1, 32, 32), 255.0))
    model = tiny_tree()
    with pytest.warns(UserWarning, match="divided by 255 twice"):
        model(torch.full((1, 1, 32, 32), 0.5 / 255))
    model(torch.full((1, 1, 32, 32), 255.0))  # later batches are not checked (cheap)


def test_output_dim_mismatch_is_e10():
    with pytest.raises(ValueError, match=r"output_dim=33 but schema 'decals_dr5_ortho' has 34 answers"):
        define_model.ZoobotTree(output_dim=33, schema=SCHEMA, architecture_name="tiny_cnn")


def test_tree_descriptions_pairs_schema_and_upstream_groups():
    from_pairs = define_model.ZoobotTree(34, SCHEMA.question_answer_pairs, SCHEMA.dependencies,
                                         architecture_name="tiny_cnn")
    assert from_pairs.label_cols == SCHEMA.label_cols
    from_groups = define_model.ZoobotTree(34, architecture_name="tiny_cnn",
                                          question_index_groups=SCHEMA.question_index_groups)
    assert from_groups.schema is None and from_groups.question_names[0] == "question_0"
    assert from_pairs.campaigns == {"dr5": list(range(10))} and from_groups.campaigns == {}
    with pytest.raises(ValueError, match="exactly one description"):
        define_model.ZoobotTree(34, architecture_name="tiny_cnn", schema=SCHEMA,
                                question_index_groups=SCHEMA.question_index_groups)
    with pytest.raises(ValueError, match="exactly one description"):
        define_model.ZoobotTree(34, architecture_name="tiny_cnn")


def test_hyperparameters_are_json_primitives_and_rebuild_the_model():
    model = tiny_tree(scheduler_params={"cosine_schedule": True, "max_cosine_epochs": 5})
    hparams = json.loads(json.dumps(dict(model.hparams)))
    assert hparams["schema"] == SCHEMA.to_dict()
    assert hparams["scheduler_params"] == {"name": "cosine", "warmup_epochs": 0, "max_epochs": 5,
                                           "min_lr_factor": 0.01}
    rebuilt = define_model.ZoobotTree(**hparams)
    assert rebuilt.schema == SCHEMA and rebuilt.architecture_name == "tiny_cnn"


# ------------------------------------------------------------------------------------ MC dropout

def test_one_pass_mc_dropout_samples_differ_and_match_full_forward_passes():
    model = tiny_tree(dropout_rate=0.5).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(123)
        one_pass = model.mc_dropout_forward(x, n_samples=5)
        torch.manual_seed(123)
        full = torch.stack([model(x) for _ in range(5)], dim=-1)
    assert one_pass.shape == (4, 34, 5)
    assert not torch.equal(one_pass[..., 0], one_pass[..., 1])  # samples differ (dropout active at inference)
    assert torch.equal(one_pass, full)  # same masks in the same order: identical to 5 full passes


def test_mc_dropout_distribution_matches_over_many_samples():
    model = tiny_tree(dropout_rate=0.5).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)
        one_pass = model.mc_dropout_forward(x, n_samples=150)
        torch.manual_seed(1)  # different masks: compare distributions, not values
        full = torch.stack([model(x) for _ in range(150)], dim=-1)
    spread = one_pass.std(dim=-1)
    assert float(spread.mean()) > 0.05
    torch.testing.assert_close(one_pass.mean(-1), full.mean(-1), rtol=0, atol=float(5 * spread.max() / 150 ** 0.5))
    torch.testing.assert_close(spread, full.std(-1), rtol=0.35, atol=0.05)


def test_predict_without_test_time_dropout_is_deterministic():
    model = tiny_tree(test_time_dropout=False, dropout_rate=0.5)
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    samples = model.predict(x, n_samples=3)
    assert samples.shape == (5, 34, 3)
    assert np.array_equal(samples[..., 0], samples[..., 2])
    assert np.array_equal(model.predict(x), samples[..., 0])


def test_predict_accepts_arrays_tensors_and_loaders_in_order():
    model = tiny_tree(dropout_rate=0.0)
    x = torch.rand(7, 1, 32, 32)
    from_tensor = model.predict(x, batch_size=3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(7)), batch_size=2)
    assert from_tensor.shape == (7, 34)
    np.testing.assert_allclose(model.predict(loader), from_tensor, rtol=1e-5)
    np.testing.assert_allclose(model.predict(x.numpy()), from_tensor, rtol=1e-5)
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        model.predict(x, n_samples=0)


def test_predict_step_shapes_and_id_dicts():
    model = tiny_tree().eval()
    x = torch.rand(3, 1, 32, 32)
    assert model.predict_step(x, 0).shape == (3, 34)  # upstream-compatible
    model.predict_n_samples = 4
    out = model.predict_step({"image": x, "index": torch.arange(3), "failed": torch.zeros(3, dtype=torch.bool)}, 0)
    assert out["predictions"].shape == (3, 34, 4) and out["index"].tolist() == [0, 1, 2]


def test_dropout_is_off_in_validation():
    model = tiny_tree(dropout_rate=0.5).eval()
    batch = (torch.rand(4, 1, 32, 32), torch.randint(0, 5, (4, 34)).float())
    with model._mc_dropout(False):  # what validation_step and test_step do
        first, second = model(batch[0]), model(batch[0])
    assert torch.equal(first, second)
    assert model.head[0].mc_active  # restored afterwards


# ------------------------------------------------------------------------------------ optimisation

def test_cosine_schedule_lr_is_learning_rate_times_multiplier():
    from tests.shared.test_schedules import hand_multiplier

    model = tiny_tree(learning_rate=0.01, scheduler_params={"name": "cosine", "warmup_epochs": 2, "max_epochs": 6,
                                                              "min_lr_factor": 0.1})
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01
    for epoch in range(8):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * hand_multiplier(epoch, 2, 6, 0.1))
        optimizer.step()
        scheduler.step()


def test_plateau_and_constant_schedules_and_e13():
    config = tiny_tree(scheduler_params={"name": "plateau", "patience": 3}).configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.patience == 3 and scheduler.min_lrs == [1e-6]
    assert config["lr_scheduler"]["monitor"] == "validation/supervised_loss"
    assert isinstance(tiny_tree(scheduler_params={}).configure_optimizers(), torch.optim.AdamW)
    with pytest.raises(ValueError, match="Unknown scheduler name 'step'"):
        tiny_tree(scheduler_params={"name": "step"})


# ------------------------------------------------------------------------------------ training and checkpoints

def test_fit_on_synthetic_catalog_logs_and_checkpoints_load_weights_only(votes_catalog, tmp_path):
    import lightning as L

    from zoobot.pytorch.datasets import GalaxyDataModule

    catalog, label_cols = votes_catalog
    datamodule = GalaxyDataModule(label_cols, catalog=catalog, batch_size=8, num_workers=0, resize_after_crop=32,
                                  greyscale=True)
    model = tiny_tree(learning_rate=1e-3)
    model.input_size = 32  # what train() records; it must survive the checkpoint
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    trainer.fit(model, datamodule)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))  # it learned something
    metrics = trainer.callback_metrics
    for name in ("train/supervised_loss", "validation/supervised_loss",
                 "validation/question_loss/smooth-or-featured-dr5", "validation/campaign_loss/dr5"):
        assert name in metrics and torch.isfinite(metrics[name]), name

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 1 and raw["hyper_parameters"]["architecture_name"] == "tiny_cnn"
    loaded = define_model.ZoobotTree.load_from_checkpoint(path)
    assert loaded.input_size == 32
    x = torch.rand(2, 1, 32, 32)
    model.eval()
    loaded.eval()
    with model._mc_dropout(False), loaded._mc_dropout(False):
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

    # dict batches (galaxy-datasets >= 0.0.25 style) validate too
    datamodule.setup("validate")
    images, labels = next(iter(datamodule.val_dataloader()))
    dict_batch = {"image": images, **{col: labels[:, i] for i, col in enumerate(label_cols)}}
    dict_items = [{key: value[i] for key, value in dict_batch.items()} for i in range(len(images))]
    result = trainer.validate(loaded, dataloaders=torch.utils.data.DataLoader(dict_items, batch_size=4),
                              verbose=False)
    assert np.isfinite(result[0]["validation/supervised_loss"])

    # a checkpoint from a newer on-disk format is refused with E11 naming the file
    raw["format_version"] = 99
    newer = tmp_path / "newer.ckpt"
    torch.save(raw, newer)
    with pytest.raises(CheckpointVersionError, match=r"newer\.ckpt.*format_version 99"):
        define_model.ZoobotTree.load_from_checkpoint(newer)


def test_a_checkpoint_with_the_old_lambdalr_state_resumes_on_the_same_rates():
    """Runs checkpointed when the cosine schedule was a LambdaLR resume with SequentialLR at the same rate."""
    from tests.shared.test_schedules import hand_multiplier
    from zoobot.pytorch.estimators.define_model import cosine_lambda, cosine_scheduler, upgrade_cosine_scheduler_state

    params = {"name": "cosine", "warmup_epochs": 2, "max_epochs": 6, "min_lr_factor": 0.1}
    old_opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01)
    old = torch.optim.lr_scheduler.LambdaLR(old_opt, cosine_lambda(2, 6, 0.1))  # the old scheduler's state
    for _ in range(3):
        old_opt.step()
        old.step()
    checkpoint = {"lr_schedulers": [old.state_dict()]}
    upgrade_cosine_scheduler_state(checkpoint, params)
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01)
    scheduler = cosine_scheduler(optimizer, 2, 6, 0.1)
    with pytest.raises(KeyError):  # what resuming did without the upgrade
        scheduler.load_state_dict(old.state_dict())
    scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
    optimizer.param_groups[0]["lr"] = old_opt.param_groups[0]["lr"]  # Lightning restores the optimiser too
    for epoch in range(3, 8):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * hand_multiplier(epoch, 2, 6, 0.1))
        optimizer.step()
        scheduler.step()
