"""Training from scratch (api.md 2.4, 4.2): the seed signature end to end, what lands in save_dir,
resuming, non-finite losses, argument errors, and that a model actually learns.

Losses are checked against the float64 scipy oracle (``zoobot.shared.losses_reference``), not against
the implementation under test.
"""
import inspect
import json
import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

import zoobot
from zoobot.pytorch.estimators.define_model import ZoobotTree
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.shared import schemas
from zoobot.shared.catalogs import split_catalog
from zoobot.shared.errors import CatalogError
from zoobot.shared.losses_reference import dirichlet_multinomial_nll
from tests.shared.test_schedules import hand_multiplier

SCHEMA = schemas.decals_dr5_ortho_schema
SMALL = dict(model_architecture="tiny_cnn", batch_size=8, resize_size=32, num_workers=0)


def oracle_loss(catalog, concentrations, schema=SCHEMA) -> float:
    """Mean over galaxies of the summed per-question Dirichlet-multinomial NLL (float64 scipy)."""
    counts = catalog[schema.label_cols].to_numpy(dtype=np.float64)
    return float(dirichlet_multinomial_nll(counts, np.asarray(concentrations, np.float64),
                                           schema.question_index_groups).sum(axis=1).mean())


def deterministic_predictions(catalog, model, size=32, calibrate=False):
    """The model's own (raw, uncalibrated unless asked) concentrations, without dropout."""
    return predict(catalog, model, test_time_dropout=False, calibrate=calibrate,
                   datamodule_kwargs={"num_workers": 0, "resize_after_crop": size})[..., 0]


def epoch_metrics(save_dir, column):
    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv")
    rows = metrics.dropna(subset=[column])
    return rows["epoch"].astype(int).tolist(), rows[column].tolist()


# ---------------------------------------------------------------------------------------------- signatures

SEED_ARGS = [
    ("save_dir", inspect.Parameter.empty), ("schema", inspect.Parameter.empty), ("catalog", None),
    ("train_catalog", None), ("val_catalog", None), ("test_catalog", None), ("model_architecture", "efficientnet"),
    ("batch_size", 256), ("epochs", 1000), ("patience", 8), ("color", False), ("resize_size", 224),
    ("crop_scale_bounds", (0.7, 0.8)), ("crop_ratio_bounds", (0.9, 1.1)), ("nodes", 1), ("gpus", 2),
    ("num_workers", 4), ("prefetch_factor", 4), ("mixed_precision", False), ("random_state", 42),
    ("wandb_logger", None),
]
KEYWORD_EXTRAS = [
    ("dropout_rate", 0.2), ("learning_rate", 1e-3), ("betas", (0.9, 0.999)), ("weight_decay", 0.01),
    ("scheduler_params", None), ("timm_kwargs", None), ("sync_batchnorm", False), ("compile_encoder", False),
    ("save_top_k", 3), ("checkpoint_file_template", None), ("extra_callbacks", None), ("check_valid_paths", True),
    ("resume", True), ("overwrite", False),
]


