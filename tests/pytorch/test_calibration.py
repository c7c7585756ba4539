"""Post-hoc calibration in the PyTorch backend: train() fits a per-question concentration scale on the
validation votes, stores it in the checkpoints (key ``zoobot_calibration``), reports it in
``save_dir/calibration.json``; a loaded checkpoint keeps it; predict applies it unless ``calibrate=False``."""
import json

import numpy as np
import pytest
import torch

from tests.calibration_checks import check_predict_switch, check_scale_maximises_the_likelihood
from zoobot.pytorch.estimators.define_model import ZoobotTree
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.shared import calibration, schemas

pytestmark = pytest.mark.torch
SCHEMA = schemas.decals_dr5_ortho_schema


@pytest.fixture(scope="module")
def trained(tmp_path_factory, votes_catalog):
    catalog, _ = votes_catalog
    save_dir = tmp_path_factory.mktemp("calibrated") / "run"
    model, trainer = twpl.train(save_dir, SCHEMA, train_catalog=catalog.iloc[:24], val_catalog=catalog.iloc[24:],
                                model_architecture="tiny_cnn", batch_size=8, resize_size=32, num_workers=0, epochs=1,
                                gpus=0, color=True)
    return model, trainer, save_dir, catalog.iloc[24:].reset_index(drop=True)


def raw(catalog, model, **kwargs):
    return predict(catalog, model, test_time_dropout=False, datamodule_kwargs={"num_workers": 0}, **kwargs)[..., 0]


def test_train_stores_and_reports_the_scale_and_it_round_trips(trained):
    model, trainer, save_dir, _ = trained
    report = json.loads((save_dir / "calibration.json").read_text())
    assert sorted(report["concentration_scale"]) == sorted(q.text for q in SCHEMA.questions)
    assert report["n_galaxies"] == 16
    np.testing.assert_allclose(model.concentration_scale,
                               [report["concentration_scale"][q.text] for q in SCHEMA.questions])
    for path in (trainer.checkpoint_callback.best_model_path, save_dir / "checkpoints" / "last.ckpt"):
        stored = torch.load(path, map_location="cpu", weights_only=True)[calibration.CHECKPOINT_KEY]
        assert stored == report
        loaded = ZoobotTree.load_from_checkpoint(path)
        np.testing.assert_allclose(loaded.concentration_scale, model.concentration_scale)
        assert loaded.concentration_floor == model.concentration_floor == 0.1  # train()'s head floor
    assert ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn").concentration_floor == 1.0


def test_scale_maximises_the_validation_likelihood(trained):
    model, _, _, val = trained
    check_scale_maximises_the_likelihood(raw, model, val, SCHEMA)


def test_predict_applies_the_scale_unless_switched_off(trained, tmp_path):
    model, _, _, val = trained
    check_predict_switch(raw, model, val, SCHEMA, tmp_path / "p.parquet")


def test_finetuned_tree_is_calibrated_per_checkpoint(tmp_path):
    """A finetuned tree fits the scale on each validation epoch; the checkpoint stores that of its own weights,
    load_from_checkpoint restores it, and it equals an independent fit to model.predict on the validation set."""
    from torch.utils.data import DataLoader, TensorDataset

    from zoobot.pytorch.training import finetune

    schema = schemas.gz_rings_schema
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 32, 32, generator=g)
    votes = torch.stack([torch.randint(0, 9, (24,), generator=g), torch.randint(0, 9, (24,), generator=g)], 1).float()
    train = DataLoader(TensorDataset(images[:16], votes[:16]), batch_size=8)
    val = DataLoader(TensorDataset(images[16:], votes[16:]), batch_size=8)
    model = finetune.FinetuneableZoobotTree(schema=schema, name="tiny_cnn", learning_rate=0.01)
    trainer = finetune.get_trainer(tmp_path, max_epochs=1, accelerator="cpu", enable_progress_bar=False,
                                   enable_model_summary=False, logger=False)
    trainer.fit(model, train, val)
    expected = calibration.fit_concentration_scale(votes[16:].numpy(), model.eval().predict(images[16:]), schema)
    np.testing.assert_allclose(model.concentration_scale, expected, rtol=1e-4)
    path = trainer.checkpoint_callback.best_model_path
    assert torch.load(path, weights_only=True)[calibration.CHECKPOINT_KEY] == model.calibration
    loaded = finetune.FinetuneableZoobotTree.load_from_checkpoint(path)
    np.testing.assert_allclose(loaded.concentration_scale, expected, rtol=1e-4)


def test_train_optimises_the_vote_fraction_term_and_logs_it(trained):
    """train()'s recipe (docs/guides/training_recipe.md): the vote-fraction term's weight, and its epoch mean in
    the metrics next to the validation loss, which stays the Dirichlet-multinomial NLL alone."""
    import pandas as pd

    from zoobot.shared.schedules import DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT

    model, _, save_dir, _ = trained
    assert model.fraction_loss_weight == DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT == 3.0
    assert ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn").fraction_loss_weight == 0.0
    metrics = pd.read_csv(next(save_dir.rglob("metrics.csv")))
    logged = metrics["train/fraction_loss"].dropna()
    assert len(logged) == 1 and logged.iloc[0] > 0


def test_train_builds_efficientnets_with_the_keras_batchnorm_epsilon(tmp_path):
    """train()'s recipe gives timm EfficientNets the BatchNorm epsilon of the TensorFlow backend's (Keras's), the
    user's timm_kwargs win, other architectures are untouched, and a saved checkpoint rebuilds the same layers."""
    from zoobot.pytorch.training.train_with_pytorch_lightning import _model
    from zoobot.shared.training_config import TrainConfig

    def built(architecture, timm_kwargs=None):
        config = TrainConfig.from_arguments("train", "pytorch", save_dir=str(tmp_path), schema=schemas.gz_rings_schema,
                                            model_architecture=architecture, timm_kwargs=timm_kwargs)
        return _model(config)

    def batchnorms(model):
        return [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    model = built("efficientnet_b0")
    assert batchnorms(model) and {(m.momentum, m.eps) for m in batchnorms(model)} == {(0.1, 1e-3)}
    overridden = built("efficientnet_b0", {"bn_eps": 1e-5, "bn_momentum": 0.01})
    assert {(m.momentum, m.eps) for m in batchnorms(overridden)} == {(0.01, 1e-5)}
    assert {(m.momentum, m.eps) for m in batchnorms(built("resnet18"))} == {(0.1, 1e-5)}
    assert {(m.momentum, m.eps) for m in batchnorms(built("tiny_cnn"))} == {(0.1, 1e-5)}

    # a checkpoint stores them with the other hyperparameters, from which loading rebuilds the model
    assert model.hparams["timm_kwargs"] == {"bn_eps": 1e-3}
    rebuilt = ZoobotTree(**dict(model.hparams))
    assert {(m.momentum, m.eps) for m in batchnorms(rebuilt)} == {(0.1, 1e-3)}
