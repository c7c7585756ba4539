"""Post-hoc calibration in the TensorFlow backend: train() fits a per-question concentration scale on the
validation votes, stores it in the best and last ``.keras`` files (config key ``zoobot_calibration``),
reports it in ``save_dir/calibration.json``; a loaded model keeps it; predict applies it unless
``calibrate=False``."""
import json

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from tests.calibration_checks import check_predict_switch, check_scale_maximises_the_likelihood  # noqa: E402
from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.synthetic import make_synthetic_catalog  # noqa: E402
from zoobot.tensorflow.estimators.define_model import ZoobotTree  # noqa: E402
from zoobot.tensorflow.predictions.predict_on_catalog import predict  # noqa: E402
from zoobot.tensorflow.training import train_with_keras  # noqa: E402

pytestmark = pytest.mark.tf
SCHEMA = schemas.decals_dr5_ortho_schema


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    catalog, _ = make_synthetic_catalog(tmp_path_factory.mktemp("dr5_cal"), n_galaxies=40, image_size=48,
                                        progress=False)
    save_dir = tmp_path_factory.mktemp("calibrated") / "run"
    model, run = train_with_keras.train(save_dir, SCHEMA, train_catalog=catalog.iloc[:24],
                                        val_catalog=catalog.iloc[24:], model_architecture="tiny_cnn", batch_size=8,
                                        resize_size=32, gpus=0, num_workers=1, prefetch_factor=1, epochs=1,
                                        color=True)
    return model, run, save_dir, catalog.iloc[24:].reset_index(drop=True)


def raw(catalog, model, **kwargs):
    return predict(catalog, model, test_time_dropout=False, **kwargs)[..., 0]


def test_train_stores_and_reports_the_scale_and_it_round_trips(trained):
    model, run, save_dir, _ = trained
    report = json.loads((save_dir / "calibration.json").read_text())
    assert sorted(report["concentration_scale"]) == sorted(q.text for q in SCHEMA.questions)
    assert report["n_galaxies"] == 16
    np.testing.assert_allclose(model.concentration_scale,
                               [report["concentration_scale"][q.text] for q in SCHEMA.questions])
    for path in {run.checkpoint_callback.best_model_path, save_dir / "checkpoints" / "last.keras"}:
        loaded = ZoobotTree.load_from_checkpoint(path)
        assert loaded.calibration == report
        assert loaded.concentration_floor == model.concentration_floor == 0.1  # train()'s head floor
        np.testing.assert_allclose(loaded.concentration_scale, model.concentration_scale)
        overridden = ZoobotTree.load_from_checkpoint(path, test_time_dropout=False)  # rebuilt from the config
        assert overridden.calibration == report and overridden.concentration_floor == 0.1
    assert ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn").concentration_floor == 1.0


def test_scale_maximises_the_validation_likelihood(trained):
    model, _, _, val = trained
    check_scale_maximises_the_likelihood(raw, model, val, SCHEMA)


def test_predict_applies_the_scale_unless_switched_off(trained, tmp_path):
    model, _, _, val = trained
    check_predict_switch(raw, model, val, SCHEMA, tmp_path / "p.hdf5")

def test_train_optimises_the_vote_fraction_term(trained):
    """train()'s recipe (docs/guides/training_recipe.md): the vote-fraction term's weight; models built directly
    and loaded checkpoints train on the Dirichlet-multinomial loss alone (the weight is a setting of train())."""
    from zoobot.shared.schedules import DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT

    model, run, _, _ = trained
    assert model.fraction_loss_weight == DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT == 3.0
    assert ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name="tiny_cnn").fraction_loss_weight == 0.0
    assert ZoobotTree.load_from_checkpoint(run.checkpoint_callback.best_model_path).fraction_loss_weight == 0.0