def test_train_has_exactly_the_seed_signature_then_keyword_only_extras():
    params = list(inspect.signature(twpl.train).parameters.values())
    positional = [(p.name, p.default) for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == SEED_ARGS
    keyword_only = [(p.name, p.default) for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only[: len(KEYWORD_EXTRAS)] == KEYWORD_EXTRAS
    # the other spelling of the two aliased keywords, last
    assert [name for name, _ in keyword_only[len(KEYWORD_EXTRAS):]] == ["architecture_name", "resize_after_crop"]


def test_train_default_zoobot_from_scratch_keeps_the_upstream_defaults():
    params = inspect.signature(twpl.train_default_zoobot_from_scratch).parameters
    assert list(params)[:10] == ["save_dir", "schema", "catalog", "train_catalog", "val_catalog", "test_catalog",
                                 "train_urls", "val_urls", "test_urls", "cache_dir"]
    assert params["architecture_name"].default == "efficientnet_b0"
    assert params["resize_after_crop"].default == 224
    assert params["batch_size"].default == 128  # not the seed's 256
    assert params["random_state"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


# ---------------------------------------------------------------------------------------------- errors first

def test_bad_arguments_fail_before_any_work(tmp_path, votes_catalog):
    catalog, _ = votes_catalog
    run = tmp_path / "run"
    with pytest.raises(NotImplementedError, match=r"train_urls.*catalog="):
        twpl.train_default_zoobot_from_scratch(run, SCHEMA, train_urls=["shard-{000..009}.tar"])
    with pytest.raises(TypeError, match=r"model_architecture='resnet18'.*architecture_name='tiny_cnn'"):
        twpl.train(run, SCHEMA, catalog=catalog, model_architecture="resnet18", architecture_name="tiny_cnn")
    with pytest.raises(ValueError, match=r"either catalog .* or both train_catalog and val_catalog"):
        twpl.train(run, SCHEMA, train_catalog=catalog)
    with pytest.raises(ValueError, match=r"Unknown model_architecture \(architecture_name\) 'efficentnet_b0'"):
        twpl.train(run, SCHEMA, catalog=catalog, model_architecture="efficentnet_b0")
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number, got inf"):
        twpl.train(run, SCHEMA, catalog=catalog, learning_rate=math.inf, **{**SMALL, "model_architecture": "tiny_cnn"})
    missing = catalog.drop(columns=["bar-dr5_weak"])
    with pytest.raises(CatalogError, match=r"bar-dr5_weak"):
        twpl.train(run, SCHEMA, catalog=missing, **SMALL)
    assert not run.exists()  # nothing was written: every error came before the run started


# ---------------------------------------------------------------------------------------------- end to end

def test_seed_call_trains_on_cpu_with_a_warning_and_returns_the_best_checkpoint(tmp_path, votes_catalog):
    catalog, _ = votes_catalog
    save_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"gpus=2 requested but pytorch sees 0 GPU\(s\): training on the CPU"):
        model, trainer = twpl.train(
            save_dir, SCHEMA, catalog=catalog, model_architecture="tiny_cnn", batch_size=8, epochs=3, patience=8,
            color=False, resize_size=32, gpus=2, num_workers=0, random_state=1, learning_rate=3e-3,
        )
    assert isinstance(model, ZoobotTree) and not model.training and model.channels == 1

    # the returned weights are those of the best checkpoint, which is the epoch of lowest validation loss
    best_path = trainer.checkpoint_callback.best_model_path
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert best["state_dict"].keys() == state.keys()
    for key, value in best["state_dict"].items():
        assert torch.equal(value, state[key]), key
    epochs, val_losses = epoch_metrics(save_dir, "validation/supervised_loss")
    assert epochs == [0, 1, 2]
    assert best["epoch"] == epochs[int(np.argmin(val_losses))]
    assert (save_dir / "checkpoints" / "last.ckpt").is_file()

    # the split catalogs are the documented 70/10/20 hash split of the catalog
    expected = split_catalog(catalog, seed=1)
    for name, split in zip(("train", "val", "test"), expected):
        written = pd.read_parquet(save_dir / f"{name}_catalog.parquet")
        assert written["id_str"].tolist() == split["id_str"].tolist()

    # the logged test loss is the oracle loss of the returned (best) model on the test split
    test = expected[2]
    _, test_losses = epoch_metrics(save_dir, "test/supervised_loss")
    assert len(test_losses) == 1
    assert test_losses[0] == pytest.approx(oracle_loss(test, deterministic_predictions(test, model)), rel=1e-3)

    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv")
    for column in ("train/supervised_loss", "lr", "validation/question_loss/bar-dr5", "validation/campaign_loss/dr5"):
        assert column in metrics.columns, column
    # the default schedule (scheduler_params=None): cosine decay over the 3 epochs, no warm-up for so few
    assert metrics["lr"].dropna().tolist() == pytest.approx([3e-3 * hand_multiplier(e, 0, 3, 0.01) for e in range(3)])

    config = json.loads((save_dir / "config.json").read_text())
    assert config["zoobot_version"] == zoobot.__version__ and config["format_version"] == zoobot.FORMAT_VERSION
    assert config["backend"] == "pytorch" and config["entry_point"] == "train"
    assert config["architecture_name"] == "tiny_cnn" and config["batch_size"] == 8 and config["gpus"] == 2
    assert schemas.Schema.from_dict(config["schema"]) == SCHEMA
    assert config["train_catalog"]["rows"] == len(expected[0])

    # the checkpoint reloads safely on its own, and predicts like the returned model
    reloaded = ZoobotTree.load_from_checkpoint(best_path).eval()
    probe = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(0)  # same MC-dropout masks
        expected = model(probe)
        torch.manual_seed(0)
        torch.testing.assert_close(reloaded(probe), expected)


class _Interrupted(Exception):
    """Stands in for a crash or a killed job."""


class _CrashAtEpochStart(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Interrupted(f"crash at the start of epoch {self.epoch}")


class _RecordEpochs(L.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def test_resume_continues_from_last_checkpoint_to_the_requested_epochs(tmp_path, votes_catalog):
    catalog, _ = votes_catalog
    save_dir = tmp_path / "run"
    kwargs = dict(catalog=catalog, epochs=4, gpus=0, random_state=2, **SMALL)
    with pytest.raises(_Interrupted):
        twpl.train(save_dir, SCHEMA, extra_callbacks=[_CrashAtEpochStart(2)], **kwargs)
    assert torch.load(save_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert epoch_metrics(save_dir, "validation/supervised_loss")[0] == [0, 1]

    recorder = _RecordEpochs()
    model, trainer = twpl.train(save_dir, SCHEMA, extra_callbacks=[recorder], **kwargs)
    assert recorder.epochs == [2, 3]  # epochs 0 and 1 were not repeated
    n_train = len(pd.read_parquet(save_dir / "train_catalog.parquet"))
    assert trainer.global_step == 4 * (n_train // 8)
    # the metrics file holds every epoch exactly once, old rows kept
    assert epoch_metrics(save_dir, "validation/supervised_loss")[0] == [0, 1, 2, 3]

    # a different run in the same folder is refused, naming the argument and the fix
    with pytest.raises(ValueError, match=r"batch_size: 8 \(saved\) vs 4 \(now\).*overwrite=True"):
        twpl.train(save_dir, SCHEMA, **{**kwargs, "batch_size": 4})


class _PoisonWeights(L.Callback):
    """Simulates divergence: the head's weights become NaN before the second training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            with torch.no_grad():
                pl_module.head[1].weight.fill_(float("nan"))


def test_non_finite_loss_stops_training_naming_epoch_and_step(tmp_path, votes_catalog):
    catalog, _ = votes_catalog
    with pytest.raises(FloatingPointError, match=r"training loss became nan at epoch 0, step 1"):
        twpl.train(tmp_path / "run", SCHEMA, catalog=catalog, epochs=2, gpus=0,
                   extra_callbacks=[_PoisonWeights()], **SMALL)


def test_upstream_name_with_seed_spellings_and_a_cosine_schedule(tmp_path, votes_catalog):
    catalog, _ = votes_catalog
    train, val, _ = split_catalog(catalog, 0.8, 0.2, 0.0, seed=0)
    with pytest.warns(UserWarning, match=r"mixed_precision=True is ignored: training runs on the CPU"):
        model, trainer = twpl.train_default_zoobot_from_scratch(
            tmp_path / "run", SCHEMA, train_catalog=train, val_catalog=val, epochs=3, gpus=0, batch_size=8,
            num_workers=0, model_architecture="tiny_cnn", resize_size=32, color=True, learning_rate=1e-3,
            mixed_precision=True,
            scheduler_params={"cosine_schedule": True, "warmup_epochs": 1, "max_cosine_epochs": 2,
                              "max_learning_rate_reduction_factor": 0.1},
        )
    assert trainer.precision == "32-true"
    assert model.channels == 3 and model.architecture_name == "tiny_cnn" and model.input_size == 32
    # warm-up epoch 0: lr x (0+1)/1; epoch 1 starts the decay at lr x 1; from epoch 2 = max_epochs the floor
    # lr x 0.1 (never lr squared)
    _, lrs = epoch_metrics(tmp_path / "run", "lr")
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4])
    assert not (tmp_path / "run" / "test_catalog.parquet").exists()  # no test split given
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["entry_point"] == "train_default_zoobot_from_scratch"
    assert config["scheduler_params"] == {"name": "cosine", "warmup_epochs": 1, "max_epochs": 2, "min_lr_factor": 0.1}


# ---------------------------------------------------------------------------------------------- learning

def _best_constant_concentrations(train):
    """The 'training-set mean vote fractions' model: per question, the fractions times the total
    concentration that fits the training votes best, within the model's range [1, 101]."""
    counts = train[SCHEMA.label_cols].to_numpy(np.float64)
    groups = SCHEMA.question_index_groups
    alpha = np.ones(counts.shape[1])
    for q, (s, e) in enumerate(groups):
        fractions = counts[:, s:e + 1].sum(0) / counts[:, s:e + 1].sum()
        best = None
        for scale in np.logspace(0, 2.7, 50):
            candidate = alpha.copy()
            candidate[s:e + 1] = np.clip(fractions * scale, 1, 101)
            loss = dirichlet_multinomial_nll(counts, np.tile(candidate, (len(counts), 1)), groups)[:, q].mean()
            if best is None or loss < best[0]:
                best = (loss, candidate[s:e + 1])
        alpha[s:e + 1] = best[1]
    return alpha


def _learning_run(tmp_path, n_galaxies, image_size, epochs, batch_size, learning_rate):
    from zoobot.shared.synthetic import make_synthetic_catalog

    catalog, _ = make_synthetic_catalog(tmp_path / "data", n_galaxies=n_galaxies, image_size=image_size,
                                        seed=3, progress=False)
    n_val = n_galaxies // 4
    train, val = catalog.iloc[n_val:], catalog.iloc[:n_val]
    save_dir = tmp_path / "run"
    model, _ = twpl.train(save_dir, SCHEMA, train_catalog=train, val_catalog=val, model_architecture="tiny_cnn",
                          batch_size=batch_size, epochs=epochs, patience=5, color=True, resize_size=image_size,
                          gpus=0, num_workers=0, learning_rate=learning_rate, random_state=0)
    _, val_losses = epoch_metrics(save_dir, "validation/supervised_loss")
    model_loss = oracle_loss(val, deterministic_predictions(val, model, image_size))
    baseline = oracle_loss(val, np.tile(_best_constant_concentrations(train), (len(val), 1)))
    return val_losses, model_loss, baseline


def test_tiny_model_learns_quickly(tmp_path):
    val_losses, model_loss, _ = _learning_run(tmp_path, n_galaxies=64, image_size=32, epochs=4, batch_size=8,
                                              learning_rate=2e-3)
    # the returned model is the best epoch, and the logged validation loss is the oracle loss
    assert model_loss == pytest.approx(min(val_losses), rel=1e-3)
    assert min(val_losses) < 0.85 * val_losses[0]


@pytest.mark.slow
def test_model_learns_more_than_the_mean_vote_fractions(tmp_path):
    val_losses, model_loss, baseline = _learning_run(tmp_path, n_galaxies=240, image_size=40, epochs=30,
                                                     batch_size=16, learning_rate=3e-3)
    assert model_loss == pytest.approx(min(val_losses), rel=1e-3)
    assert model_loss < 0.65 * val_losses[0]
    assert model_loss < 0.97 * baseline, (model_loss, baseline)


# ---------------------------------------------------------------------------------------------- CPU warning

def test_encoder_probe_changes_nothing_and_gpu_sized_settings_warn(monkeypatch, tmp_path, votes_catalog):
    """The timed pass leaves weights, BatchNorm statistics, .grad and the RNG as they were; tiny_cnn at 224 px
    in batches of 256 for 10000 epochs is far too slow for a CPU (a real timing); and train() warns, once, with
    the estimate (thresholds lowered so that the tests' tiny run counts as slow)."""
    from zoobot.pytorch.estimators.define_model import time_encoder_pass
    from zoobot.pytorch.estimators.tiny_cnn import TinyCNN
    from zoobot.shared import cpu_speed

    encoder = TinyCNN(1).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = torch.get_rng_state()
    assert time_encoder_pass(encoder, 2, 1, 64) > 0
    assert encoder.training and all(p.grad is None for p in encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    with pytest.warns(UserWarning, match=r"tiny_cnn at 224 px and batch_size=256: about .* per batch"):
        cpu_speed.warn_if_gpu_sized(lambda n: time_encoder_pass(encoder, n, 1, 224), architecture_name="tiny_cnn",
                                    image_size=224, batch_size=256, n_train=10_000, epochs=10_000)

    monkeypatch.setattr(cpu_speed, "PROBE_PIXELS", 0)
    monkeypatch.setattr(cpu_speed, "SLOW_RUN_SECONDS", 0.0)
    catalog, _ = votes_catalog
    with pytest.warns(UserWarning, match=r"Training on the CPU with tiny_cnn at 32 px and batch_size=8: about") as rec:
        twpl.train(tmp_path / "run", SCHEMA, catalog=catalog.iloc[:24], epochs=1, gpus=0, **SMALL)
    assert sum("Training on the CPU" in str(w.message) for w in rec) == 1
